//! A large inventory parsed in pieces: the `[devices.NAME]` tables cut into chunks of about
//! [`CHUNK_BYTES`], each parsed on its own (on every core), then merged.
//!
//! Why: the TOML parser builds a tree of the whole document before serde sees it, and for 100,000 devices
//! that tree peaked at about 620 MiB for a 22 MB file, six times what the loaded inventory holds; parsing a
//! chunk at a time keeps only one chunk's tree per core, and the chunks parse in parallel.
//!
//! The cut is an optimisation, never a second grammar: it is taken only where it cannot change the meaning
//! (a line that opens a `[devices.NAME]` table at the top level, outside any string or array), and anything
//! it is not sure of (an array of tables, a bare `[devices]`, a root key that could define devices, a
//! device in two chunks, any error at all) falls back to parsing the whole document, whose result and
//! error messages are then the answer.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::provision::inventory::{DeviceDoc, InventoryDoc};

/// Below this size the whole document is parsed at once.
pub const MIN_CHUNKED_BYTES: usize = 1 << 20;
/// About how much device text one chunk holds.
const CHUNK_BYTES: usize = 256 * 1024;

/// The document parsed in chunks, or `None` when it must be parsed whole (small, unusual, or broken).
pub fn parse(text: &str) -> Option<InventoryDoc> {
    if text.len() < MIN_CHUNKED_BYTES {
        return None;
    }
    let split = split(text)?;
    let mut doc: InventoryDoc = toml::from_str(&split.rest).ok()?;
    if !doc.devices.is_empty() {
        return None;
    }
    let chunks = chunks(text, &split.devices);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(chunks.len());
    let per_thread = chunks.len().div_ceil(threads.max(1));
    let parsed: Vec<Option<BTreeMap<String, DeviceDoc>>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .chunks(per_thread.max(1))
            .map(|group| s.spawn(move || group.iter().map(|c| parse_devices(c)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    for devices in parsed {
        for (name, device) in devices? {
            // A table defined twice is an error of the whole document: let the whole parse word it.
            if doc.devices.insert(name, device).is_some() {
                return None;
            }
        }
    }
    Some(doc)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Devices {
    devices: BTreeMap<String, DeviceDoc>,
}

fn parse_devices(chunk: &str) -> Option<BTreeMap<String, DeviceDoc>> {
    toml::from_str::<Devices>(chunk).ok().map(|d| d.devices)
}

/// The document cut in two: the device tables (byte ranges, each from a `[devices…]` header to the next
/// top-level header, and whether that header opens a device, `[devices.NAME]`, rather than one of its
/// sub-tables) and everything else, in order.
struct Split {
    devices: Vec<(std::ops::Range<usize>, bool)>,
    rest: String,
}

/// Where each top-level table header starts, with its keys; `None` when the document holds anything the
/// cut could misread.
fn split(text: &str) -> Option<Split> {
    let mut lexer = Lexer::default();
    // (offset, its first key is `devices`, it has exactly two keys) of every top-level header.
    let mut headers: Vec<(usize, bool, bool)> = Vec::new();
    let mut offset = 0;
    let mut root = true;
    for line in text.split_inclusive('\n') {
        if lexer.at_top_level() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                let keys = header_keys(trimmed)?;
                let devices = keys.first().is_some_and(|k| k == "devices");
                if devices && keys.len() < 2 {
                    return None;
                }
                headers.push((offset, devices, keys.len() == 2));
                root = false;
            } else if root && trimmed.starts_with(['d', '"', '\'']) {
                // A root key `devices…` (dotted, or an inline table) would define devices outside a header.
                let key = trimmed.trim_start_matches(['"', '\'']);
                if key.starts_with("devices") {
                    return None;
                }
            }
        }
        lexer.line(line)?;
        offset += line.len();
    }
    if !lexer.at_top_level() {
        return None;
    }
    let mut rest = String::new();
    let mut devices = Vec::new();
    let first = headers.first().map_or(text.len(), |h| h.0);
    rest.push_str(&text[..first]);
    for (i, &(start, is_device, opens_device)) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |h| h.0);
        if is_device {
            devices.push((start..end, opens_device));
        } else {
            rest.push_str(&text[start..end]);
        }
    }
    Some(Split { devices, rest })
}

