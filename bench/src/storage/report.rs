//! Presenting a storage run: aligned text tables for the terminal, the same tables in Markdown
//! for docs/benchmarks.md, the durable-append/raw ratios, and the checks against the issue's
//! targets. Built once as [`Table`]s and rendered twice, so the two views cannot disagree.

use serde::Serialize;

use super::append::AppendResult;
use super::latency::LatencyResult;
use super::raw::{RawMode, RawResult};
use super::read::ReadResult;
use super::{StorageReport, TARGET_APPEND_RAW_RATIO, TARGET_P99_US, TARGET_RATIO_BLOCK_BYTES};

const KIB: usize = 1024;

/// Slow-append episodes named in the notes per latency case (all are in the JSON).
const NOTE_EPISODES_MAX: usize = 5;

/// Durable append throughput relative to the raw writes of the same block size, same round.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub round: usize,
    pub block_bytes: usize,
    pub shards: usize,
    pub append_mb_per_s: f64,
    pub raw_durable_mb_per_s: f64,
    pub append_over_raw_durable: f64,
    pub raw_no_sync_mb_per_s: f64,
    pub append_over_raw_no_sync: f64,
}

/// One target from the issue and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub measured: f64,
    pub target: String,
    pub met: bool,
}

/// The per-round ratios of one (block size, shard count), summarised.
#[derive(Clone, Debug, Serialize)]
pub struct RatioSummary {
    pub block_bytes: usize,
    pub shards: usize,
    pub rounds: usize,
    pub append_mb_per_s_median: f64,
    pub raw_durable_mb_per_s_median: f64,
    pub append_over_raw_durable_median: f64,
    pub append_over_raw_durable_min: f64,
    pub append_over_raw_durable_max: f64,
    pub raw_no_sync_mb_per_s_median: f64,
    pub append_over_raw_no_sync_median: f64,
}

/// The median of `values` (the mean of the middle two for an even count); NaNs are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values
        .iter()
        .copied()
        .filter(|value| !value.is_nan())
        .collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// The distinct values of `key` over `items`, in order of first appearance.
fn distinct_keys<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<K> {
    let mut keys: Vec<K> = Vec::new();
    for item in items {
        let candidate = key(item);
        if !keys.contains(&candidate) {
            keys.push(candidate);
        }
    }
    keys
}

/// The item whose `value` is the (lower) median of `items`, with the min and max of `value`.
fn median_item<'a, T>(items: &[&'a T], value: impl Fn(&T) -> f64) -> Option<(&'a T, f64, f64)> {
    let mut sorted: Vec<&'a T> = items.to_vec();
    sorted.sort_by(|left, right| value(left).total_cmp(&value(right)));
    let middle = *sorted.get((sorted.len().max(1) - 1) / 2)?;
    let min = value(sorted.first()?);
    let max = value(sorted.last()?);
    Some((middle, min, max))
}

pub fn ratio_summaries(report: &StorageReport) -> Vec<RatioSummary> {
    distinct_keys(&report.ratios, |ratio| (ratio.block_bytes, ratio.shards))
        .into_iter()
        .filter_map(|(block_bytes, shards)| {
            let rounds: Vec<&Ratio> = report
                .ratios
                .iter()
                .filter(|ratio| ratio.block_bytes == block_bytes && ratio.shards == shards)
                .collect();
            let of = |value: fn(&Ratio) -> f64| -> Vec<f64> {
                rounds.iter().map(|ratio| value(ratio)).collect()
            };
            let ratios = of(|ratio| ratio.append_over_raw_durable);
            Some(RatioSummary {
                block_bytes,
                shards,
                rounds: rounds.len(),
                append_mb_per_s_median: median(&of(|ratio| ratio.append_mb_per_s))?,
                raw_durable_mb_per_s_median: median(&of(|ratio| ratio.raw_durable_mb_per_s))?,
                append_over_raw_durable_median: median(&ratios)?,
                append_over_raw_durable_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                append_over_raw_durable_max: ratios
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max),
                raw_no_sync_mb_per_s_median: median(&of(|ratio| ratio.raw_no_sync_mb_per_s))
                    .unwrap_or(f64::NAN),
                append_over_raw_no_sync_median: median(&of(|ratio| ratio.append_over_raw_no_sync))
                    .unwrap_or(f64::NAN),
            })
        })
        .collect()
}

