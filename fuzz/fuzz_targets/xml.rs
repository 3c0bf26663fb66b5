//! The well-formedness check every rendered file goes through: it never panics, and a document it accepts
//! has a root element (so at least one '<'), and no character XML 1.0 forbids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipcfg::provision::xml::check_well_formed;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if check_well_formed(text).is_ok() {
        assert!(text.contains('<'), "accepted a document without any element: {text:?}");
        assert!(
            !text.chars().any(|c| matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')),
            "accepted a document with a character XML 1.0 forbids: {text:?}"
        );
    }
});