/// The device tables grouped into chunks of about [`CHUNK_BYTES`], cut only before a `[devices.NAME]`
/// header of two keys (a device's sub-tables, `[devices.NAME.services]`, stay with it when they follow it).
fn chunks(text: &str, devices: &[(std::ops::Range<usize>, bool)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (range, opens_device) in devices {
        let table = &text[range.clone()];
        if *opens_device && current.len() >= CHUNK_BYTES {
            out.push(std::mem::take(&mut current));
        }
        current.push_str(table);
        // A table without a final line end must not run into the next header.
        if !current.ends_with('\n') {
            current.push('\n');
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The keys of a standard table header line (`[a.b."c d"]`), or `None` for an array of tables, an escape
/// in a quoted key, or anything else this does not read exactly.
fn header_keys(line: &str) -> Option<Vec<String>> {
    let inner = line.strip_prefix('[')?;
    if inner.starts_with('[') {
        return None;
    }
    let mut keys = Vec::new();
    let mut rest = inner.trim_start_matches([' ', '\t']);
    loop {
        let (key, after) = if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"')?;
            if q[..end].contains('\\') {
                return None;
            }
            (&q[..end], &q[end + 1..])
        } else if let Some(q) = rest.strip_prefix('\'') {
            let end = q.find('\'')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
            if end == 0 {
                return None;
            }
            (&rest[..end], &rest[end..])
        };
        keys.push(key.to_owned());
        let after = after.trim_start_matches([' ', '\t']);
        if let Some(next) = after.strip_prefix('.') {
            rest = next.trim_start_matches([' ', '\t']);
            continue;
        }
        let tail = after.strip_prefix(']')?.trim_start_matches([' ', '\t']);
        let tail = tail.trim_end_matches(['\n', '\r']);
        return (tail.is_empty() || tail.starts_with('#')).then_some(keys);
    }
}

/// Just enough of TOML's lexical structure to know whether a line starts at the top level: inside a
/// multi-line string, or an array or inline table spanning lines, a `[` at the start of a line is data.
#[derive(Default)]
struct Lexer {
    /// Open `"""` or `'''`.
    multiline: Option<&'static str>,
    /// Open `[` and `{` outside strings.
    depth: usize,
}

impl Lexer {
    fn at_top_level(&self) -> bool {
        self.multiline.is_none() && self.depth == 0
    }

    /// Takes one line (with its line end); `None` on what it cannot follow (a closing bracket too many).
    fn line(&mut self, line: &str) -> Option<()> {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if let Some(close) = self.multiline {
                match line[i..].find(close) {
                    Some(at) => {
                        let mut end = i + at;
                        // A basic string's `\"""` is not its end.
                        if close == "\"\"\"" && escaped(bytes, end) {
                            i = end + 1;
                            continue;
                        }
                        end += 3;
                        // Up to two more quotes belong to the string (`""""` ends with a quote in it).
                        while end < bytes.len() && bytes[end] == close.as_bytes()[0] && end < i + at + 5 {
                            end += 1;
                        }
                        self.multiline = None;
                        i = end;
                    }
                    None => return Some(()),
                }
                continue;
            }
            match bytes[i] {
                b'#' => return Some(()),
                b'"' | b'\'' => {
                    let quote = bytes[i];
                    if line[i..].starts_with(if quote == b'"' { "\"\"\"" } else { "'''" }) {
                        self.multiline = Some(if quote == b'"' { "\"\"\"" } else { "'''" });
                        i += 3;
                        continue;
                    }
                    // A single-line string ends on this line.
                    let mut j = i + 1;
                    while j < bytes.len() && bytes[j] != quote {
                        j += if quote == b'"' && bytes[j] == b'\\' { 2 } else { 1 };
                    }
                    i = j + 1;
                }
                b'[' | b'{' => {
                    self.depth += 1;
                    i += 1;
                }
                b']' | b'}' => {
                    self.depth = self.depth.checked_sub(1)?;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        Some(())
    }
}

/// Whether the byte at `at` follows an odd number of backslashes.
fn escaped(bytes: &[u8], at: usize) -> bool {
    bytes[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(devices: usize, extra: &str) -> String {
        let mut s = String::from(
            "# a comment\n[cluster]\nname = \"c\"\ncall_managers = [\n  { address = \"cm\" },\n]\n\n\
             [profiles.p]\nphone_type = \"Cisco 8851\"\nsecurity_mode = \"non-secure\"\ntransport = \"tcp\"\n\n",
        );
        for i in 0..devices {
            s.push_str(&format!(
                "[devices.SEP{i:012X}]\nmodel = \"Cisco 8851\"\nprofile = \"p\"\ndescription = \"\"\"\n[devices.NOT{i}]\n\"\"\"\n\
                 lines = [\n  {{ dn = \"{i}\" }},\n]\n\n[devices.SEP{i:012X}.services]\ndirectory = \"https://d.example.test/{i}\"\n\n"
            ));
            if i == devices / 2 {
                s.push_str(extra);
            }
        }
        s
    }

    #[test]
    fn chunked_parse_equals_the_whole_parse() {
        let text = big(9000, "[users.u]\nname = \"U\"\n\n");
        assert!(text.len() > MIN_CHUNKED_BYTES);
        let whole: InventoryDoc = toml::from_str(&text).unwrap();
        let chunked = parse(&text).expect("chunked");
        assert_eq!(chunked.devices.len(), 9000);
        assert_eq!(chunked.devices, whole.devices);
        assert_eq!(chunked.users, whole.users);
        assert!(chunked.devices.values().all(|d| d.description.starts_with("[devices.NOT")));
        assert!(chunks(&text, &split(&text).unwrap().devices).len() > 1);
    }

    #[test]
    fn what_the_cut_could_misread_is_left_to_the_whole_parse() {
        for extra in [
            "[[devices.x]]\nmodel = \"m\"\n",
            "[devices]\n",
            "[devices.SEP000000000001]\nmodel = \"twice\"\nprofile = \"p\"\n",
            "[devices.\"with\\\"escape\"]\n",
            "[devices.broken\nmodel = 1\n",
        ] {
            let text = big(9000, extra);
            assert!(parse(&text).is_none(), "{extra}");
        }
        // A root key that could define devices.
        let text = format!("devices.SEPX.model = \"m\"\n{}", big(9000, ""));
        assert!(parse(&text).is_none());
        // Small documents are parsed whole.
        assert!(parse(&big(3, "")).is_none());
    }

    #[test]
    fn header_keys_read_bare_and_quoted_keys() {
        assert_eq!(header_keys("[devices.SEP1]\n").unwrap(), ["devices", "SEP1"]);
        assert_eq!(header_keys("[ devices . \"DP Paris\" ] # x\n").unwrap(), ["devices", "DP Paris"]);
        assert_eq!(header_keys("[device_pools.'a b'.services]\r\n").unwrap(), ["device_pools", "a b", "services"]);
        assert!(header_keys("[[devices]]").is_none());
        assert!(header_keys("[devices.x] y").is_none());
        assert!(header_keys("[]").is_none());
    }
}