pub fn ratios(report: &StorageReport) -> Vec<Ratio> {
    let raw_rate = |round: usize, block_bytes: usize, mode: RawMode| {
        report
            .raw
            .iter()
            .find(|raw| {
                raw.round == round
                    && raw.block_bytes == block_bytes
                    && raw.mode == mode
                    && !raw.stalled
            })
            .map(|raw| raw.mb_per_s)
    };
    report
        .append
        .iter()
        .filter(|append| !append.stalled)
        .filter_map(|append| {
            let durable = raw_rate(append.round, append.block_bytes, RawMode::Durable)?;
            let no_sync =
                raw_rate(append.round, append.block_bytes, RawMode::NoSync).unwrap_or(f64::NAN);
            Some(Ratio {
                round: append.round,
                block_bytes: append.block_bytes,
                shards: append.shards,
                append_mb_per_s: append.mb_per_s,
                raw_durable_mb_per_s: durable,
                append_over_raw_durable: append.mb_per_s / durable,
                raw_no_sync_mb_per_s: no_sync,
                append_over_raw_no_sync: append.mb_per_s / no_sync,
            })
        })
        .collect()
}

pub fn targets(report: &StorageReport) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for summary in report
        .ratio_summaries
        .iter()
        .filter(|summary| summary.block_bytes == TARGET_RATIO_BLOCK_BYTES)
    {
        checks.push(TargetCheck {
            name: format!(
                "durable append / raw durable, {} KiB, {} shard(s), median of {} round(s)",
                summary.block_bytes / KIB,
                summary.shards,
                summary.rounds
            ),
            measured: summary.append_over_raw_durable_median,
            target: format!(">= {TARGET_APPEND_RAW_RATIO:.2}"),
            met: summary.append_over_raw_durable_median >= TARGET_APPEND_RAW_RATIO,
        });
    }
    for latency in &report.latency {
        checks.push(TargetCheck {
            name: format!(
                "p99 append-to-durable at {} of max, {} KiB (from schedule, us)",
                load_label(latency.load_fraction),
                latency.block_bytes / KIB
            ),
            measured: latency.from_schedule.p99_us as f64,
            target: format!("<= {TARGET_P99_US}"),
            met: !latency.overloaded
                && !latency.stalled
                && latency.from_schedule.p99_us <= TARGET_P99_US,
        });
    }
    checks
}

fn load_label(fraction: f64) -> String {
    if fraction.is_nan() {
        "the given rate".to_string()
    } else {
        format!("{:.0}%", fraction * 100.0)
    }
}

/// A table with a title, rendered as aligned text or as Markdown.
pub struct Table {
    pub title: String,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    // Text columns (the first) left-aligned, numbers right-aligned.
                    if column == 0 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = format!("== {} ==\n", self.title);
        out += &line(self.headers.clone());
        out.push('\n');
        for row in &self.rows {
            out += &line(row.iter().map(String::as_str).collect());
            out.push('\n');
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("**{}**\n\n| {} |\n", self.title, self.headers.join(" | "));
        let rule: Vec<&str> = self
            .headers
            .iter()
            .enumerate()
            .map(|(column, _)| if column == 0 { "---" } else { "---:" })
            .collect();
        out += &format!("|{}|\n", rule.join("|"));
        for row in &self.rows {
            out += &format!("| {} |\n", row.join(" | "));
        }
        out
    }
}

fn kib(bytes: usize) -> String {
    format!("{} KiB", bytes / KIB)
}

