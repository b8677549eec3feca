//! How client subcommands print: aligned tables for people, JSON for programs.

use std::io::Write;

use serde::Serialize;

use super::{CliError, CliResult};

/// Columns separated by this many spaces, as `column -t` and rpk do.
const COLUMN_GAP: usize = 2;

/// A table with a header row, printed with every column as wide as its widest cell.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|cell| cell.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<String> = self.header.iter().map(|cell| cell.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                text.push_str(cell);
                if index < last {
                    let pad = width - cell.chars().count() + COLUMN_GAP;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push('\n');
        }
        text
    }
}

/// Writes `text` to stdout. A closed pipe (`| head`) is not an error worth reporting.
pub fn print(text: &str) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(CliError::failed(format!("writing to stdout: {error}"))),
    }
}

/// Prints `value` as pretty JSON followed by a newline.
pub fn print_json(value: &impl Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::failed(format!("encoding JSON: {error}")))?;
    print(&(text + "\n"))
}

/// A list of node ids as Kafka's tools print them: `1,2,3`.
pub fn ids(ids: impl IntoIterator<Item = i32>) -> String {
    ids.into_iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut table = Table::new(&["NAME", "PARTITIONS"]);
        table.row(vec!["orders".into(), "3".into()]);
        table.row(vec!["a".into(), "12".into()]);
        assert_eq!(
            table.render(),
            "NAME    PARTITIONS\norders  3\na       12\n"
        );
    }
}
