// Ringlog's web console. Polls the admin JSON API (/api/v1/) once a second and draws it: no
// framework, no third-party code, nothing loaded from elsewhere. Rates and latency quantiles are
// the differences between two polls' counters and histogram buckets. Every name a client chose
// (topics, groups, members) enters the page as text (textContent), never as markup.
'use strict';

/** How often the API is read; each chart point is one poll. */
const POLL_INTERVAL_MS = 1000;
/** A poll whose requests take longer than this counts as failed. */
const REQUEST_TIMEOUT_MS = 5000;
/** Points per chart: two minutes at one poll a second. */
const CHART_POINTS_MAX = 120;
/** Partition rows drawn at most; the rest are counted in a note below the table. */
const PARTITION_ROWS_MAX = 500;

const SVG_NAMESPACE = 'http://www.w3.org/2000/svg';
/** A chart's drawing is as wide as it shows on screen (so its labels keep their size) and this
 * many pixels high, as the stylesheet sets; lines stay this far from its top and bottom. */
const CHART_HEIGHT = 150;
const CHART_MARGIN = 6;
const CHART_WIDTH_MIN = 200;

/** The charts: which series each draws, and how its values read. */
const CHARTS = [
  {
    id: 'chart-messages',
    format: (value) => `${formatCount(value)}/s`,
    floor: 1,
    series: [
      { key: 'messagesIn', label: 'in' },
      { key: 'messagesOut', label: 'out' },
    ],
  },
  {
    id: 'chart-bytes',
    format: (value) => `${formatBytes(value)}/s`,
    floor: 1024,
    series: [
      { key: 'bytesIn', label: 'in' },
      { key: 'bytesOut', label: 'out' },
    ],
  },
  {
    id: 'chart-latency',
    format: formatMicros,
    floor: 1000,
    series: [
      { key: 'produceP50', label: 'produce p50' },
      { key: 'produceP99', label: 'produce p99' },
      { key: 'fsyncP99', label: 'fsync p99' },
    ],
  },
];

const state = {
  /** The previous poll: its time and the shards' counters, to take differences from. */
  previous: null,
  /** Per chart series, the last CHART_POINTS_MAX values (null where unknown). */
  series: {},
  /** The topic names last put in the partition filter. */
  filterTopics: '',
};
for (const chart of CHARTS) {
  for (const series of chart.series) {
    state.series[series.key] = [];
  }
}

// --- Formatting --------------------------------------------------------------------------------

const NUMBER = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const DECIMAL = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

function formatCount(value) {
  if (value === null || value === undefined) return '–';
  return value < 10 && value % 1 !== 0 ? DECIMAL.format(value) : NUMBER.format(value);
}

