//! The HTML report of the Kafka workloads: one self-contained page (inline CSS and SVG; no
//! scripts, fonts or network) that compares the same workloads run against several brokers, so
//! it can be attached to an issue and still opened long after the run.
//!
//! Built with `format!` alone: the page is a few hundred lines of markup, not worth a template
//! engine. Every piece of text that came from a user (titles, broker names, settings, error
//! kinds) goes through `escape`, and every number that reaches the page through a formatter
//! that turns NaN and infinities into a dash, so a broken run still gives a valid page.

use std::fmt::Write as _;

use super::result::{Percentiles, ProcessUsage, TimelineSample, Verification, WorkloadResult};

/// Line colours, assigned per broker (or per series) in this order: Okabe and Ito's palette,
/// which stays distinguishable under the common colour blindnesses, with its yellow replaced by
/// grey because yellow is unreadable on white. A ninth series reuses the first colour.
const PALETTE: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#7f7f7f",
];

/// Chart width in SVG user units (CSS pixels at 100% zoom): two charts side by side fit a
/// 1366-pixel laptop screen.
const CHART_WIDTH_PX: f64 = 640.0;
/// Chart height without its legend: a plot area a little over half as high as it is wide.
const CHART_HEIGHT_PX: f64 = 360.0;
/// Room left of the plot for the y tick labels ("100 ms", "1.25M") and the y axis title.
const MARGIN_LEFT_PX: f64 = 76.0;
/// Room right of the plot so the last x tick label is not cut in half.
const MARGIN_RIGHT_PX: f64 = 24.0;
/// Room above the plot for the chart's title.
const MARGIN_TOP_PX: f64 = 36.0;
/// Room below the plot for the x tick labels and the x axis title.
const MARGIN_BOTTOM_PX: f64 = 52.0;
/// Tick labels and legend text.
const FONT_SIZE_PX: f64 = 12.0;
/// The chart's title.
const TITLE_FONT_SIZE_PX: f64 = 14.0;
/// Average glyph width of 12-pixel sans-serif text, to lay the legend out without measuring
/// text (which SVG cannot do without a script).
const CHAR_WIDTH_PX: f64 = 7.0;
/// Height of one legend row.
const LEGEND_ROW_PX: f64 = 18.0;
/// Space between the x axis title and the first legend row, and below the last.
const LEGEND_PADDING_PX: f64 = 8.0;
/// Length of the line sample in front of a legend label: long enough to show a dash pattern.
const LEGEND_SWATCH_PX: f64 = 24.0;
/// Space between legend entries on one row.
const LEGEND_GAP_PX: f64 = 16.0;
/// Legend labels are cut to this many characters so one long broker name cannot push the others
/// out of the chart; the full label is the line's tooltip.
const LEGEND_LABEL_CHARS_MAX: usize = 60;
/// Data lines: thin enough that two close lines stay apart.
const LINE_WIDTH_PX: f64 = 1.5;
/// The dot that stands for a series of a single point (a polyline of one point is invisible).
const POINT_RADIUS_PX: f64 = 3.0;
/// Dashes of the second line of a broker (end-to-end latency, consumed throughput).
const DASH_PATTERN: &str = "6 4";
/// About this many ticks on a linear axis: enough to read values off, few enough that labels
/// such as "1.25M" do not touch.
const LINEAR_TICKS_TARGET: f64 = 6.0;
/// A log axis spanning at most this many decades also gets 2× and 5× ticks; wider, they crowd.
const LOG_SUBDIVIDED_DECADES_MAX: f64 = 2.0;
/// Slack when taking the decade of a value, so a power of ten whose logarithm comes out as
/// 2.9999999999999996 still counts as the decade 3.
const LOG_DECADE_EPSILON: f64 = 1e-9;
/// Significant digits of every number on the page: 0.1% resolution, beyond what run-to-run
/// noise lets a benchmark claim.
const SIGNIFICANT_DIGITS: i32 = 3;

/// The labelled percentiles of a latency chart's "nines" axis.
const NINES_TICKS: [(f64, &str); 6] = [
    (50.0, "50"),
    (90.0, "90"),
    (99.0, "99"),
    (99.9, "99.9"),
    (99.99, "99.99"),
    (99.999, "99.999"),
];
/// Where the maximum (p100, infinitely many nines) is drawn, together with anything beyond
/// p99.9999: one nine right of the last labelled percentile, so the maximum stands apart.
const NINES_MAX: f64 = 6.0;
/// The lowest latency a log axis shows: latencies are recorded in whole microseconds with 1 as
/// the floor (`measure::record`), and a 0 from an empty summary is drawn there too.
const LATENCY_FLOOR_US: f64 = 1.0;
/// The latency range of a chart without a single sample (1 µs to 1 ms), so the empty chart still
/// has readable axes.
const EMPTY_LATENCY_RANGE_US: (f64, f64) = (1.0, 1_000.0);
/// Error kinds listed per broker in the table; a run with more is broken anyway, and all of them
/// are in the JSON result file.
const ERROR_KINDS_SHOWN_MAX: usize = 5;

