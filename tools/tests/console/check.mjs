// Opens Ringlog's web console in headless Chromium and checks what a person would see there:
// the tables (found by their headings, read as rendered text), the charts' lines and legends,
// and no errors in the page. Run by tools/tests/console.rs against a real `ringlog serve`.
//
//   node check.mjs CONSOLE_URL EXPECTED_JSON SCREENSHOT_PATH
//
// EXPECTED_JSON: {"shards": 2, "topic": "...", "partitions": [{"partition": 0, "shard": 1}, ...],
//                 "group": "...", "client_id": "..."}
// Prints one line per check; exits 1 at the first failed check, after taking the screenshot.
import { chromium } from 'playwright-core';

/** How long a check waits for the page to show what it expects (the page polls every second). */
const WAIT_MS = 20000;

const [url, expectedJson, screenshotPath] = process.argv.slice(2);
if (!url || !expectedJson || !screenshotPath) {
  console.error('usage: node check.mjs CONSOLE_URL EXPECTED_JSON SCREENSHOT_PATH');
  process.exit(2);
}
const expected = JSON.parse(expectedJson);

class CheckFailed extends Error {}

function check(condition, what) {
  if (!condition) throw new CheckFailed(what);
  console.log(`ok: ${what}`);
}

/** Polls `read` until `accept` takes its value; the last value either way. */
async function eventually(read, accept) {
  const deadline = Date.now() + WAIT_MS;
  let value = await read();
  while (!accept(value) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    value = await read();
  }
  return value;
}

/** The rendered text of a table's body rows: one array of cell texts per row. */
async function tableRows(page, name) {
  const table = page.getByRole('table', { name, exact: true });
  if (!(await table.isVisible())) return [];
  return table.locator('tbody tr').evaluateAll((rows) =>
    rows.map((row) => [...row.querySelectorAll('td')].map((cell) => cell.innerText.trim())),
  );
}

/** A chart's legend, as shown: {series label: value text}, and its lines' drawn points. */
async function chart(page, caption) {
  const figure = page.locator('figure', { has: page.locator('figcaption', { hasText: caption }) });
  const legend = await figure.locator('.legend li').evaluateAll((items) =>
    Object.fromEntries(
      items.map((item) => [
        item.querySelector('.series-name').innerText.trim(),
        item.querySelector('.series-value').innerText.trim(),
      ]),
    ),
  );
  const points = await figure
    .locator('svg path.line')
    .evaluateAll((paths) => paths.map((path) => (path.getAttribute('d').match(/[ML]/g) || []).length));
  const box = await figure.locator('svg').boundingBox();
  return { legend, points, width: box ? box.width : 0, visible: await figure.isVisible() };
}

/** "1,234/s" → 1234; "2.5 KiB/s" → 2560; anything else (the "–" of no value) → NaN. */
function parseRate(text) {
  const match = /^([\d,.]+)\s*(B|KiB|MiB|GiB)?\/s$/.exec(text || '');
  if (!match) return NaN;
  const scale = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[match[2] || 'B'];
  return Number(match[1].replaceAll(',', '')) * scale;
}

const isCount = (text) => /^[\d,]+$/.test(text);

