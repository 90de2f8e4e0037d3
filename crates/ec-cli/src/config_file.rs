//! Locating an error in a TOML config file: the dotted key whose key or
//! value contains the byte offset that the TOML error points at, such as
//! `domain."example.com".max_outbound_connections`.
//!
//! The `toml` crate's errors give the line, the column and the text around
//! them, but not the key, and a line such as `max_outbound_connections =
//! "ten"` does not show which table it is in.

use std::ops::Range;

use toml_edit::{ImDocument, TableLike};

/// Returns the dotted key path at byte `offset` of the TOML `text`, or
/// `None` when the text does not parse or no key or value covers the
/// offset.
pub fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let document = ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    if find_key(document.as_table(), offset, &mut path) {
        Some(path.join("."))
    } else {
        None
    }
}

/// Pushes onto `path` the keys that lead from `table` to the key or value
/// that contains `offset`, and returns whether one does.
fn find_key(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    let covers = |span: Option<Range<usize>>| span.is_some_and(|span| span.contains(&offset));
    for (name, item) in table.iter() {
        path.push(key_segment(name));
        // Look inside a table first, so that the innermost key wins over
        // the table whose span contains it.
        if let Some(inner) = item.as_table_like() {
            if find_key(inner, offset, path) {
                return true;
            }
        }
        let key_span = table.get_key_value(name).and_then(|(key, _)| key.span());
        if covers(key_span) || (item.is_value() && covers(item.span())) {
            return true;
        }
        path.pop();
    }
    false
}

/// Writes a key as TOML does in a dotted key: bare when it can be, quoted
/// otherwise (a domain name such as `example.com` contains dots).
fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the key path at the first occurrence of `needle` in `text`.
    fn key_at(text: &str, needle: &str) -> Option<String> {
        let offset = text.find(needle).expect("needle in text");
        key_path_at(text, offset)
    }

    #[test]
    fn value_in_table() {
        let text = "[global]\nehlo_name = \"a.example\"\nmax_outbound_connections = \"ten\"\n";
        assert_eq!(
            key_at(text, "\"ten\"").as_deref(),
            Some("global.max_outbound_connections")
        );
    }

    #[test]
    fn quoted_table_name() {
        let text = "[domain.\"example.com\"]\nmax_outbound_connections = -1\n";
        assert_eq!(
            key_at(text, "-1").as_deref(),
            Some("domain.\"example.com\".max_outbound_connections")
        );
    }

    #[test]
    fn inline_and_dotted_tables() {
        let inline = "[global]\nretry = { interval = \"5 parsecs\" }\n";
        assert_eq!(
            key_at(inline, "\"5 parsecs\"").as_deref(),
            Some("global.retry.interval")
        );
        let dotted = "[global]\ntimeouts.connect = \"soon\"\n";
        assert_eq!(
            key_at(dotted, "\"soon\"").as_deref(),
            Some("global.timeouts.connect")
        );
    }

    #[test]
    fn key_itself() {
        let text = "[global]\nmax_connectionz = 3\n";
        assert_eq!(
            key_at(text, "max_connectionz").as_deref(),
            Some("global.max_connectionz")
        );
    }

    #[test]
    fn nothing_at_offset() {
        assert_eq!(key_path_at("[global]\n\n\nchunking = true\n", 9), None);
        assert_eq!(key_path_at("not [ toml", 0), None);
    }
}
