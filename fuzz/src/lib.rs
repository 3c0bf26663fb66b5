//! Shared by the fuzz targets: the token verifier built once from the example configuration, and an oracle
//! that decides independently of sipcfg and jsonwebtoken whether a token is correctly signed and valid.
//!
//! Fuzz input cannot forge an ES256 signature, so `Verifier::verify` must refuse everything the fuzzer makes;
//! the only tokens it may accept are real ones (the seeds hold one minted by `sipcfg token`). Instead of
//! asserting `is_err()` blindly, which such a seed would trip while it is unexpired, every accepted token is
//! checked against the oracle: accepted means the oracle, too, finds a valid signature of a configured key
//! over exactly the token's header and claims, the configured issuer and audience, an unexpired `exp` and the
//! subject that `verify` returned.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;
use sipcfg::config::{Algorithm, Config};
use sipcfg::auth::signer::Signer;
use sipcfg::auth::token::Verifier;
use sipcfg::provision::subject::Subject;

pub struct TokenEnv {
    pub verifier: Verifier,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    /// (kid, public key as DER SubjectPublicKeyInfo) of every configured key, all ES256.
    keys: Vec<(Option<String>, Vec<u8>)>,
}

/// The verifier and oracle, built once per process.
pub fn token_env() -> &'static TokenEnv {
    static ENV: OnceLock<TokenEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example/sipcfg.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let auth = config.auth;
        let verifier = Verifier::from_config(&auth).expect("the example verification keys load");
        assert!(auth.jwks.is_none(), "the oracle knows PEM keys only; the example configuration has a JWKS");
        let keys = auth
            .keys
            .iter()
            .map(|k| {
                assert_eq!(k.algorithm, Algorithm::ES256, "the oracle knows ES256 only");
                let pem = std::fs::read_to_string(&k.public_key).expect("the public key is readable");
                (k.kid.clone(), pem_to_der(&pem))
            })
            .collect();
        let env = TokenEnv {
            verifier,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway_secs: auth.leeway_secs,
            keys,
        };
        self_test(&env, &auth);
        env
    })
}

impl TokenEnv {
    /// Runs `verify` and asserts that it accepts only what the oracle accepts, with the same subject.
    pub fn check(&self, token: &str) {
        let verified = self.verifier.verify(token);
        if let Ok(subject) = verified {
            match self.oracle(token) {
                Ok(sub) => assert_eq!(
                    Subject::parse(&sub).as_ref(),
                    Some(&subject),
                    "verify returned {subject:?} for a token whose sub is {sub:?}: {token:?}"
                ),
                Err(why) => panic!("verify accepted a token that is not correctly signed and valid ({why}): {token:?}"),
            }
        }
    }

    /// The token's `sub` if it is a correctly signed, currently valid token of a configured key.
    pub fn oracle(&self, token: &str) -> Result<String, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [h, c, s] = parts[..] else {
            return Err(format!("{} parts, not 3", parts.len()));
        };
        let header = json_object(h).map_err(|e| format!("header: {e}"))?;
        if header.get("alg") != Some(&Value::String("ES256".into())) {
            return Err("alg is not ES256".into());
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err("kid is not a string".into()),
        };
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("signature: {e}"))?;
        let message = format!("{h}.{c}");
        let signed = self.keys.iter().filter(|(k, _)| kid.is_none() || *k == kid).any(|(_, der)| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, der).verify(message.as_bytes(), &signature).is_ok()
        });
        if !signed {
            return Err("no configured key verifies the signature".into());
        }
        let claims = json_object(c).map_err(|e| format!("claims: {e}"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err("wrong or missing iss".into());
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err("wrong or missing aud".into());
        }
        // One second of slack for the time between verify's clock reading and this one.
        let now = unix_now();
        let exp = claims.get("exp").and_then(Value::as_f64).ok_or("missing or non-numeric exp")?;
        if exp + (self.leeway_secs as f64) + 1.0 < now as f64 {
            return Err("expired".into());
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().ok_or("non-numeric nbf")?;
            if nbf > (now + self.leeway_secs + 1) as f64 {
                return Err("not yet valid".into());
            }
        }
        claims.get("sub").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| "missing sub".into())
    }
}

fn json_object(part: &str) -> Result<serde_json::Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
    match serde_json::from_slice(&bytes).map_err(|e| e.to_string())? {
        Value::Object(map) => Ok(map),
        _ => Err("not a JSON object".into()),
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body.trim()).expect("the public key PEM holds base64")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The oracle is not vacuous: a freshly minted token passes both, a token with its signature altered passes
/// neither.
fn self_test(env: &TokenEnv, auth: &sipcfg::config::AuthConfig) {
    let Ok(signer) = Signer::from_config(auth) else {
        return;
    };
    let subject = Subject::parse("device:SEP001122334455").expect("a valid subject");
    let token = signer.mint(&subject, 600).expect("the example key signs");
    assert_eq!(env.verifier.verify(&token), Ok(subject.clone()), "a minted token verifies");
    assert_eq!(env.oracle(&token).as_deref(), Ok("device:SEP001122334455"), "the oracle accepts a minted token");
    let (message, sig) = token.rsplit_once('.').expect("three parts");
    let mut sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url signature");
    sig[10] ^= 1;
    let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert!(env.verifier.verify(&forged).is_err(), "a token with an altered signature is refused");
    assert!(env.oracle(&forged).is_err(), "the oracle refuses a token with an altered signature");
}

/// Builds a token from raw header and claims JSON bytes and raw signature bytes, each base64url-encoded.
pub fn assemble(header: &[u8], claims: &[u8], signature: &[u8]) -> String {
    format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims), URL_SAFE_NO_PAD.encode(signature))
}
