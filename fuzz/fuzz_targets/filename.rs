//! The file-name grammar: whatever a client sends as a request path, `parse_request_path` either refuses it
//! or returns one of the grammar's kinds, and what it returns is safe to resolve.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipcfg::provision::filename::{DeviceName, FileRequest, MAX_FILE_NAME, parse_name, parse_request_path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(request) = parse_request_path(s) {
        check(&request, s);
        // Without percent-encoding, decoding changes nothing: both entry points agree.
        if !s.contains('%') {
            assert_eq!(parse_name(s), Ok(request.clone()), "parse_name and parse_request_path disagree on {s:?}");
        }
        reparse(&request);
    }
    if let Ok(request) = parse_name(s) {
        check(&request, s);
        reparse(&request);
    }

    // Loose device-name parsing yields the canonical (upper-case) form of its input.
    if let Ok(name) = DeviceName::parse_loose(s) {
        assert_eq!(name.as_str(), s.to_ascii_uppercase(), "parse_loose({s:?}) is not the upper-case input");
        assert!(DeviceName::parse_canonical(name.as_str()).is_ok(), "parse_loose({s:?}) = {name:?} is not canonical");
    }
});

/// The properties every accepted request has.
fn check(request: &FileRequest, input: &str) {
    match request {
        FileRequest::DeviceConfig(name) | FileRequest::EncryptedConfig(name) => {
            assert!(
                DeviceName::parse_canonical(name.as_str()).is_ok(),
                "{input:?} gave the non-canonical device name {name:?}"
            );
        }
        FileRequest::DefaultConfig | FileRequest::CaConfig => {}
        FileRequest::Common(n) => {
            assert!(!n.is_empty(), "{input:?} gave an empty common file name");
            assert!(n.len() <= MAX_FILE_NAME, "{input:?} gave a common file name longer than {MAX_FILE_NAME}");
            assert!(!n.contains(['/', '\\', '\0']), "{input:?} gave the common file name {n:?} with a separator or NUL");
            assert!(!n.starts_with('.'), "{input:?} gave the common file name {n:?} starting with '.'");
            assert!(!n.contains(".."), "{input:?} gave the common file name {n:?} containing \"..\"");
            assert!(
                n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
                "{input:?} gave the common file name {n:?} outside A-Z a-z 0-9 . _ -"
            );
        }
    }
    assert!(
        matches!(request.kind(), "device-config" | "encrypted-config" | "default-config" | "ca-config" | "common"),
        "unknown kind {}",
        request.kind()
    );
}

/// What a request names, written back as a file name, parses to the same request.
fn reparse(request: &FileRequest) {
    let name = match request {
        FileRequest::DeviceConfig(d) => format!("{d}.cnf.xml"),
        FileRequest::EncryptedConfig(d) => format!("{d}.cnf.xml.enc.sgn"),
        FileRequest::DefaultConfig => "XMLDefault.cnf.xml".to_owned(),
        FileRequest::CaConfig => "caconfig.json".to_owned(),
        FileRequest::Common(n) => n.clone(),
    };
    assert_eq!(parse_name(&name).as_ref(), Ok(request), "{request:?} written as {name:?} does not parse back");
}