function formatBytes(value) {
  if (value === null || value === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? NUMBER.format(scaled) : DECIMAL.format(scaled)} ${units[unit]}`;
}

function formatMicros(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1000) return `${NUMBER.format(value)} µs`;
  if (value < 1000000) return `${DECIMAL.format(value / 1000)} ms`;
  return `${DECIMAL.format(value / 1000000)} s`;
}

// --- Reading the API ---------------------------------------------------------------------------

async function getJson(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, { signal: controller.signal, cache: 'no-store' });
    if (!response.ok) {
      const detail = (await response.text()).trim();
      throw new Error(`${path}: ${detail || `HTTP ${response.status}`}`);
    }
    return await response.json();
  } catch (error) {
    if (error.name === 'AbortError') throw new Error(`${path}: no answer in ${REQUEST_TIMEOUT_MS} ms`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function poll() {
  const started = performance.now();
  try {
    const [brokers, shards, topics, partitions, groups] = await Promise.all([
      getJson('/api/v1/brokers'),
      getJson('/api/v1/shards'),
      getJson('/api/v1/topics'),
      getJson('/api/v1/partitions'),
      getJson('/api/v1/groups'),
    ]);
    const rates = takeRates(shards, Date.now());
    renderHeader(brokers);
    renderOverview(shards, topics, partitions, groups);
    renderCharts();
    renderShards(shards, rates);
    renderTopics(topics, partitions);
    renderPartitions(partitions);
    renderGroups(groups);
    setStatus(`live · updated ${new Date().toLocaleTimeString('en-GB')}`, 'ok');
  } catch (error) {
    // A gap in the charts where the broker did not answer; the tables keep their last values.
    state.previous = null;
    pushPoint({});
    renderCharts();
    setStatus(`broker not answering (${error.message}); retrying`, 'error');
  }
  setTimeout(poll, Math.max(0, POLL_INTERVAL_MS - (performance.now() - started)));
}

// --- Rates and quantiles -----------------------------------------------------------------------

/** Per second, or null when there is no earlier value or the counter went back (a restart). */
function rate(current, previous, seconds) {
  if (previous === undefined || previous === null || current < previous || seconds <= 0) return null;
  return (current - previous) / seconds;
}

function sumBy(items, read) {
  return items.reduce((total, item) => total + (read(item) || 0), 0);
}

/** Bucket-wise sum of the shards' histograms `name`: {bounds, counts}. */
function mergedHistogram(shards, name) {
  const first = shards.find((shard) => shard[name]);
  if (!first) return null;
  const counts = first[name].counts.map(() => 0);
  for (const shard of shards) {
    shard[name].counts.forEach((count, index) => {
      counts[index] += count;
    });
  }
  return { bounds: first[name].bucket_bounds_us, counts };
}

/**
 * The q-quantile of the samples between two reads of a histogram, interpolated linearly inside
 * its bucket (as Prometheus' histogram_quantile); null when nothing was recorded in between.
 */
function quantile(q, current, previous) {
  if (!current || !previous || current.counts.length !== previous.counts.length) return null;
  const counts = current.counts.map((count, index) => count - previous.counts[index]);
  if (counts.some((count) => count < 0)) return null;
  const total = counts.reduce((sum, count) => sum + count, 0);
  if (total === 0) return null;
  const rank = q * total;
  let below = 0;
  for (let index = 0; index < counts.length; index += 1) {
    if (counts[index] > 0 && below + counts[index] >= rank) {
      const lower = index === 0 ? 0 : current.bounds[index - 1];
      const upper = current.bounds[index];
      // Past the last bound there is no upper edge: report the bound it is beyond.
      if (upper === null) return lower;
      return lower + (upper - lower) * ((rank - below) / counts[index]);
    }
    below += counts[index];
  }
  return null;
}

/** Takes this poll's rates against the previous poll, adds the chart points, and keeps the
 * counters for the next poll. Returns per-shard rates by shard id. */
function takeRates(shards, now) {
  const counters = {
    messagesIn: sumBy(shards, (shard) => shard.messages_in),
    messagesOut: sumBy(shards, (shard) => shard.messages_out),
    bytesIn: sumBy(shards, (shard) => shard.bytes_in),
    bytesOut: sumBy(shards, (shard) => shard.bytes_out),
    produce: mergedHistogram(shards, 'produce_latency'),
    fsync: mergedHistogram(shards, 'fsync_latency'),
    shards: new Map(shards.map((shard) => [shard.shard, shard])),
  };
  const previous = state.previous;
  const seconds = previous ? (now - previous.time) / 1000 : 0;
  const point = {};
  const perShard = new Map();
  if (previous) {
    for (const key of ['messagesIn', 'messagesOut', 'bytesIn', 'bytesOut']) {
      point[key] = rate(counters[key], previous.counters[key], seconds);
    }
    point.produceP50 = quantile(0.5, counters.produce, previous.counters.produce);
    point.produceP99 = quantile(0.99, counters.produce, previous.counters.produce);
    point.fsyncP99 = quantile(0.99, counters.fsync, previous.counters.fsync);
    for (const shard of shards) {
      const before = previous.counters.shards.get(shard.shard);
      if (!before) continue;
      perShard.set(shard.shard, {
        messagesIn: rate(shard.messages_in, before.messages_in, seconds),
        messagesOut: rate(shard.messages_out, before.messages_out, seconds),
        bytesIn: rate(shard.bytes_in, before.bytes_in, seconds),
        bytesOut: rate(shard.bytes_out, before.bytes_out, seconds),
        bus: rate(shard.bus_messages_sent, before.bus_messages_sent, seconds),
      });
    }
  }
  pushPoint(point);
  state.previous = { time: now, counters };
  return perShard;
}

function pushPoint(point) {
  for (const [key, values] of Object.entries(state.series)) {
    values.push(point[key] ?? null);
    if (values.length > CHART_POINTS_MAX) values.shift();
  }
}

// --- Drawing -----------------------------------------------------------------------------------

function setStatus(text, kind) {
  const status = document.getElementById('status');
  status.textContent = text;
  status.className = `status ${kind}`;
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

/** Replaces a table body's rows. A cell is a value, or {text, className}. */
function renderRows(tbodyId, rows, emptyText) {
  const tbody = document.getElementById(tbodyId);
  const columns = tbody.closest('table').querySelectorAll('thead th').length;
  const fragment = document.createDocumentFragment();
  if (rows.length === 0) {
    const row = document.createElement('tr');
    const cell = document.createElement('td');
    cell.colSpan = columns;
    cell.className = 'empty';
    cell.textContent = emptyText;
    row.append(cell);
    fragment.append(row);
  }
  for (const cells of rows) {
    const row = document.createElement('tr');
    for (const value of cells) {
      const cell = document.createElement('td');
      if (value !== null && typeof value === 'object') {
        cell.textContent = value.text;
        cell.className = value.className || '';
      } else {
        cell.textContent = value === null || value === undefined ? '–' : String(value);
        if (typeof value === 'number') cell.className = 'num';
      }
      row.append(cell);
    }
    fragment.append(row);
  }
  tbody.replaceChildren(fragment);
}

function num(text) {
  return { text, className: 'num' };
}

function renderHeader(brokers) {
  const broker = brokers[0];
  if (!broker) return;
  const shards = broker.shards === 1 ? '1 shard' : `${broker.shards} shards`;
  setText('broker', `node ${broker.node_id} · ${broker.host}:${broker.port} · ${shards}`);
}

function renderOverview(shards, topics, partitions, groups) {
  setText('count-topics', NUMBER.format(topics.length));
  setText('count-partitions', NUMBER.format(partitions.length));
  setText('count-shards', NUMBER.format(shards.length));
  setText('count-groups', NUMBER.format(groups.length));
  setText('count-connections', NUMBER.format(sumBy(shards, (shard) => shard.connections)));
  setText('count-disk', formatBytes(sumBy(shards, (shard) => shard.disk_bytes)));
}

/** 1, 2 or 5 times a power of ten, at least `value`. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NAMESPACE, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function renderCharts() {
  for (const chart of CHARTS) {
    const figure = document.getElementById(chart.id);
    const svg = figure.querySelector('svg');
    const width = Math.max(CHART_WIDTH_MIN, Math.round(svg.getBoundingClientRect().width));
    svg.setAttribute('viewBox', `0 0 ${width} ${CHART_HEIGHT}`);
    const bottom = CHART_HEIGHT - CHART_MARGIN;
    const known = chart.series.flatMap((series) => state.series[series.key]).filter((v) => v !== null);
    const top = niceCeiling(Math.max(chart.floor, ...known));
    const y = (value) => bottom - (value / top) * (bottom - CHART_MARGIN);
    const x = (index) => (index / (CHART_POINTS_MAX - 1)) * width;
    const children = [];
    for (const fraction of [0, 0.5, 1]) {
      const level = y(top * fraction);
      children.push(svgElement('line', { class: 'grid', x1: 0, x2: width, y1: level, y2: level }));
      const label = svgElement('text', { class: 'axis', x: 4, y: fraction === 1 ? level + 13 : level - 4 });
      label.textContent = chart.format(top * fraction);
      children.push(label);
    }
    const legend = [];
    chart.series.forEach((series, seriesIndex) => {
      const values = state.series[series.key];
      // Right-aligned: the newest point at the right edge.
      const offset = CHART_POINTS_MAX - values.length;
      let path = '';
      let drawn = 0;
      let pen = 'M';
      values.forEach((value, index) => {
        if (value === null) {
          pen = 'M';
          return;
        }
        path += `${pen}${x(offset + index).toFixed(1)},${y(value).toFixed(1)} `;
        pen = 'L';
        drawn += 1;
      });
      children.push(
        svgElement('path', { class: `line series-${seriesIndex}`, d: path.trim(), 'data-points': drawn }),
      );
      const latest = [...values].reverse().find((value) => value !== null);
      const item = document.createElement('li');
      item.className = `series-${seriesIndex}`;
      const name = document.createElement('span');
      name.className = 'series-name';
      name.textContent = series.label;
      const value = document.createElement('span');
      value.className = 'series-value';
      value.textContent = chart.format(latest ?? null);
      item.append(name, ' ', value);
      legend.push(item);
    });
    svg.replaceChildren(...children);
    figure.querySelector('.legend').replaceChildren(...legend);
  }
}

function renderShards(shards, rates) {
  const rows = shards.map((shard) => {
    const shardRates = rates.get(shard.shard) || {};
    const reads = shard.batch_cache_hits + shard.batch_cache_misses;
    const hits = reads === 0 ? '–' : `${DECIMAL.format((100 * shard.batch_cache_hits) / reads)} %`;
    return [
      shard.shard,
      shard.serving ? { text: 'yes', className: 'ok' } : { text: 'no', className: 'error' },
      shard.partitions,
      shard.connections,
      num(formatCount(shardRates.messagesIn ?? null)),
      num(formatCount(shardRates.messagesOut ?? null)),
      num(formatBytes(shardRates.bytesIn ?? null)),
      num(formatBytes(shardRates.bytesOut ?? null)),
      num(hits),
      num(formatCount(shardRates.bus ?? null)),
      num(formatBytes(shard.disk_bytes)),
    ];
  });
  renderRows('shards-body', rows, 'no shard answered');
}

function renderTopics(topics, partitions) {
  const byTopic = new Map();
  for (const partition of partitions) {
    const entry = byTopic.get(partition.topic) || { shards: new Set(), messages: 0, size: 0 };
    entry.shards.add(partition.shard);
    if (partition.online) {
      entry.messages += partition.high_watermark - partition.log_start_offset;
      entry.size += partition.size_bytes;
    }
    byTopic.set(partition.topic, entry);
  }
  const sorted = [...topics].sort(
    (left, right) => Number(left.internal) - Number(right.internal) || left.name.localeCompare(right.name),
  );
  const rows = sorted.map((topic) => {
    const entry = byTopic.get(topic.name) || { shards: new Set(), messages: 0, size: 0 };
    const configs = Object.entries(topic.configs || {})
      .map(([key, value]) => `${key}=${value}`)
      .join(', ');
    return [
      topic.internal ? { text: `${topic.name} (internal)`, className: 'internal' } : topic.name,
      topic.partitions,
      [...entry.shards].sort((a, b) => a - b).join(', ') || '–',
      num(NUMBER.format(entry.messages)),
      num(formatBytes(entry.size)),
      configs ? { text: configs, className: 'configs' } : { text: 'defaults', className: 'muted' },
    ];
  });
  renderRows('topics-body', rows, 'no topics yet');
}

function renderPartitions(partitions) {
  const select = document.getElementById('partitions-topic');
  const names = [...new Set(partitions.map((partition) => partition.topic))].sort();
  if (names.join('\n') !== state.filterTopics) {
    const chosen = select.value;
    const options = [new Option('all topics', '')];
    for (const name of names) options.push(new Option(name, name));
    select.replaceChildren(...options);
    select.value = names.includes(chosen) ? chosen : '';
    state.filterTopics = names.join('\n');
  }
  const shown = partitions.filter((partition) => !select.value || partition.topic === select.value);
  const rows = shown.slice(0, PARTITION_ROWS_MAX).map((partition) => [
    partition.topic,
    partition.partition,
    partition.shard,
    partition.online ? { text: 'online', className: 'ok' } : { text: `offline: ${partition.error}`, className: 'error' },
    partition.log_start_offset,
    partition.log_end_offset,
    partition.high_watermark,
    num(formatBytes(partition.size_bytes)),
  ]);
  renderRows('partitions-body', rows, 'no partitions');
  setText(
    'partitions-note',
    shown.length > PARTITION_ROWS_MAX
      ? `Showing ${PARTITION_ROWS_MAX} of ${NUMBER.format(shown.length)} partitions; pick a topic to see the rest.`
      : '',
  );
}

function renderGroups(groups) {
  const lagOf = (group) => {
    const known = group.offsets.filter((offset) => offset.lag !== null);
    return known.length === 0 ? null : known.reduce((sum, offset) => sum + offset.lag, 0);
  };
  renderRows(
    'groups-body',
    groups.map((group) => [
      group.group_id,
      group.type,
      group.state,
      group.members.length,
      group.protocol || '–',
      group.coordinator_shard,
      lagOf(group),
    ]),
    'no consumer groups',
  );
  const members = groups.flatMap((group) =>
    group.members.map((member) => [
      group.group_id,
      member.group_instance_id ? `${member.member_id} (${member.group_instance_id})` : member.member_id,
      member.client_id,
      member.client_host,
      member.assignment === null
        ? { text: 'not readable', className: 'muted' }
        : member.assignment.map((topic) => `${topic.topic}: ${topic.partitions.join(', ')}`).join('; ') || 'none',
    ]),
  );
  renderRows('members-body', members, 'no members');
  const offsets = groups.flatMap((group) =>
    group.offsets.map((offset) => [
      group.group_id,
      offset.topic,
      offset.partition,
      offset.committed_offset,
      offset.high_watermark,
      offset.lag,
    ]),
  );
  renderRows('offsets-body', offsets, 'no committed offsets');
}

renderCharts();
poll();