/// What the page shows for a number that is absent, NaN or infinite.
const MISSING: &str = "–";
/// Units of a count, each 1000 times the one before.
const COUNT_UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
/// Units of a latency in microseconds, each 1000 times the one before.
const LATENCY_UNITS: [&str; 3] = ["µs", "ms", "s"];
/// Step between the units above.
const UNIT_STEP: f64 = 1_000.0;
const KIB_PER_MIB: f64 = 1024.0;
const MS_PER_S: u64 = 1_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// The page's style sheet: system fonts only, so nothing is fetched.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1320px;\
padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:1em 0}\
th,td{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}\
td.number{text-align:right;font-variant-numeric:tabular-nums}\
tr.group th{background:#f4f4f4;font-weight:600}\
td.bad{color:#b00020;font-weight:600}tr.differs td{font-weight:600}\
.charts{display:flex;flex-wrap:wrap;gap:1em}\
.charts svg{max-width:100%;height:auto;border:1px solid #eee}\
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:baseline}";

/// A self-contained HTML page (no external scripts, styles, fonts or network) for one or more
/// workload results, e.g. the same workloads run against two brokers.
///
/// Results are grouped by workload name in order of first appearance; within a workload each
/// result is a column, and a broker keeps its colour across all workloads' charts.
pub fn html(title: &str, results: &[WorkloadResult]) -> String {
    let workloads = distinct(results.iter().map(|result| result.workload.as_str()));
    let groups: Vec<(&str, Vec<&WorkloadResult>)> = workloads
        .iter()
        .map(|workload| {
            let group = results
                .iter()
                .filter(|result| result.workload == *workload)
                .collect();
            (*workload, group)
        })
        .collect();
    // A broker's colour is its place among all brokers of the page, so "ringlog" is the same
    // colour in every workload even when a workload was not run against every broker.
    let mut all_columns: Vec<String> = Vec::new();
    for (_, group) in &groups {
        for column in column_labels(group) {
            if !all_columns.contains(&column) {
                all_columns.push(column);
            }
        }
    }

    let mut page = String::new();
    let title = escape(title);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    if results.is_empty() {
        page.push_str("<p>No results.</p>\n");
    } else {
        let _ = write!(
            page,
            "<p>{} workload{}, {} broker{}:",
            groups.len(),
            plural(groups.len()),
            all_columns.len(),
            plural(all_columns.len()),
        );
        for (index, column) in all_columns.iter().enumerate() {
            let _ = write!(
                page,
                " <span class=\"swatch\" style=\"background:{}\"></span>{}",
                colour(index),
                escape(column)
            );
        }
        page.push_str("</p>\n");
        if groups.len() > 1 {
            page.push_str("<ul>\n");
            for (index, (workload, _)) in groups.iter().enumerate() {
                let _ = writeln!(
                    page,
                    "<li><a href=\"#workload-{}\">{}</a></li>",
                    index + 1,
                    escape(workload_name(workload))
                );
            }
            page.push_str("</ul>\n");
        }
    }
    for (index, (workload, group)) in groups.iter().enumerate() {
        workload_section(&mut page, index + 1, workload, group, &all_columns);
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// One SVG latency-percentile plot: x axis on a "nines" scale (position = log10(1/(1-p)) for
/// percentile p, labelled 50, 90, 99, 99.9, 99.99, 99.999, with the maximum clamped to a "max"
/// column right of them), y axis latency (log scale, labelled in µs/ms/s), one line per
/// (label, &Percentiles) series, with a legend. A series without samples is in the legend only.
pub fn latency_svg(title: &str, series: &[(String, &Percentiles)]) -> String {
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(index, (label, percentiles))| {
            Line::new(label, latency_points(percentiles), Stroke::solid(index))
        })
        .collect();
    latency_chart(title, lines).render()
}

/// One SVG line chart of throughput over time (messages/s) from (seconds since start,
/// messages/s) points, one line per series (e.g. "ringlog produced", "tansu produced"), with a
/// legend and axes with readable tick labels (1.2M, 350k). Points that are NaN or infinite are
/// left out. Warm-up cannot be shaded here (the points do not say which are warm-up); [`html`]
/// shades it from the timelines' `warmup` flags.
pub fn throughput_svg(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(index, (label, points))| Line::new(label, points.clone(), Stroke::solid(index)))
        .collect();
    throughput_chart(title, lines, None).render()
}

/// `text` made safe inside HTML or SVG text and quoted attribute values. Control characters,
/// which XML forbids even escaped, become U+FFFD.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            '\t' | '\n' | '\r' => escaped.push(character),
            control if control.is_control() => escaped.push(char::REPLACEMENT_CHARACTER),
            other => escaped.push(other),
        }
    }
    escaped
}

/// One workload's heading, numbers, charts and settings, appended to `page`.
fn workload_section(
    page: &mut String,
    number: usize,
    workload: &str,
    group: &[&WorkloadResult],
    all_columns: &[String],
) {
    let columns = column_labels(group);
    let colour_indexes: Vec<usize> = columns
        .iter()
        .map(|column| {
            all_columns
                .iter()
                .position(|known| known == column)
                .unwrap_or(0)
        })
        .collect();
    let workload = workload_name(workload);
    let _ = write!(
        page,
        "<section id=\"workload-{number}\">\n<h2>{}</h2>\n",
        escape(workload)
    );

    page.push_str(&numbers_table(&columns, group));

    let mut latency_lines = Vec::new();
    let mut throughput_lines = Vec::new();
    for ((column, result), colour_index) in columns.iter().zip(group).zip(&colour_indexes) {
        let solid = Stroke::solid(*colour_index);
        let dashed = Stroke::dashed(*colour_index);
        latency_lines.push(Line::new(
            &format!("{column} publish"),
            latency_points(&result.publish_latency),
            solid,
        ));
        latency_lines.push(Line::new(
            &format!("{column} end-to-end"),
            latency_points(&result.end_to_end_latency),
            dashed,
        ));
        let timeline = |rate: fn(&TimelineSample) -> f64| -> Vec<(f64, f64)> {
            result
                .timeline
                .iter()
                .map(|sample| (sample.t_s, rate(sample)))
                .collect()
        };
        throughput_lines.push(Line::new(
            &format!("{column} produced"),
            timeline(|sample| sample.produced_messages_per_s),
            solid,
        ));
        throughput_lines.push(Line::new(
            &format!("{column} consumed"),
            timeline(|sample| sample.consumed_messages_per_s),
            dashed,
        ));
    }
    let warmup_end_s = group
        .iter()
        .flat_map(|result| &result.timeline)
        .filter(|sample| sample.warmup && sample.t_s.is_finite())
        .map(|sample| sample.t_s)
        .reduce(f64::max);
    page.push_str("<div class=\"charts\">\n");
    page.push_str(&latency_chart(&format!("{workload}: latency"), latency_lines).render());
    page.push_str(
        &throughput_chart(
            &format!("{workload}: throughput"),
            throughput_lines,
            warmup_end_s,
        )
        .render(),
    );
    page.push_str("</div>\n");

    page.push_str(&settings_table(&columns, group));
    page.push_str("</section>\n");
}

/// A cell of the numbers table; `bad` marks values that mean the run lost or broke something.
struct Cell {
    text: String,
    bad: bool,
}

impl Cell {
    fn new(text: String) -> Cell {
        Cell { text, bad: false }
    }

    /// A count that must be zero.
    fn must_be_zero(count: u64) -> Cell {
        Cell {
            text: grouped(count as f64),
            bad: count > 0,
        }
    }
}

