//! A minimal JSON value and writer for `--json` outputs. The outputs are small trees of numbers
//! and strings, so a few lines here save the workspace a serde dependency.

use std::fmt::{self, Write as _};

/// A JSON value. Objects keep their keys in insertion order, so output is stable and diffable.
#[derive(Clone, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(&'static str, Json)>),
}

impl Json {
    pub fn str(value: impl Into<String>) -> Json {
        Json::Str(value.into())
    }

    /// An object from `(key, value)` pairs.
    pub fn object(fields: impl IntoIterator<Item = (&'static str, Json)>) -> Json {
        Json::Object(fields.into_iter().collect())
    }

    pub fn option(value: Option<Json>) -> Json {
        value.unwrap_or(Json::Null)
    }
}

impl From<i64> for Json {
    fn from(value: i64) -> Json {
        Json::Int(value)
    }
}

impl From<i32> for Json {
    fn from(value: i32) -> Json {
        Json::Int(i64::from(value))
    }
}

impl From<u64> for Json {
    fn from(value: u64) -> Json {
        Json::UInt(value)
    }
}

impl From<u32> for Json {
    fn from(value: u32) -> Json {
        Json::UInt(u64::from(value))
    }
}

impl From<usize> for Json {
    fn from(value: usize) -> Json {
        Json::UInt(value as u64)
    }
}

impl From<bool> for Json {
    fn from(value: bool) -> Json {
        Json::Bool(value)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => formatter.write_str("null"),
            Json::Bool(value) => write!(formatter, "{value}"),
            Json::Int(value) => write!(formatter, "{value}"),
            Json::UInt(value) => write!(formatter, "{value}"),
            Json::Str(value) => write_string(formatter, value),
            Json::Array(items) => {
                formatter.write_char('[')?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        formatter.write_char(',')?;
                    }
                    write!(formatter, "{item}")?;
                }
                formatter.write_char(']')
            }
            Json::Object(fields) => {
                formatter.write_char('{')?;
                for (index, (key, value)) in fields.iter().enumerate() {
                    if index > 0 {
                        formatter.write_char(',')?;
                    }
                    write_string(formatter, key)?;
                    write!(formatter, ":{value}")?;
                }
                formatter.write_char('}')
            }
        }
    }
}

fn write_string(formatter: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    formatter.write_char('"')?;
    for character in value.chars() {
        match character {
            '"' => formatter.write_str("\\\"")?,
            '\\' => formatter.write_str("\\\\")?,
            '\n' => formatter.write_str("\\n")?,
            '\r' => formatter.write_str("\\r")?,
            '\t' => formatter.write_str("\\t")?,
            control if u32::from(control) < 0x20 => {
                write!(formatter, "\\u{:04x}", u32::from(control))?
            }
            other => formatter.write_char(other)?,
        }
    }
    formatter.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_values_and_escapes_strings() {
        let value = Json::object([
            ("name", Json::str("a \"b\"\n\u{1}")),
            (
                "items",
                Json::Array(vec![Json::from(1_i64), Json::from(2_u64), Json::Null]),
            ),
            ("ok", Json::from(true)),
        ]);
        assert_eq!(
            value.to_string(),
            r#"{"name":"a \"b\"\n\u0001","items":[1,2,null],"ok":true}"#
        );
    }
}
