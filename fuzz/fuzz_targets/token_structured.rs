//! Structure-aware bearer-token verification. The input is the JSON of a JWT header and of its claims,
//! split at the first 0xFF byte, then the signature's raw bytes after the next 0xFF (64 zero bytes, the size
//! of an ES256 signature, when there is none; an input without any 0xFF is the claims under the header
//! sipcfg itself mints with). Each part is base64url-encoded and the token verified: it must be refused
//! unless the oracle finds it correctly signed and valid (see fuzz/src/lib.rs), and it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MINTED_HEADER: &[u8] = br#"{"typ":"JWT","alg":"ES256","kid":"example-es256-1"}"#;

fuzz_target!(|data: &[u8]| {
    let env = sipcfg_fuzz::token_env();
    let (header, rest) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (MINTED_HEADER, data),
    };
    let (claims, signature) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[0u8; 64][..]),
    };
    let token = sipcfg_fuzz::assemble(header, claims, signature);
    env.check(&token);
    // A token with a structurally right but made-up signature is never accepted.
    if signature.iter().all(|&b| b == 0) {
        assert!(env.verifier.verify(&token).is_err(), "an all-zero signature was accepted: {token:?}");
    }
});
