//! The audit line: a `sipcfg::access` event as one JSON line, written straight from its fields.
//!
//! The line is the one tracing-subscriber's JSON formatter wrote before (operators' `jq` filters read it):
//! `{"timestamp":"2026-11-26T17:41:15.771471Z","level":"INFO","fields":{"peer":…,"micros":752},"target":"sipcfg::access"}`.
//! That formatter went through serde with a byte-at-a-time writer adapter and formatted the date anew for
//! every line: 21,000 instructions a line, as many as the rest of a keep-alive revalidation. Here the fields
//! are escaped into a per-thread buffer and the date is formatted once a second.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::AuditLog;

/// A thread's line buffer, and the date and time to the second it last wrote.
struct Scratch {
    line: Vec<u8>,
    second: u64,
    /// `2026-11-26T17:41:15.` for `second`.
    prefix: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { line: Vec::new(), second: u64::MAX, prefix: String::new() }) };
}

impl<S: Subscriber> Layer<S> for AuditLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else { return };
            let Scratch { line, second, prefix } = &mut *scratch;
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":\"");
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            if now.as_secs() != *second {
                *second = now.as_secs();
                *prefix = crate::util::time::rfc3339_utc(i64::try_from(*second).unwrap_or(i64::MAX));
                prefix.pop(); // the Z
                prefix.push('.');
            }
            line.extend_from_slice(prefix.as_bytes());
            let mut micros = now.subsec_micros();
            let mut digits = [b'0'; 6];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (micros % 10) as u8;
                micros /= 10;
            }
            line.extend_from_slice(&digits);
            line.extend_from_slice(b"Z\",\"level\":\"");
            line.extend_from_slice(event.metadata().level().as_str().as_bytes());
            line.extend_from_slice(b"\",\"fields\":{");
            event.record(&mut Fields { line, first: true });
            line.extend_from_slice(b"},\"target\":");
            string(line, event.metadata().target());
            line.extend_from_slice(b"}\n");
            self.shared.push(line);
        });
    }
}

/// The event's fields as JSON members, in the order the event declares them.
struct Fields<'a> {
    line: &'a mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    /// `"name":` (a field's name is a Rust identifier: nothing to escape).
    fn key(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.line.push(b',');
        }
        self.line.push(b'"');
        self.line.extend_from_slice(field.name().as_bytes());
        self.line.extend_from_slice(b"\":");
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(Bytes(self.line), "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(Bytes(self.line), "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// `%value` and `?value` fields: their text, as a JSON string.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.line.push(b'"');
        let _ = write!(Escaped(self.line), "{value:?}");
        self.line.push(b'"');
    }
}

/// A JSON string: quotes, backslashes and control characters escaped as serde_json escapes them.
fn string(line: &mut Vec<u8>, s: &str) {
    line.push(b'"');
    let _ = Escaped(line).write_str(s);
    line.push(b'"');
}

/// Appends text to a line as it is.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Bytes a JSON string cannot hold as they are: control characters, `"` and `\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// Appends text to a line, escaped for the inside of a JSON string.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        // Text almost never needs an escape: one branch-free pass (a byte-by-byte escape was 3,500
        // instructions a line), then one copy.
        if !bytes.iter().fold(false, |any, &b| any | NEEDS_ESCAPE[usize::from(b)]) {
            self.0.extend_from_slice(bytes);
            return Ok(());
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x08 => Some(b"\\b"),
                0x0c => Some(b"\\f"),
                0..=0x1f => None,
                _ => continue,
            };
            self.0.extend_from_slice(&bytes[start..i]);
            match escape {
                Some(e) => self.0.extend_from_slice(e),
                None => {
                    let _ = write!(Bytes(self.0), "\\u{b:04x}");
                }
            }
            start = i + 1;
        }
        self.0.extend_from_slice(&bytes[start..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    /// The line is the one tracing-subscriber's JSON formatter writes, field for field and byte for byte
    /// (apart from the time), escapes included.
    #[test]
    fn the_line_is_the_json_formatter_s_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = dir.path().join("ours.jsonl");
        let (log, guard) = super::AuditLog::open(&ours, 1 << 20).expect("opens");
        let theirs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = theirs.clone();
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(move || Sink(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(log).with(json);
        tracing::subscriber::with_default(subscriber, || {
            let peer: std::net::SocketAddr = "[2001:db8::1]:5060".parse().expect("address");
            let path = "/a\"b\\c\u{1}\u{e9}\t.txt";
            tracing::info!(target: "sipcfg::access", %peer, channel = "https", method = %"GET", path = %path,
                status = 401u16, subject = "", reason = "no-token", micros = 17u64);
            tracing::info!(target: "sipcfg::access", %peer, channel = "edge", method = %"", path = %"", status = 431u16,
                subject = "user:j\"smith", reason = "header-too-large", micros = 0u64, gone = false);
        });
        drop(guard);
        let ours = std::fs::read_to_string(&ours).expect("written");
        let theirs = String::from_utf8(theirs.lock().expect("lock").clone()).expect("utf-8");
        let without_time = |text: &str| -> Vec<String> {
            text.lines().map(|l| l.split_once(",\"level\"").expect("a level").1.to_owned()).collect()
        };
        assert_eq!(ours.lines().count(), 2, "{ours}");
        assert_eq!(without_time(&ours), without_time(&theirs), "\nours:   {ours}\ntheirs: {theirs}");
        for line in ours.lines() {
            let time = &line[..line.find(",\"level\"").expect("a level")];
            assert_eq!(time.len(), "{\"timestamp\":\"2026-11-26T17:41:15.771471Z\"".len(), "{time}");
            assert!(time.ends_with("Z\"") && time.as_bytes()[24] == b'T' && time.as_bytes()[33] == b'.', "{time}");
        }
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