/// The numbers of one workload, one column per result, one row per metric. Rows whose data no
/// result has (broker resource use without `--pid`, verification without consumers) are left
/// out.
fn numbers_table(columns: &[String], group: &[&WorkloadResult]) -> String {
    let mut table = String::from("<table>\n<thead><tr><th></th>");
    for column in columns {
        let _ = write!(table, "<th>{}</th>", escape(column));
    }
    table.push_str("</tr></thead>\n<tbody>\n");
    let group_row = |table: &mut String, name: &str| {
        let _ = writeln!(
            table,
            "<tr class=\"group\"><th colspan=\"{}\">{name}</th></tr>",
            columns.len() + 1
        );
    };
    let row = |table: &mut String, name: &str, cell: &dyn Fn(&WorkloadResult) -> Cell| {
        let _ = write!(table, "<tr><th scope=\"row\">{}</th>", escape(name));
        for result in group {
            let Cell { text, bad } = cell(result);
            let class = if bad { "number bad" } else { "number" };
            let _ = write!(table, "<td class=\"{class}\">{}</td>", escape(&text));
        }
        table.push_str("</tr>\n");
    };

    group_row(&mut table, "Run");
    row(&mut table, "started", &|result| {
        Cell::new(utc(result.started_unix_ms))
    });
    row(&mut table, "warm-up s", &|result| {
        Cell::new(significant(result.warmup_s))
    });
    row(&mut table, "measured s", &|result| {
        Cell::new(significant(result.duration_s))
    });

    group_row(&mut table, "Throughput");
    row(&mut table, "produced msgs/s", &|result| {
        Cell::new(grouped(result.produced.messages_per_s))
    });
    row(&mut table, "produced MB/s", &|result| {
        Cell::new(significant(result.produced.mb_per_s))
    });
    row(&mut table, "produced messages", &|result| {
        Cell::new(grouped(result.produced.messages as f64))
    });
    row(&mut table, "consumed msgs/s", &|result| {
        Cell::new(grouped(result.consumed.messages_per_s))
    });
    row(&mut table, "consumed MB/s", &|result| {
        Cell::new(significant(result.consumed.mb_per_s))
    });
    row(&mut table, "consumed messages", &|result| {
        Cell::new(grouped(result.consumed.messages as f64))
    });

    type LatencyOf = fn(&WorkloadResult) -> &Percentiles;
    type QuantileOf = fn(&Percentiles) -> u64;
    let latency_rows: [(&str, LatencyOf); 2] = [
        ("Publish latency", |result| &result.publish_latency),
        ("End-to-end latency", |result| &result.end_to_end_latency),
    ];
    let quantiles: [(&str, QuantileOf); 5] = [
        ("p50", |percentiles| percentiles.p50_us),
        ("p99", |percentiles| percentiles.p99_us),
        ("p99.9", |percentiles| percentiles.p999_us),
        ("p99.99", |percentiles| percentiles.p9999_us),
        ("max", |percentiles| percentiles.max_us),
    ];
    for (heading, latency) in latency_rows {
        group_row(&mut table, heading);
        row(&mut table, "samples", &|result| {
            Cell::new(grouped(latency(result).count as f64))
        });
        for (name, quantile) in quantiles {
            row(&mut table, name, &|result| {
                let percentiles = latency(result);
                Cell::new(if percentiles.count == 0 {
                    MISSING.to_string()
                } else {
                    latency_label(quantile(percentiles) as f64)
                })
            });
        }
    }

    group_row(&mut table, "Resources");
    if group.iter().any(|result| result.broker_process.is_some()) {
        let process = |value: fn(&ProcessUsage) -> String| {
            move |result: &WorkloadResult| {
                Cell::new(
                    result
                        .broker_process
                        .as_ref()
                        .map_or_else(|| MISSING.to_string(), value),
                )
            }
        };
        row(
            &mut table,
            "broker CPU s/GB",
            &process(|usage| significant(usage.cpu_seconds_per_gb)),
        );
        row(
            &mut table,
            "broker CPU s",
            &process(|usage| significant(usage.cpu_seconds)),
        );
        row(
            &mut table,
            "broker RSS max MiB",
            &process(|usage| significant(usage.rss_max_kib as f64 / KIB_PER_MIB)),
        );
    }
    row(&mut table, "client CPU s", &|result| {
        Cell::new(significant(result.client_cpu_seconds))
    });
    row(&mut table, "errors", &|result| errors_cell(result));

    if group.iter().any(|result| result.verification.is_some()) {
        group_row(&mut table, "Verification");
        let checked = |value: fn(&Verification) -> Cell| {
            move |result: &WorkloadResult| {
                result
                    .verification
                    .as_ref()
                    .map_or_else(|| Cell::new(MISSING.to_string()), value)
            }
        };
        row(
            &mut table,
            "acknowledged",
            &checked(|verification| Cell::new(grouped(verification.acknowledged as f64))),
        );
        row(
            &mut table,
            "read back",
            &checked(|verification| Cell::new(grouped(verification.read_back as f64))),
        );
        row(
            &mut table,
            "expired by retention",
            &checked(|verification| Cell::new(grouped(verification.expired as f64))),
        );
        row(
            &mut table,
            "lost",
            &checked(|verification| Cell::must_be_zero(verification.lost)),
        );
        row(
            &mut table,
            "duplicates",
            &checked(|verification| Cell::must_be_zero(verification.duplicates)),
        );
        row(
            &mut table,
            "out of order",
            &checked(|verification| Cell::must_be_zero(verification.out_of_order)),
        );
    }
    table.push_str("</tbody>\n</table>\n");
    table
}

/// The total error count, followed by the most frequent kinds.
fn errors_cell(result: &WorkloadResult) -> Cell {
    let total = result
        .errors
        .iter()
        .fold(0u64, |total, error| total.saturating_add(error.count));
    let mut cell = Cell::must_be_zero(total);
    let mut kinds: Vec<_> = result
        .errors
        .iter()
        .filter(|error| error.count > 0)
        .collect();
    kinds.sort_by_key(|error| std::cmp::Reverse(error.count));
    if !kinds.is_empty() {
        let shown: Vec<String> = kinds
            .iter()
            .take(ERROR_KINDS_SHOWN_MAX)
            .map(|error| format!("{}: {}", error.what, grouped(error.count as f64)))
            .collect();
        let _ = write!(cell.text, " ({}", shown.join(", "));
        if kinds.len() > ERROR_KINDS_SHOWN_MAX {
            let _ = write!(
                cell.text,
                ", {} more kinds",
                kinds.len() - ERROR_KINDS_SHOWN_MAX
            );
        }
        cell.text.push(')');
    }
    cell
}

/// The settings of each result, one row per key in order of first appearance; rows where the
/// results differ are marked, since a difference there may explain a difference in the numbers.
fn settings_table(columns: &[String], group: &[&WorkloadResult]) -> String {
    let keys = distinct(
        group
            .iter()
            .flat_map(|result| &result.settings)
            .map(|(key, _)| key.as_str()),
    );
    if keys.is_empty() {
        return String::new();
    }
    let mut table = String::from("<h3>Settings</h3>\n<table>\n<thead><tr><th></th>");
    for column in columns {
        let _ = write!(table, "<th>{}</th>", escape(column));
    }
    table.push_str("</tr></thead>\n<tbody>\n");
    for key in keys {
        let values: Vec<Option<&str>> = group
            .iter()
            .map(|result| {
                result
                    .settings
                    .iter()
                    .find(|(candidate, _)| candidate == key)
                    .map(|(_, value)| value.as_str())
            })
            .collect();
        let differs = values.iter().any(|value| *value != values[0]);
        let _ = write!(
            table,
            "<tr{}><th scope=\"row\">{}</th>",
            if differs { " class=\"differs\"" } else { "" },
            escape(key)
        );
        for value in values {
            let _ = write!(table, "<td>{}</td>", escape(value.unwrap_or(MISSING)));
        }
        table.push_str("</tr>\n");
    }
    table.push_str("</tbody>\n</table>\n");
    table
}

