//! Bearer-token verification on arbitrary strings: it never panics, and it accepts nothing but a correctly
//! signed, valid token (checked against an independent oracle, see fuzz/src/lib.rs). Fuzz input cannot forge
//! an ES256 signature, so in practice every input must be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = sipcfg_fuzz::token_env();
    if let Ok(token) = std::str::from_utf8(data) {
        env.check(token);
        // The same, as a client would send it after "Bearer ": surrounding whitespace is not trimmed away
        // into an accepted token.
        env.check(&format!(" {token}"));
    }
});