const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.RINGLOG_TEST_CHROMIUM || '/usr/bin/chromium',
  // As root, in a container with a closed network: no sandbox, and no background connections
  // (Chromium's update and sync lookups would fail, noisily, on every start).
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let failed = null;
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
try {
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} for ${response.url()}`);
  });
  page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));

  const response = await page.goto(url, { waitUntil: 'load' });
  check(response.status() === 200, `the console answers 200 at ${url}`);
  check((await page.title()) === 'Ringlog console', 'the page is titled "Ringlog console"');

  const status = await eventually(
    () => page.locator('#status').innerText(),
    (text) => text.startsWith('live'),
  );
  check(status.startsWith('live'), `the header says the broker is live ("${status}")`);
  const broker = await page.locator('#broker').innerText();
  check(broker.includes(`${expected.shards} shards`), `the header names ${expected.shards} shards ("${broker}")`);

  // Shards: one row per shard, each serving.
  const shards = await eventually(
    () => tableRows(page, 'Shards'),
    (rows) => rows.length === expected.shards,
  );
  check(shards.length === expected.shards, `the Shards table has ${expected.shards} rows (${shards.length})`);
  check(shards.every((row) => row[1] === 'yes'), 'every shard is serving');
  const shardPartitions = shards.reduce((sum, row) => sum + Number(row[2]), 0);
  check(shardPartitions >= expected.partitions.length, `the shards hold ${shardPartitions} partitions`);

  // Topics: the topic, its partition count, the shards it is on, messages in it.
  const topicRow = (rows) => rows.find((row) => row[0] === expected.topic);
  const topics = await eventually(
    () => tableRows(page, 'Topics'),
    (rows) => topicRow(rows) !== undefined,
  );
  const topic = topicRow(topics);
  check(topic !== undefined, `the Topics table lists ${expected.topic}`);
  check(Number(topic[1]) === expected.partitions.length, `${expected.topic} has ${expected.partitions.length} partitions`);
  const wantShards = [...new Set(expected.partitions.map((p) => p.shard))].sort((a, b) => a - b).join(', ');
  check(topic[2] === wantShards, `${expected.topic} is on shards ${wantShards} ("${topic[2]}")`);
  check(Number(topic[3].replaceAll(',', '')) > 0, `${expected.topic} holds messages (${topic[3]})`);

  // Partitions, filtered to the topic: which shard owns each.
  await page.getByLabel('Show partitions of', { exact: true }).selectOption(expected.topic);
  const partitions = await eventually(
    () => tableRows(page, 'Partitions'),
    (rows) => rows.length === expected.partitions.length && rows.every((row) => row[0] === expected.topic),
  );
  check(
    partitions.length === expected.partitions.length && partitions.every((row) => row[0] === expected.topic),
    `filtered to ${expected.topic}, the Partitions table shows its ${expected.partitions.length} partitions`,
  );
  for (const want of expected.partitions) {
    const row = partitions.find((cells) => Number(cells[1]) === want.partition);
    check(row && Number(row[2]) === want.shard && row[3] === 'online', `partition ${want.partition} is online on shard ${want.shard}`);
  }

  // Consumer groups: the group, stable with its one member, its lag; the member's assignment.
  const groupRow = (rows) => rows.find((row) => row[0] === expected.group);
  const groups = await eventually(
    () => tableRows(page, 'Consumer groups'),
    (rows) => groupRow(rows)?.[2] === 'Stable' && groupRow(rows)?.[3] === '1' && isCount(groupRow(rows)?.[6] ?? ''),
  );
  const group = groupRow(groups);
  check(group !== undefined, `the Consumer groups table lists ${expected.group}`);
  check(group[2] === 'Stable' && group[3] === '1', `${expected.group} is Stable with 1 member (${group[2]}, ${group[3]})`);
  check(isCount(group[6]), `${expected.group} shows its lag (${group[6]})`);
  const members = await tableRows(page, 'Members');
  const member = members.find((row) => row[0] === expected.group);
  check(member && member[2] === expected.client_id, `the member is the ${expected.client_id} client`);
  check(member[4].startsWith(`${expected.topic}: `), `the member is assigned ${expected.topic} ("${member[4]}")`);
  const offsets = await tableRows(page, 'Committed offsets and lag');
  const committed = offsets.filter((row) => row[0] === expected.group && row[1] === expected.topic);
  check(committed.length > 0 && committed.every((row) => isCount(row[5])), `${expected.group}'s committed offsets show their lag`);

  // Charts: live traffic draws lines and the legends show its rates and latencies.
  const messages = await eventually(
    () => chart(page, 'Messages per second'),
    (seen) => parseRate(seen.legend.in) > 0 && parseRate(seen.legend.out) > 0 && Math.min(...seen.points) >= 3,
  );
  check(messages.visible && messages.width > 200, `the messages chart is visible (${messages.width} px wide)`);
  check(parseRate(messages.legend.in) > 0, `messages in: ${messages.legend.in}`);
  check(parseRate(messages.legend.out) > 0, `messages out: ${messages.legend.out}`);
  check(Math.min(...messages.points) >= 3, `the messages lines have points (${messages.points})`);
  const bytes = await chart(page, 'Bytes per second');
  check(parseRate(bytes.legend.in) > 0, `bytes in: ${bytes.legend.in}`);
  const latency = await eventually(
    () => chart(page, 'Latency'),
    (seen) => / (µs|ms|s)$/.test(seen.legend['produce p99']) && seen.points[1] >= 2,
  );
  check(/ (µs|ms|s)$/.test(latency.legend['produce p99']), `produce p99: ${latency.legend['produce p99']}`);
  check(latency.points[1] >= 2, `the produce p99 line has points (${latency.points[1]})`);

  check(problems.length === 0, `no errors in the page${problems.length ? `: ${problems.join('; ')}` : ''}`);
} catch (error) {
  failed = error;
} finally {
  await page.screenshot({ path: screenshotPath, fullPage: true }).catch(() => {});
  await browser.close();
}
if (failed) {
  console.log(`FAIL: ${failed instanceof CheckFailed ? failed.message : failed.stack}`);
  if (problems.length) console.log(`page problems: ${problems.join('; ')}`);
  process.exit(1);
}
console.log(`screenshot: ${screenshotPath}`);