/// Column labels for the results of one workload: the broker names, with " (2)", " (3)" added
/// to repeats so two runs against the same broker stay apart in the legends.
fn column_labels(group: &[&WorkloadResult]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::with_capacity(group.len());
    for result in group {
        let base = if result.broker.is_empty() {
            "(unnamed broker)"
        } else {
            result.broker.as_str()
        };
        let mut label = base.to_string();
        let mut repeat = 1;
        while labels.contains(&label) {
            repeat += 1;
            label = format!("{base} ({repeat})");
        }
        labels.push(label);
    }
    labels
}

/// What a workload is called on the page: its name, or a placeholder for an empty one so its
/// heading and link are not blank.
fn workload_name(workload: &str) -> &str {
    if workload.is_empty() {
        "(unnamed workload)"
    } else {
        workload
    }
}

/// The distinct items in order of first appearance.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// How a line is drawn.
#[derive(Clone, Copy)]
struct Stroke {
    colour: &'static str,
    dashed: bool,
}

impl Stroke {
    fn solid(index: usize) -> Stroke {
        Stroke {
            colour: colour(index),
            dashed: false,
        }
    }

    fn dashed(index: usize) -> Stroke {
        Stroke {
            colour: colour(index),
            dashed: true,
        }
    }

    fn attributes(&self) -> String {
        let mut attributes = format!(
            "fill=\"none\" stroke=\"{}\" stroke-width=\"{LINE_WIDTH_PX}\" \
             stroke-linejoin=\"round\"",
            self.colour
        );
        if self.dashed {
            let _ = write!(attributes, " stroke-dasharray=\"{DASH_PATTERN}\"");
        }
        attributes
    }
}

/// One series of a chart, in data coordinates, with the non-finite points already dropped.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    stroke: Stroke,
}

impl Line {
    fn new(label: &str, mut points: Vec<(f64, f64)>, stroke: Stroke) -> Line {
        points.retain(|(x, y)| x.is_finite() && y.is_finite());
        // Stable, so points of equal x (a vertical step) keep their order.
        points.sort_by(|left, right| left.0.total_cmp(&right.0));
        Line {
            label: label.to_string(),
            points,
            stroke,
        }
    }
}

/// The points of a latency percentile plot: (position on the nines axis, µs). The curve when the
/// result has one, else the summary percentiles, else nothing.
fn latency_points(percentiles: &Percentiles) -> Vec<(f64, f64)> {
    let curve: Vec<(f64, u64)> = if !percentiles.curve.is_empty() {
        percentiles.curve.clone()
    } else if percentiles.count > 0 {
        vec![
            (50.0, percentiles.p50_us),
            (75.0, percentiles.p75_us),
            (95.0, percentiles.p95_us),
            (99.0, percentiles.p99_us),
            (99.9, percentiles.p999_us),
            (99.99, percentiles.p9999_us),
            (100.0, percentiles.max_us),
        ]
    } else {
        Vec::new()
    };
    curve
        .into_iter()
        .map(|(percentile, latency_us)| {
            (nines(percentile), (latency_us as f64).max(LATENCY_FLOOR_US))
        })
        .collect()
}

/// Where `percentile` (0..=100) sits on the nines axis: log10(1 / (1 - p)), so p90, p99 and
/// p99.9 are one unit apart; p100 and anything beyond p99.9999 are clamped to [`NINES_MAX`],
/// below p0 and NaN to 0.
fn nines(percentile: f64) -> f64 {
    if percentile.is_nan() {
        return 0.0;
    }
    let remaining = 1.0 - percentile / 100.0;
    if remaining <= 0.0 {
        return NINES_MAX;
    }
    (-remaining.log10()).clamp(0.0, NINES_MAX)
}

fn latency_chart(title: &str, lines: Vec<Line>) -> Chart {
    let mut ticks: Vec<(f64, String)> = NINES_TICKS
        .iter()
        .map(|(percentile, label)| (nines(*percentile), label.to_string()))
        .collect();
    ticks.push((NINES_MAX, "max".to_string()));
    let x = Axis {
        scale: Scale::Linear,
        min: 0.0,
        max: NINES_MAX,
        ticks,
        title: "percentile".to_string(),
    };
    let latencies = lines
        .iter()
        .flat_map(|line| &line.points)
        .map(|point| point.1);
    let (low, high) = latencies
        .fold(None, |range: Option<(f64, f64)>, latency| {
            Some(range.map_or((latency, latency), |(low, high)| {
                (low.min(latency), high.max(latency))
            }))
        })
        .unwrap_or(EMPTY_LATENCY_RANGE_US);
    Chart {
        title: title.to_string(),
        x,
        y: latency_axis(low, high),
        lines,
        band: None,
    }
}