fn rate(value: f64) -> String {
    if value.is_nan() {
        "-".to_string()
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn ratio_text(value: f64) -> String {
    if value.is_nan() {
        "-".to_string()
    } else {
        format!("{value:.2}")
    }
}

/// The rounds that did not stall, with a note for the table: if every round stalled, all of
/// them, marked as such.
fn valid_rounds<'a, T>(
    rounds: Vec<&'a T>,
    stalled: impl Fn(&T) -> bool,
) -> (Vec<&'a T>, &'static str) {
    let valid: Vec<&'a T> = rounds
        .iter()
        .copied()
        .filter(|round| !stalled(round))
        .collect();
    match (valid.len(), rounds.len() - valid.len()) {
        (0, _) => (rounds, " (all stalled)"),
        (_, 0) => (valid, ""),
        _ => (valid, " (stalled rounds left out)"),
    }
}

fn range(min: f64, max: f64) -> String {
    format!("{}-{}", rate(min), rate(max))
}

pub fn tables(report: &StorageReport) -> Vec<Table> {
    let mut tables = Vec::new();
    let rounds = report.args.rounds;
    if !report.raw.is_empty() {
        let mut rows = Vec::new();
        for (block_bytes, mode) in distinct_keys(&report.raw, |raw| (raw.block_bytes, raw.mode)) {
            let same: Vec<&RawResult> = report
                .raw
                .iter()
                .filter(|raw| raw.block_bytes == block_bytes && raw.mode == mode)
                .collect();
            let (same, note) = valid_rounds(same, |raw| raw.stalled);
            let Some((raw, min, max)) = median_item(&same, |raw| raw.mb_per_s) else {
                continue;
            };
            rows.push(vec![
                kib(raw.block_bytes),
                raw.mode.label().to_string(),
                rate(raw.mb_per_s),
                format!("{}{note}", range(min, max)),
                rate(raw.writes_per_s),
                rate(raw.write_mean_us),
                rate(raw.fdatasync_mean_us),
                raw.op_latency.p50_us.to_string(),
                raw.op_latency.p99_us.to_string(),
                raw.op_latency.p999_us.to_string(),
                rate(raw.shard_cpu_percent),
            ]);
        }
        tables.push(Table {
            title: format!(
                "Raw sequential O_DIRECT writes (rt::fs::File, one write in flight); median of {rounds} round(s)"
            ),
            headers: vec![
                "block", "mode", "MB/s", "range", "writes/s", "write us", "fdatasync us",
                "op p50 us", "op p99 us", "op p99.9 us", "CPU %",
            ],
            rows,
        });
    }
    if !report.append.is_empty() {
        let mut rows = Vec::new();
        for (block_bytes, shards) in
            distinct_keys(&report.append, |append| (append.block_bytes, append.shards))
        {
            let same: Vec<&AppendResult> = report
                .append
                .iter()
                .filter(|append| append.block_bytes == block_bytes && append.shards == shards)
                .collect();
            let (same, note) = valid_rounds(same, |append| append.stalled);
            let Some((append, min, max)) = median_item(&same, |append| append.mb_per_s) else {
                continue;
            };
            rows.push(vec![
                kib(append.block_bytes),
                append.shards.to_string(),
                append.appenders_per_shard.to_string(),
                rate(append.mb_per_s),
                format!("{}{note}", range(min, max)),
                rate(append.batches_per_s),
                rate(append.batches_per_group_commit),
                append.append_latency.p50_us.to_string(),
                append.append_latency.p99_us.to_string(),
                append.append_latency.p999_us.to_string(),
                rate(append.shard_cpu_percent),
                rate(append.process_cpu_percent),
            ]);
        }
        tables.push(Table {
            title: format!(
                "Durable appends (PartitionLog::append returns after fdatasync); median of {rounds} round(s)"
            ),
            headers: vec![
                "block", "shards", "appenders/shard", "MB/s", "range", "batches/s",
                "batches/fdatasync", "p50 us", "p99 us", "p99.9 us", "shard CPU %",
                "process CPU %",
            ],
            rows,
        });
    }
    if !report.latency.is_empty() {
        tables.push(Table {
            title: "Append-to-durable latency, open loop, 1 shard (us)".into(),
            headers: vec![
                "block",
                "load",
                "target batches/s",
                "achieved batches/s",
                "MB/s",
                "p50",
                "p99",
                "p99.9",
                "max",
                "p50 from send",
                "p99 from send",
                "p99.9 from send",
                "pacer lag p99",
                "in flight max",
            ],
            rows: report
                .latency
                .iter()
                .map(|latency| {
                    vec![
                        kib(latency.block_bytes),
                        format!(
                            "{}{}",
                            load_label(latency.load_fraction),
                            if latency.stalled { " (stalled)" } else { "" }
                        ),
                        rate(latency.target_batches_per_s),
                        rate(latency.achieved_batches_per_s),
                        rate(latency.achieved_mb_per_s),
                        latency.from_schedule.p50_us.to_string(),
                        latency.from_schedule.p99_us.to_string(),
                        latency.from_schedule.p999_us.to_string(),
                        latency.from_schedule.max_us.to_string(),
                        latency.from_send.p50_us.to_string(),
                        latency.from_send.p99_us.to_string(),
                        latency.from_send.p999_us.to_string(),
                        latency.pacer_lag.p99_us.to_string(),
                        format!(
                            "{}{}",
                            latency.in_flight_max,
                            if latency.overloaded {
                                " (overloaded)"
                            } else {
                                ""
                            }
                        ),
                    ]
                })
                .collect(),
        });
    }
    if !report.read.is_empty() {
        let mut rows = Vec::new();
        for (block_bytes, kind) in distinct_keys(&report.read, |read| (read.block_bytes, read.kind))
        {
            let same: Vec<&ReadResult> = report
                .read
                .iter()
                .filter(|read| read.block_bytes == block_bytes && read.kind == kind)
                .collect();
            let (same, note) = valid_rounds(same, |read| read.stalled);
            let Some((read, min, max)) = median_item(&same, |read| read.mb_per_s) else {
                continue;
            };
            rows.push(vec![
                kib(read.block_bytes),
                read.kind.label().to_string(),
                (read.fetch_bytes / KIB).to_string(),
                rate(read.mb_per_s),
                format!("{}{note}", range(min, max)),
                rate(read.batches_per_s),
                read.reads.to_string(),
                read.reads_from_cache.to_string(),
                rate(read.shard_cpu_percent),
            ]);
        }
        tables.push(Table {
            title: format!(
                "Reads of what the 1-shard append case wrote; median of {rounds} round(s)"
            ),
            headers: vec![
                "block",
                "kind",
                "fetch KiB",
                "MB/s",
                "range",
                "batches/s",
                "reads",
                "from cache",
                "CPU %",
            ],
            rows,
        });
    }
    if !report.ratio_summaries.is_empty() {
        tables.push(Table {
            title: "Durable append vs raw, same block size, same round".into(),
            headers: vec![
                "block",
                "shards",
                "append MB/s",
                "raw durable MB/s",
                "append/raw durable",
                "per round",
                "raw no-sync MB/s",
                "append/raw no-sync",
            ],
            rows: report
                .ratio_summaries
                .iter()
                .map(|summary| {
                    let per_round: Vec<String> = report
                        .ratios
                        .iter()
                        .filter(|ratio| {
                            ratio.block_bytes == summary.block_bytes
                                && ratio.shards == summary.shards
                        })
                        .map(|ratio| ratio_text(ratio.append_over_raw_durable))
                        .collect();
                    vec![
                        kib(summary.block_bytes),
                        summary.shards.to_string(),
                        rate(summary.append_mb_per_s_median),
                        rate(summary.raw_durable_mb_per_s_median),
                        ratio_text(summary.append_over_raw_durable_median),
                        per_round.join(" "),
                        rate(summary.raw_no_sync_mb_per_s_median),
                        ratio_text(summary.append_over_raw_no_sync_median),
                    ]
                })
                .collect(),
        });
    }
    if !report.targets.is_empty() {
        tables.push(Table {
            title: "Targets".into(),
            headers: vec!["target", "measured", "required", "met"],
            rows: report
                .targets
                .iter()
                .map(|check| {
                    vec![
                        check.name.clone(),
                        if check.measured < 10.0 {
                            format!("{:.2}", check.measured)
                        } else {
                            format!("{:.0}", check.measured)
                        },
                        check.target.clone(),
                        if check.met { "yes" } else { "NO" }.to_string(),
                    ]
                })
                .collect(),
        });
    }
    tables
}

/// Prints the text tables, then the Markdown to paste into docs/benchmarks.md.
pub fn print(report: &StorageReport) {
    let tables = tables(report);
    let notes = notes(report);
    println!();
    for table in &tables {
        println!("{}", table.text());
    }
    for note in &notes {
        println!("{note}");
    }
    println!("\n---- Markdown ----\n");
    for table in &tables {
        println!("{}", table.markdown());
    }
    for note in &notes {
        println!("{note}\n");
    }
}

/// Conditions of the run that a reader of the numbers must know.
fn notes(report: &StorageReport) -> Vec<String> {
    let mut notes = vec![format!(
        "Load average at start: {}; at end: {}.",
        report.load_average_start, report.load_average_end
    )];
    for latency in &report.latency {
        let mut worst = latency.slow_episodes.clone();
        worst.sort_by_key(|episode| std::cmp::Reverse(episode.max_us));
        let listed: Vec<String> = worst
            .iter()
            .take(NOTE_EPISODES_MAX)
            .map(|episode| {
                format!(
                    "at {:.0} ms, {} appends, max {} us, log at {:.1} MiB",
                    episode.start_ms,
                    episode.appends,
                    episode.max_us,
                    episode.log_bytes_at_start as f64 / (KIB * KIB) as f64
                )
            })
            .collect();
        notes.push(format!(
            "Latency {} KiB: {} episode(s) of appends slower than {TARGET_P99_US} us{}{}",
            latency.block_bytes / KIB,
            latency.slow_episode_count,
            if listed.is_empty() { "" } else { "; worst: " },
            listed.join("; ")
        ));
    }
    for stall in &report.stalls {
        notes.push(format!(
            "WARNING: case '{}' stalled (no progress for seconds; shard threads woken by signal {} time(s)); its numbers are not valid. Diagnostics are in the JSON report.",
            stall.case, stall.nudges
        ));
    }
    notes
}

/// One progress line per finished case, for stderr while the run goes on.
pub fn raw_line(raw: &RawResult) -> String {
    format!(
        "raw {:>7} {:<26} {:>7} MB/s  p99 {} us",
        kib(raw.block_bytes),
        raw.mode.label(),
        rate(raw.mb_per_s),
        raw.op_latency.p99_us
    )
}

pub fn append_line(append: &AppendResult) -> String {
    format!(
        "append {:>7} x{} shard(s) {:>7} MB/s  {:.1} batches/fdatasync  p99 {} us",
        kib(append.block_bytes),
        append.shards,
        rate(append.mb_per_s),
        append.batches_per_group_commit,
        append.append_latency.p99_us
    )
}

pub fn read_line(read: &ReadResult) -> String {
    format!(
        "read {:>7} {:<14} {:>7} MB/s",
        kib(read.block_bytes),
        read.kind.label(),
        rate(read.mb_per_s)
    )
}

pub fn latency_line(latency: &LatencyResult) -> String {
    format!(
        "latency {:>7} at {:.0} batches/s: p50 {} p99 {} p99.9 {} us (from schedule){}",
        kib(latency.block_bytes),
        latency.target_batches_per_s,
        latency.from_schedule.p50_us,
        latency.from_schedule.p99_us,
        latency.from_schedule.p999_us,
        if latency.overloaded {
            " OVERLOADED"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, f64::NAN, 2.0, 3.0]), Some(2.5));
        let values = [5.0, 1.0, 9.0, 7.0];
        let refs: Vec<&f64> = values.iter().collect();
        let (middle, min, max) = median_item(&refs, |value| *value).expect("items");
        assert_eq!((*middle, min, max), (5.0, 1.0, 9.0));
    }

    #[test]
    fn tables_render_aligned_and_as_markdown() {
        let table = Table {
            title: "T".into(),
            headers: vec!["block", "MB/s"],
            rows: vec![
                vec!["16 KiB".into(), "5.0".into()],
                vec!["256 KiB".into(), "1234".into()],
            ],
        };
        assert_eq!(
            table.text(),
            "== T ==\nblock    MB/s\n16 KiB    5.0\n256 KiB  1234\n"
        );
        assert_eq!(
            table.markdown(),
            "**T**\n\n| block | MB/s |\n|---|---:|\n| 16 KiB | 5.0 |\n| 256 KiB | 1234 |\n"
        );
    }
}