fn throughput_chart(title: &str, lines: Vec<Line>, warmup_end_s: Option<f64>) -> Chart {
    let points = || lines.iter().flat_map(|line| &line.points);
    let time_low = points().map(|point| point.0).fold(0.0, f64::min);
    let time_high = points().map(|point| point.0).fold(0.0, f64::max);
    let rate_high = points().map(|point| point.1).fold(0.0, f64::max);
    let x = linear_axis(time_low, time_high, "seconds since start", significant);
    let band = warmup_end_s
        .filter(|end_s| end_s.is_finite() && *end_s > x.min)
        .map(|end_s| Band {
            from: x.min,
            to: end_s.min(x.max),
            label: "warm-up",
        });
    Chart {
        title: title.to_string(),
        x,
        y: linear_axis(0.0, rate_high, "messages/s", count_label),
        lines,
        band,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// One axis of a chart, in data units.
struct Axis {
    scale: Scale,
    min: f64,
    max: f64,
    ticks: Vec<(f64, String)>,
    title: String,
}

impl Axis {
    /// Where `value` falls from `min` (0) to `max` (1), clamped so a stray point stays inside the
    /// plot area.
    fn fraction(&self, value: f64) -> f64 {
        let (value, min, max) = match self.scale {
            Scale::Linear => (value, self.min, self.max),
            Scale::Log => (
                value.max(self.min).log10(),
                self.min.log10(),
                self.max.log10(),
            ),
        };
        let fraction = (value - min) / (max - min);
        if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A linear axis from `low` to `high` widened to whole ticks of 1, 2 or 5 × 10^n; an empty or
/// invalid range becomes one of width 1 so nothing divides by zero.
fn linear_axis(low: f64, high: f64, title: &str, label: fn(f64) -> String) -> Axis {
    let low = if low.is_finite() { low } else { 0.0 };
    let high = if high.is_finite() && high > low {
        high
    } else {
        low + 1.0
    };
    let step = nice_step((high - low) / LINEAR_TICKS_TARGET);
    let min = (low / step).floor() * step;
    let max = (high / step).ceil() * step;
    let steps = ((max - min) / step).round() as usize;
    let ticks = (0..=steps)
        .map(|index| {
            let value = min + index as f64 * step;
            (value, label(value))
        })
        .collect();
    Axis {
        scale: Scale::Linear,
        min,
        max,
        ticks,
        title: title.to_string(),
    }
}

/// The smallest of 1, 2, 5 × 10^n that is at least `raw` (1 for a non-positive or invalid
/// `raw`).
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let factor = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    factor * magnitude
}

/// A log axis of latencies in µs from the decade at or below `low_us` to the one at or above
/// `high_us`, at least one decade wide.
fn latency_axis(low_us: f64, high_us: f64) -> Axis {
    let low_us = if low_us.is_finite() {
        low_us.max(LATENCY_FLOOR_US)
    } else {
        LATENCY_FLOOR_US
    };
    let high_us = if high_us.is_finite() {
        high_us.max(low_us)
    } else {
        low_us
    };
    let decade_min = (low_us.log10() + LOG_DECADE_EPSILON).floor();
    let mut decade_max = (high_us.log10() - LOG_DECADE_EPSILON).ceil();
    if decade_max <= decade_min {
        decade_max = decade_min + 1.0;
    }
    let multiples: &[f64] = if decade_max - decade_min <= LOG_SUBDIVIDED_DECADES_MAX {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let max = 10f64.powf(decade_max);
    let mut ticks = Vec::new();
    for decade in (decade_min as i32)..=(decade_max as i32) {
        for multiple in multiples {
            let value = multiple * 10f64.powi(decade);
            if value <= max * (1.0 + LOG_DECADE_EPSILON) {
                ticks.push((value, latency_label(value)));
            }
        }
    }
    Axis {
        scale: Scale::Log,
        min: 10f64.powf(decade_min),
        max,
        ticks,
        title: "latency".to_string(),
    }
}

/// A shaded stretch of the x axis, in data units.
struct Band {
    from: f64,
    to: f64,
    label: &'static str,
}

struct Chart {
    title: String,
    x: Axis,
    y: Axis,
    lines: Vec<Line>,
    band: Option<Band>,
}

impl Chart {
    fn render(&self) -> String {
        let legend = legend_layout(&self.lines);
        let legend_rows = legend.iter().map(|entry| entry.0 + 1).max().unwrap_or(0);
        let height = CHART_HEIGHT_PX + legend_rows as f64 * LEGEND_ROW_PX + LEGEND_PADDING_PX;
        let left = MARGIN_LEFT_PX;
        let right = CHART_WIDTH_PX - MARGIN_RIGHT_PX;
        let top = MARGIN_TOP_PX;
        let bottom = CHART_HEIGHT_PX - MARGIN_BOTTOM_PX;
        let x_of = |value: f64| left + self.x.fraction(value) * (right - left);
        let y_of = |value: f64| bottom - self.y.fraction(value) * (bottom - top);
        let title = escape(&self.title);

        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH_PX}\" \
             height=\"{height}\" viewBox=\"0 0 {CHART_WIDTH_PX} {height}\" role=\"img\" \
             font-family=\"sans-serif\" font-size=\"{FONT_SIZE_PX}\">\n<title>{title}</title>\n"
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"{TITLE_FONT_SIZE_PX}\" \
             font-weight=\"bold\">{title}</text>",
            CHART_WIDTH_PX / 2.0,
            MARGIN_TOP_PX / 2.0 + TITLE_FONT_SIZE_PX / 2.0,
        );
        let _ = writeln!(
            svg,
            "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
             fill=\"#ffffff\" stroke=\"#bbbbbb\"/>",
            right - left,
            bottom - top,
        );
        if let Some(band) = &self.band {
            let from = x_of(band.from);
            let to = x_of(band.to);
            let _ = writeln!(
                svg,
                "<rect x=\"{from:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 fill=\"#000000\" fill-opacity=\"0.07\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666666\">{}</text>",
                to - from,
                bottom - top,
                (from + to) / 2.0,
                top + FONT_SIZE_PX + 2.0,
                escape(band.label),
            );
        }
        for (value, label) in &self.y.ticks {
            let y = y_of(*value);
            let _ = writeln!(
                svg,
                "<line x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" \
                 stroke=\"#e6e6e6\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - FONT_SIZE_PX / 2.0,
                y + FONT_SIZE_PX / 3.0,
                escape(label),
            );
        }
        for (value, label) in &self.x.ticks {
            let x = x_of(*value);
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" \
                 stroke=\"#e6e6e6\"/>\n<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                bottom + FONT_SIZE_PX + 4.0,
                escape(label),
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            (left + right) / 2.0,
            bottom + 2.0 * FONT_SIZE_PX + 12.0,
            escape(&self.x.title),
        );
        let y_title_x = FONT_SIZE_PX + 2.0;
        let y_title_y = (top + bottom) / 2.0;
        let _ = writeln!(
            svg,
            "<text x=\"{y_title_x:.1}\" y=\"{y_title_y:.1}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 {y_title_x:.1} {y_title_y:.1})\">{}</text>",
            escape(&self.y.title),
        );

        for line in self.lines.iter().filter(|line| !line.points.is_empty()) {
            let points: Vec<String> = line
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline {} points=\"{}\"><title>{}</title></polyline>",
                line.stroke.attributes(),
                points.join(" "),
                escape(&line.label),
            );
            if let [(x, y)] = line.points[..] {
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{POINT_RADIUS_PX}\" fill=\"{}\"/>",
                    x_of(x),
                    y_of(y),
                    line.stroke.colour,
                );
            }
        }
        if self.lines.iter().all(|line| line.points.is_empty()) {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666666\">no samples</text>",
                (left + right) / 2.0,
                (top + bottom) / 2.0,
            );
        }

        for (line, (row, offset)) in self.lines.iter().zip(&legend) {
            let y = CHART_HEIGHT_PX + *row as f64 * LEGEND_ROW_PX;
            let x = left + offset;
            let mut label = legend_label(&line.label);
            if line.points.is_empty() {
                label.push_str(" (no samples)");
            }
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" {}/>\n\
                 <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
                y - FONT_SIZE_PX / 3.0,
                x + LEGEND_SWATCH_PX,
                y - FONT_SIZE_PX / 3.0,
                line.stroke.attributes(),
                x + LEGEND_SWATCH_PX + FONT_SIZE_PX / 2.0,
                escape(&label),
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The legend label of a series: cut to [`LEGEND_LABEL_CHARS_MAX`] characters.
fn legend_label(label: &str) -> String {
    if label.chars().count() <= LEGEND_LABEL_CHARS_MAX {
        return label.to_string();
    }
    let mut cut: String = label.chars().take(LEGEND_LABEL_CHARS_MAX - 1).collect();
    cut.push('…');
    cut
}

/// (row, x offset from the plot's left edge) of each legend entry: entries flow left to right
/// and wrap when the next would run past the chart's right margin.
fn legend_layout(lines: &[Line]) -> Vec<(usize, f64)> {
    let available = CHART_WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
    let mut layout = Vec::with_capacity(lines.len());
    let mut row = 0;
    let mut offset = 0.0;
    for line in lines {
        // " (no samples)" is 13 characters.
        let chars =
            legend_label(&line.label).chars().count() + if line.points.is_empty() { 13 } else { 0 };
        let width =
            LEGEND_SWATCH_PX + FONT_SIZE_PX / 2.0 + chars as f64 * CHAR_WIDTH_PX + LEGEND_GAP_PX;
        if offset > 0.0 && offset + width > available {
            row += 1;
            offset = 0.0;
        }
        layout.push((row, offset));
        offset += width;
    }
    layout
}

/// `value` rounded to [`SIGNIFICANT_DIGITS`] significant digits.
fn round_significant(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = value.abs().log10().floor();
    let scale = 10f64.powf(f64::from(SIGNIFICANT_DIGITS) - 1.0 - magnitude);
    let rounded = (value * scale).round() / scale;
    if rounded.is_finite() {
        rounded
    } else {
        value
    }
}

/// `value` to [`SIGNIFICANT_DIGITS`] significant digits without trailing zeros: 1.20 → "1.2",
/// 350 → "350", 0.000123 → "0.000123"; [`MISSING`] for NaN and infinities.
fn significant(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    let rounded = round_significant(value);
    if rounded == 0.0 {
        return "0".to_string();
    }
    let magnitude = rounded.abs().log10().floor() as i32;
    let decimals = (SIGNIFICANT_DIGITS - 1 - magnitude).max(0) as usize;
    let text = format!("{rounded:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `value` in the largest of `units` (each [`UNIT_STEP`] times the one before) that keeps it at
/// least 1, to [`SIGNIFICANT_DIGITS`] significant digits.
fn scaled(value: f64, units: &[&str], separator: &str) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    let mut value = value;
    let mut unit = 0;
    // Compare the rounded value so 999 999 becomes "1M", not "1000k".
    while unit + 1 < units.len() && round_significant(value.abs()) >= UNIT_STEP {
        value /= UNIT_STEP;
        unit += 1;
    }
    let number = significant(value);
    if units[unit].is_empty() {
        number
    } else {
        format!("{number}{separator}{}", units[unit])
    }
}

/// A count for an axis: 1_200_000 → "1.2M", 350_000 → "350k".
fn count_label(value: f64) -> String {
    scaled(value, &COUNT_UNITS, "")
}

/// A latency in µs: 850 → "850 µs", 1500 → "1.5 ms", 2_000_000 → "2 s".
fn latency_label(value_us: f64) -> String {
    scaled(value_us, &LATENCY_UNITS, " ")
}

/// `value` rounded to a whole number with thousands separators (1,234,567), for the table where
/// every digit of a count should be visible.
fn grouped(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut text = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value.round() < 0.0 {
        text.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// A Unix time in milliseconds as "YYYY-MM-DD hh:mm:ss UTC" (Howard Hinnant's
/// `civil_from_days`); [`MISSING`] for 0, which is what an unset start time reads as.
fn utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return MISSING.to_string();
    }
    let seconds = unix_ms / MS_PER_S;
    let seconds_of_day = seconds % SECONDS_PER_DAY;
    // Days since 0000-03-01, so the leap day is the last day of the (March-based) year.
    let days = (seconds / SECONDS_PER_DAY) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        seconds_of_day / 3_600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::result::{ErrorCount, Throughput};

    /// Checks that every tag opened in `markup` is closed, in order, and that no `<` or `&`
    /// appears outside a tag or entity: the parts of well-formedness a bug here could break.
    fn assert_well_formed(markup: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = markup;
        while let Some(start) = rest.find(['<', '&']) {
            let after = &rest[start..];
            if let Some(entity_rest) = after.strip_prefix('&') {
                let entity_end = after.find(';').expect("entity ends with ;");
                let entity = &after[..=entity_end];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity),
                    "unexpected entity {entity}"
                );
                rest = entity_rest;
                continue;
            }
            let end = after.find('>').expect("tag ends with >");
            let tag = &after[1..end];
            assert!(!tag.contains('<'), "< inside tag {tag}");
            rest = &after[end + 1..];
            if tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = tag
                .trim_start_matches('/')
                .split([' ', '\n'])
                .next()
                .expect("tag name");
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(closing.trim()), "mismatched </{closing}>");
            } else {
                open.push(name);
            }
        }
        assert!(open.is_empty(), "unclosed tags {open:?}");
    }

    fn assert_no_non_finite(markup: &str) {
        assert!(!markup.contains("NaN"), "NaN in output");
        assert!(!markup.contains("inf"), "inf in output");
    }

    fn percentiles(scale_us: u64) -> Percentiles {
        let mut histogram = crate::measure::new_histogram();
        for value in 1..=10_000u64 {
            histogram.saturating_record(scale_us + value * scale_us / 1_000);
        }
        Percentiles::of(&histogram)
    }

    fn sample_result(broker: &str, workload: &str, rate: f64) -> WorkloadResult {
        let timeline = (0..20)
            .map(|second| TimelineSample {
                t_s: f64::from(second + 1),
                warmup: second < 5,
                produced_messages_per_s: rate * (1.0 + f64::from(second % 3) / 10.0),
                produced_mb_per_s: rate / 10_000.0,
                consumed_messages_per_s: rate * 0.9,
                consumed_mb_per_s: rate / 11_000.0,
                broker_cpu_percent: Some(150.0),
                broker_rss_kib: Some(200_000),
            })
            .collect();
        WorkloadResult {
            workload: workload.to_string(),
            broker: broker.to_string(),
            settings: vec![
                ("partitions".to_string(), "16".to_string()),
                ("message_bytes".to_string(), "100".to_string()),
            ],
            started_unix_ms: 1_700_000_000_000,
            warmup_s: 5.0,
            duration_s: 15.0,
            produced: Throughput {
                messages: (rate * 15.0) as u64,
                bytes: (rate * 1500.0) as u64,
                messages_per_s: rate,
                mb_per_s: rate / 10_000.0,
            },
            consumed: Throughput {
                messages: (rate * 15.0) as u64,
                bytes: (rate * 1500.0) as u64,
                messages_per_s: rate,
                mb_per_s: rate / 10_000.0,
            },
            publish_latency: percentiles(1_000),
            end_to_end_latency: percentiles(3_000),
            timeline,
            broker_process: Some(ProcessUsage {
                pid: 42,
                cpu_seconds: 12.5,
                cpu_seconds_per_gb: 8.3,
                rss_start_kib: 100_000,
                rss_end_kib: 180_000,
                rss_max_kib: 200_000,
            }),
            client_cpu_seconds: 9.0,
            errors: vec![ErrorCount {
                what: "request timed out".to_string(),
                count: 2,
            }],
            verification: Some(Verification {
                acknowledged: 1000,
                read_back: 1000,
                expired: 0,
                lost: 0,
                duplicates: 0,
                out_of_order: 0,
            }),
        }
    }

    #[test]
    fn broker_names_settings_and_titles_are_escaped() {
        let mut result = sample_result("<script>alert('x')</script>", "w&<1>", 1000.0);
        result
            .settings
            .push(("\"key\"".to_string(), "<img src=x onerror=1>".to_string()));
        result.errors[0].what = "<b>bold</b>".to_string();
        let page = html("<title> & \u{0}", &[result]);
        assert!(!page.contains("<script"), "unescaped script tag");
        assert!(!page.contains("<img"), "unescaped img tag");
        assert!(!page.contains("<b>"), "unescaped error kind");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(page.contains("&quot;key&quot;"));
        assert!(page.contains("w&amp;&lt;1&gt;"));
        assert!(!page.contains('\u{0}'), "control character passed through");
        assert_well_formed(&page);
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape("a<b>&\"c'\u{7}\td"),
            "a&lt;b&gt;&amp;&quot;c&#39;\u{fffd}\td"
        );
    }

    #[test]
    fn empty_and_degenerate_inputs_give_valid_pages_without_non_finite_numbers() {
        let single_point = WorkloadResult {
            timeline: vec![TimelineSample {
                t_s: 0.0,
                warmup: true,
                ..TimelineSample::default()
            }],
            ..WorkloadResult::default()
        };
        let identical = Percentiles {
            count: 3,
            p50_us: 7,
            p75_us: 7,
            p95_us: 7,
            p99_us: 7,
            p999_us: 7,
            p9999_us: 7,
            max_us: 7,
            curve: vec![(0.0, 7), (50.0, 7), (100.0, 7)],
            ..Percentiles::default()
        };
        let broken = WorkloadResult {
            workload: "broken".to_string(),
            produced: Throughput {
                messages_per_s: f64::NAN,
                mb_per_s: f64::INFINITY,
                ..Default::default()
            },
            warmup_s: f64::NEG_INFINITY,
            publish_latency: identical.clone(),
            end_to_end_latency: Percentiles {
                count: 1,
                curve: vec![(100.0, 0)],
                ..Percentiles::default()
            },
            timeline: vec![
                TimelineSample {
                    t_s: f64::NAN,
                    produced_messages_per_s: 5.0,
                    ..TimelineSample::default()
                },
                TimelineSample {
                    t_s: 3.0,
                    produced_messages_per_s: f64::INFINITY,
                    ..TimelineSample::default()
                },
            ],
            ..WorkloadResult::default()
        };
        let pages = [
            html("empty", &[]),
            html("default", &[WorkloadResult::default()]),
            html("single", &[single_point]),
            html("broken", &[broken]),
            latency_svg("none", &[]),
            latency_svg("empty", &[("a".to_string(), &Percentiles::default())]),
            latency_svg("identical", &[("a".to_string(), &identical)]),
            throughput_svg("none", &[]),
            throughput_svg("empty", &[("a".to_string(), Vec::new())]),
            throughput_svg("single", &[("a".to_string(), vec![(0.0, 0.0)])]),
            throughput_svg(
                "flat",
                &[("a".to_string(), vec![(2.0, 5.0), (2.0, 5.0), (2.0, 5.0)])],
            ),
            throughput_svg(
                "non-finite",
                &[(
                    "a".to_string(),
                    vec![(f64::NAN, 1.0), (1.0, f64::INFINITY), (-f64::INFINITY, 2.0)],
                )],
            ),
        ];
        for page in &pages {
            assert_no_non_finite(page);
            assert_well_formed(page);
        }
        assert!(pages[0].contains("No results."));
        assert!(pages[5].contains("no samples"));
        // A single point is drawn as a dot, since a one-point polyline is invisible.
        assert!(pages[9].contains("<circle"));
    }

    #[test]
    fn one_polyline_per_series_with_samples() {
        let fast = percentiles(100);
        let slow = percentiles(10_000);
        let empty = Percentiles::default();
        let svg = latency_svg(
            "latency",
            &[
                ("fast".to_string(), &fast),
                ("slow".to_string(), &slow),
                (
                    "summary only".to_string(),
                    &Percentiles {
                        curve: Vec::new(),
                        ..fast.clone()
                    },
                ),
                ("empty".to_string(), &empty),
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<svg").count(), 1);
        for label in ["fast", "slow", "summary only", "empty (no samples)"] {
            assert!(
                svg.contains(&format!(">{label}</text>")),
                "legend lacks {label}"
            );
        }
        let svg = throughput_svg(
            "throughput",
            &[
                ("a".to_string(), vec![(1.0, 10.0), (2.0, 20.0)]),
                ("b".to_string(), vec![(1.0, 30.0), (2.0, 40.0)]),
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_well_formed(&svg);
    }

    #[test]
    fn page_groups_results_by_workload() {
        let results = [
            sample_result("ringlog", "produce", 1_200_000.0),
            sample_result("tansu", "consume", 300_000.0),
            sample_result("tansu", "produce", 350_000.0),
        ];
        let page = html("comparison", &results);
        assert_well_formed(&page);
        assert_no_non_finite(&page);
        assert_eq!(page.matches("<h2>").count(), 2);
        let produce = page.find("<h2>produce</h2>").expect("produce heading");
        let consume = page.find("<h2>consume</h2>").expect("consume heading");
        assert!(produce < consume, "workloads out of first-appearance order");
        // Two charts per workload, each with a line per broker and direction.
        assert_eq!(page.matches("<svg").count(), 4);
        assert_eq!(page.matches("<polyline").count(), 8 + 4);
        assert!(page.contains("warm-up</text>"), "warm-up not shaded");
        assert!(page.contains("<td class=\"number\">1,200,000</td>"));
        assert!(page.contains("2023-11-14 22:13:20 UTC"));
        assert!(page.contains("request timed out: 2"));
        // tansu keeps its colour (the second) in a workload ringlog did not run.
        let consume_section = &page[consume..];
        assert!(!consume_section.contains(&format!("stroke=\"{}\"", PALETTE[0])));
        assert!(consume_section.contains(&format!("stroke=\"{}\"", PALETTE[1])));
    }

    #[test]
    fn repeated_brokers_get_distinct_columns_and_differing_settings_are_marked() {
        let first = sample_result("ringlog", "produce", 1000.0);
        let mut second = sample_result("ringlog", "produce", 2000.0);
        second.settings[0].1 = "32".to_string();
        let mut lossy = sample_result("", "produce", 3000.0);
        lossy.verification = Some(Verification {
            lost: 3,
            ..Verification::default()
        });
        let page = html("repeats", &[first, second, lossy]);
        assert!(page.contains("<th>ringlog (2)</th>"));
        assert!(page.contains("<th>(unnamed broker)</th>"));
        assert!(page.contains("<tr class=\"differs\"><th scope=\"row\">partitions</th>"));
        assert!(page.contains("<tr><th scope=\"row\">message_bytes</th>"));
        assert!(page.contains("<td class=\"number bad\">3</td>"));
    }

    #[test]
    fn nines_axis_is_monotone_and_one_unit_per_nine() {
        let percentiles = [
            f64::NEG_INFINITY,
            -5.0,
            0.0,
            25.0,
            50.0,
            90.0,
            99.0,
            99.9,
            99.99,
            99.999,
            99.9999,
            99.99999,
            100.0,
            150.0,
        ];
        let positions: Vec<f64> = percentiles.iter().map(|p| nines(*p)).collect();
        for pair in positions.windows(2) {
            assert!(pair[0] <= pair[1], "not monotone: {positions:?}");
        }
        assert!(nines(99.0) > nines(90.0));
        assert!(nines(99.9) > nines(99.0));
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.999) - 5.0).abs() < 1e-6);
        assert!((nines(50.0) - 2f64.log10()).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(nines(100.0), NINES_MAX);
        assert_eq!(nines(f64::NAN), 0.0);
        assert!(NINES_TICKS
            .iter()
            .all(|(percentile, _)| nines(*percentile) < NINES_MAX));
    }

    #[test]
    fn higher_latency_is_drawn_higher_and_further_right() {
        let svg = latency_svg(
            "one",
            &[(
                "a".to_string(),
                &Percentiles {
                    count: 2,
                    curve: vec![(50.0, 100), (99.0, 10_000)],
                    ..Percentiles::default()
                },
            )],
        );
        let points = svg
            .split("points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("polyline points");
        let coordinates: Vec<(f64, f64)> = points
            .split(' ')
            .map(|pair| {
                let (x, y) = pair.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(coordinates.len(), 2);
        assert!(coordinates[1].0 > coordinates[0].0, "p99 not right of p50");
        assert!(
            coordinates[1].1 < coordinates[0].1,
            "10 ms not above 100 µs"
        );
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        let counts = [
            (0.0, "0"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (999.0, "999"),
            (1_000.0, "1k"),
            (1_234.0, "1.23k"),
            (350_000.0, "350k"),
            (999_999.0, "1M"),
            (1_200_000.0, "1.2M"),
            (2_500_000_000.0, "2.5G"),
            (f64::NAN, MISSING),
        ];
        for (value, expected) in counts {
            assert_eq!(count_label(value), expected, "count {value}");
        }
        let latencies = [
            (1.0, "1 µs"),
            (850.0, "850 µs"),
            (1_000.0, "1 ms"),
            (1_500.0, "1.5 ms"),
            (12_345.0, "12.3 ms"),
            (2_000_000.0, "2 s"),
            (f64::INFINITY, MISSING),
        ];
        for (value, expected) in latencies {
            assert_eq!(latency_label(value), expected, "latency {value}");
        }
        let significants = [
            (0.000_123_4, "0.000123"),
            (1.2, "1.2"),
            (8.333, "8.33"),
            (999.7, "1000"),
            (123_456.0, "123000"),
        ];
        for (value, expected) in significants {
            assert_eq!(significant(value), expected, "significant {value}");
        }
        let groups = [
            (0.0, "0"),
            (999.0, "999"),
            (1_000.0, "1,000"),
            (1_234_567.4, "1,234,567"),
            (-12_345.0, "-12,345"),
            (f64::NAN, MISSING),
        ];
        for (value, expected) in groups {
            assert_eq!(grouped(value), expected, "grouped {value}");
        }
        assert_eq!(utc(0), MISSING);
        assert_eq!(utc(1_000), "1970-01-01 00:00:01 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn axes_cover_their_data_with_ordered_ticks() {
        let axis = linear_axis(0.0, 1_234_567.0, "rate", count_label);
        assert_eq!(axis.min, 0.0);
        assert!(axis.max >= 1_234_567.0);
        assert!(axis.ticks.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(axis.ticks.len() <= 2 * LINEAR_TICKS_TARGET as usize);
        assert_eq!(axis.ticks[1].1, "500k");
        let flat = linear_axis(5.0, 5.0, "flat", significant);
        assert!(flat.max > flat.min);
        let latency = latency_axis(7.0, 7.0);
        assert_eq!((latency.min, latency.max), (1.0, 10.0));
        let wide = latency_axis(80.0, 25_000.0);
        assert_eq!((wide.min, wide.max), (10.0, 100_000.0));
        assert_eq!(
            wide.ticks
                .iter()
                .map(|tick| tick.1.as_str())
                .collect::<Vec<_>>(),
            ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms"]
        );
        let exact = latency_axis(100.0, 1_000.0);
        assert_eq!((exact.min, exact.max), (100.0, 1_000.0));
        assert_eq!(exact.ticks.len(), 4, "100, 200, 500 µs and 1 ms");
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(120.0), 200.0);
    }

    #[test]
    fn long_legends_wrap_and_are_cut() {
        let long = "x".repeat(200);
        let series: Vec<(String, Vec<(f64, f64)>)> = (0..6)
            .map(|index| (format!("{long}{index}"), vec![(0.0, 1.0), (1.0, 2.0)]))
            .collect();
        let svg = throughput_svg("long", &series);
        // The legend shows the cut label; the full one stays in the line's tooltip.
        let cut = format!("{}…</text>", "x".repeat(LEGEND_LABEL_CHARS_MAX - 1));
        assert_eq!(svg.matches(&cut).count(), 6, "labels not cut");
        assert!(!svg.contains(&format!("{long}0</text>")), "label not cut");
        let short = throughput_svg("short", &series[..1]);
        let height = |svg: &str| -> f64 {
            svg.split("height=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|value| value.parse().ok())
                .expect("svg height")
        };
        assert!(height(&svg) > height(&short), "legend did not wrap");
    }
}
