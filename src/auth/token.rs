//! Verification of the bearer tokens (JWTs) phones present: [`Verifier`], its cache of verified tokens,
//! and the per-connection [`TokenMemo`].
//!
//! A token names one subject in `sub` ([`Subject`]). Algorithms are pinned per key by the configuration: the
//! token's `alg` header only selects among keys, it never widens what is accepted.

use std::sync::Arc;

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::auth::keys::{self, KeyError, PublicKey};
use crate::config::{Algorithm, AuthConfig};
use crate::provision::subject::Subject;
use crate::util::time::unix_now;

/// Why a token was refused. The variant goes to the log; the client only learns "invalid" or "expired".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token larger than the configured limit")]
    TooLarge,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not allowed by the configuration")]
    AlgorithmNotAllowed,
    #[error("token names a key id that is not configured")]
    UnknownKey,
    #[error("token signature does not verify with any configured key")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token issuer is not the configured one")]
    WrongIssuer,
    #[error("token audience does not include the configured one")]
    WrongAudience,
    #[error("token lacks the required claim {0}")]
    MissingClaim(String),
    #[error("token claims have the wrong form")]
    BadClaims,
    #[error("token subject is neither device:<name> nor user:<id>")]
    BadSubject,
    #[error("token was revoked")]
    Revoked,
    #[error("token header asks for extensions sipcfg does not support (crit)")]
    CriticalHeader,
}

impl TokenError {
    /// Label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token-too-large",
            TokenError::Malformed => "token-malformed",
            TokenError::AlgorithmNotAllowed => "token-algorithm",
            TokenError::UnknownKey => "token-unknown-key",
            TokenError::BadSignature => "token-signature",
            TokenError::Expired => "token-expired",
            TokenError::NotYetValid => "token-not-yet-valid",
            TokenError::WrongIssuer => "token-issuer",
            TokenError::WrongAudience => "token-audience",
            TokenError::MissingClaim(_) => "token-missing-claim",
            TokenError::BadClaims => "token-claims",
            TokenError::BadSubject => "token-subject",
            TokenError::Revoked => "token-revoked",
            TokenError::CriticalHeader => "token-crit",
        }
    }
}

struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: PublicKey,
}

/// Verifies bearer tokens against the configured keys. Keys are parsed once, when it is built.
pub struct Verifier {
    keys: Vec<VerifyKey>,
    max_token_bytes: usize,
    leeway: u64,
    /// The `iss` and `aud` every token must name.
    issuer: String,
    audience: String,
    /// Tokens that verified, by SHA-256 of the token, until their `exp` (plus leeway): a phone re-checking
    /// its file does not pay a signature verification each time. A new `Verifier` (new keys, reload,
    /// `keys regen`) starts empty; revocation is checked after this, on every request. An entry past its
    /// `exp` is never used, and gives way to newer ones as the cache fills (S3-FIFO, `quick_cache`: in a boot
    /// storm, where every token is new, a lookup and an insert cost a fraction of what moka's did).
    verified: quick_cache::sync::Cache<[u8; 32], (Verified, u64)>,
}

/// The largest signature a configured key can make: RSA-8192's 1,024 bytes (decoded into a buffer of exactly
/// that size: `the_largest_signature_fits`).
const MAX_SIGNATURE_BYTES: usize = 1024;

/// Verified tokens remembered at most (about 200 bytes each).
const VERIFIED_CACHE_ENTRIES: usize = 200_000;

/// The claims a token is checked on, read in one pass over its payload (strings borrowed from it where they
/// hold no escapes). The rules are jsonwebtoken's `Validation` with `exp`, `iss`, `aud` and `sub` required
/// (sipcfg verified through it before; `the_claims_are_judged_as_jsonwebtoken_judges_them` holds the two
/// together): `sub`, `iat` and `exp` of another JSON type make the claims malformed; `iss` or `aud` of
/// another type count as absent; `nbf` may be any non-negative number.
#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(default)]
    sub: Option<String>,
    /// Optional, but of the right type when present; revocation compares it.
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Lenient<u64>,
    #[serde(default, borrow)]
    iss: Lenient<OneOrMany<'a>>,
    #[serde(default, borrow)]
    aud: Lenient<OneOrMany<'a>>,
}

/// A claim that may be absent, or present but not of the form read (which a required claim treats as
/// absent).
#[derive(Default)]
enum Lenient<T> {
    #[default]
    Absent,
    Present(T),
    Unreadable,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d) {
            Ok(Some(value)) => Lenient::Present(value),
            Ok(None) => Lenient::Absent,
            Err(_) => Lenient::Unreadable,
        })
    }
}

/// `iss` or `aud`: one string, or an array of them (RFC 7519 §4.1.3 allows the array for `aud`; jsonwebtoken
/// accepts it for `iss` too, and so does sipcfg, to refuse no token it accepted).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Borrowed<'a>>),
}

#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

impl OneOrMany<'_> {
    fn names(&self, expected: &str) -> bool {
        match self {
            OneOrMany::One(one) => one == expected,
            OneOrMany::Many(many) => many.iter().any(|b| b.0 == expected),
        }
    }
}

/// A NumericDate (RFC 7519 §2) read as jsonwebtoken reads `nbf`: an unsigned integer, or a finite non-negative
/// number rounded; anything else is unreadable.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Lenient<u64>, D::Error> {
    // Not an `Option`: as in jsonwebtoken, a `null` is unreadable, not absent.
    Ok(match serde_json::Number::deserialize(d) {
        Ok(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Lenient::Present(u),
            (None, Some(f)) if n.is_f64() && f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Lenient::Present(f.round() as u64)
            }
            _ => Lenient::Unreadable,
        },
        Err(_) => Lenient::Unreadable,
    })
}

impl Claims<'_> {
    /// The claims' verdict at `now` (Unix seconds), allowing `leeway` seconds of clock skew. Returns the
    /// token's subject, issue time and `exp`.
    fn judge(self, issuer: &str, audience: &str, now: u64, leeway: u64) -> Result<(Verified, u64), TokenError> {
        let missing = |claim: &str| TokenError::MissingClaim(claim.into());
        let exp = self.exp.ok_or_else(|| missing("exp"))?;
        let Lenient::Present(iss) = self.iss else { return Err(missing("iss")) };
        let Lenient::Present(aud) = self.aud else { return Err(missing("aud")) };
        let sub = self.sub.ok_or_else(|| missing("sub"))?;
        if matches!(self.nbf, Lenient::Unreadable) {
            return Err(TokenError::BadClaims);
        }
        if exp.saturating_add(leeway) < now {
            return Err(TokenError::Expired);
        }
        if matches!(self.nbf, Lenient::Present(nbf) if nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if !iss.names(issuer) {
            return Err(TokenError::WrongIssuer);
        }
        if !aud.names(audience) {
            return Err(TokenError::WrongAudience);
        }
        let subject = Subject::parse(&sub).ok_or(TokenError::BadSubject)?;
        Ok((Verified { subject, issued_at: self.iat }, exp))
    }
}

/// A verified token: who it speaks for, and when it was issued (for revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: Subject,
    pub issued_at: Option<u64>,
}

/// The last token one connection presented, and what its verification gave. A phone re-checking its
/// configuration over a kept connection sends the same token each time: comparing the bytes costs a
/// `memcmp`, where the verified-token cache costs a SHA-256 of the token and a concurrent map lookup.
///
/// It answers only while the [`Verifier`] it was filled from is the one in force (a reload, new keys and
/// `keys regen` each put a new verifier in force) and the token is within its `exp` plus leeway; the
/// caller still checks revocation on every request. One memo serves one connection only, and holds the
/// token's bytes as long as the connection lives (as the connection's buffers do).
#[derive(Default)]
pub struct TokenMemo {
    last: Option<Remembered>,
}

struct Remembered {
    token: Box<str>,
    verifier: Arc<Verifier>,
    verified: Verified,
    until: u64,
}

impl TokenMemo {
    /// The remembered verification of `token`, if it still holds for `verifier` at `now`.
    pub fn get(&self, verifier: &Arc<Verifier>, token: &[u8], now: u64) -> Option<&Verified> {
        let last = self.last.as_ref()?;
        (now < last.until && Arc::ptr_eq(&last.verifier, verifier) && last.token.as_bytes() == token)
            .then_some(&last.verified)
    }

    /// Verifies `token` with `verifier` (after [`get`](Self::get) found nothing) and remembers a success.
    pub fn verify(&mut self, verifier: &Arc<Verifier>, token: &str, now: u64) -> Result<&Verified, TokenError> {
        let (verified, until) = verifier.verify_until(token, now)?;
        let last = self.last.insert(Remembered { token: token.into(), verifier: verifier.clone(), verified, until });
        Ok(&last.verified)
    }
}

/// A public key sipcfg itself signs with (from the token service's key store).
pub struct OwnKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: PublicKey,
}

impl Verifier {
    pub fn from_config(auth: &AuthConfig) -> Result<Verifier, KeyError> {
        keys::install_crypto_provider();
        let mut keys = Vec::new();
        for k in &auth.keys {
            let pem = keys::read(&k.public_key)?;
            let invalid = |message: String| KeyError::Invalid { path: k.public_key.clone(), message };
            let key = keys::decoding_key_from_pem(k.algorithm, &pem)
                .map_err(|e| invalid(format!("not a {:?} public key in PEM: {e}", k.algorithm)))?;
            let key = PublicKey::new(k.algorithm, &key).map_err(invalid)?;
            keys.push(VerifyKey { kid: k.kid.clone(), algorithm: k.algorithm, key });
        }
        if let Some(path) = &auth.jwks {
            for (kid, algorithm, key) in keys::load_jwks(path, &auth.algorithms)? {
                let key = PublicKey::new(algorithm, &key).map_err(|message| KeyError::Invalid {
                    path: path.clone(),
                    message: format!("key {}: {message}", kid.as_deref().unwrap_or("without kid")),
                })?;
                keys.push(VerifyKey { kid, algorithm, key });
            }
        }
        if keys.is_empty() {
            let path = auth.jwks.clone().unwrap_or_default();
            return Err(KeyError::Invalid { path, message: "no usable verification key".into() });
        }
        Ok(Verifier {
            keys,
            max_token_bytes: auth.max_token_bytes,
            leeway: auth.leeway_secs,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_ENTRIES),
        })
    }

    /// The configured keys plus the token service's own keys (pinned to their algorithm, named by kid).
    pub fn with_own_keys(auth: &AuthConfig, own: Vec<OwnKey>) -> Result<Verifier, KeyError> {
        let mut verifier = Verifier::from_config(auth)?;
        for k in own {
            verifier.keys.push(VerifyKey { kid: Some(k.kid), algorithm: k.algorithm, key: k.key });
        }
        Ok(verifier)
    }

    /// Verifies a token and returns its subject.
    pub fn verify(&self, token: &str) -> Result<Subject, TokenError> {
        self.verify_full(token).map(|v| v.subject)
    }

    /// Verifies a token and returns its subject and issue time.
    pub fn verify_full(&self, token: &str) -> Result<Verified, TokenError> {
        self.verify_until(token, unix_now()).map(|(verified, _)| verified)
    }

    /// Verifies a token at `now` (Unix seconds) and returns it with the time until which it is accepted
    /// (`exp` plus the leeway), for callers that remember it ([`TokenMemo`]).
    pub fn verify_until(&self, token: &str, now: u64) -> Result<(Verified, u64), TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let digest = crate::auth::digest(token.as_bytes());
        if let Some((verified, until)) = self.verified.get(&digest)
            && now < until
        {
            return Ok((verified, until));
        }
        let (verified, exp) = self.verify_signed(token, now)?;
        let until = exp.saturating_add(self.leeway);
        self.verified.insert(digest, (verified.clone(), until));
        Ok((verified, until))
    }

    /// The full check at `now`: header, key, signature, claims. Returns the token's `exp` too.
    fn verify_signed(&self, token: &str, now: u64) -> Result<(Verified, u64), TokenError> {
        // A compact JWS: three base64url parts; the signature covers the first two, as sent.
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        let header = JoseHeader::read(header).ok_or(TokenError::Malformed)?;
        // RFC 7515 §4.1.11: a `crit` extension the recipient does not understand makes the token invalid.
        // (`jku`, `x5u`, `jwk` are never followed: keys come from the configuration only.)
        if header.crit {
            return Err(TokenError::CriticalHeader);
        }
        let algorithm = Algorithm::from_jwt(header.alg).ok_or(TokenError::AlgorithmNotAllowed)?;
        let mut candidates = self.keys.iter().filter(|k| header.kid.is_none() || k.kid == header.kid).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let mut candidates = candidates.filter(|k| k.algorithm == algorithm).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let mut signature_bytes = [0u8; MAX_SIGNATURE_BYTES];
        let len = URL_SAFE_NO_PAD.decode_slice(signature, &mut signature_bytes).map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => TokenError::BadSignature,
            base64::DecodeSliceError::DecodeError(_) => TokenError::Malformed,
        })?;
        let signature = &signature_bytes[..len];
        if !candidates.any(|k| k.key.verifies(signed.as_bytes(), signature)) {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        // A claims set is a JSON object (RFC 7519 §7.2): serde would also read a struct from an array.
        if payload.trim_ascii_start().first() != Some(&b'{') {
            return Err(TokenError::BadClaims);
        }
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
        claims.judge(&self.issuer, &self.audience, now, self.leeway)
    }
}

/// What the verifier reads of a token's JOSE header, in one pass (jsonwebtoken reads it again to verify):
/// the algorithm and key named, and whether a `crit` member is present (whatever its value). Other
/// members are skipped without being kept.
#[derive(Deserialize)]
struct JoseHeader {
    alg: jsonwebtoken::Algorithm,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

impl JoseHeader {
    /// A compact JWS's header (its first part), or `None` when it is not base64url of a JSON object with an
    /// `alg` that jsonwebtoken knows.
    fn read(first: &str) -> Option<JoseHeader> {
        let json = URL_SAFE_NO_PAD.decode(first).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// A member that is there, whatever it holds.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::JoseHeader;
    use base64::Engine;

    fn of(token: &str) -> Option<JoseHeader> {
        JoseHeader::read(token.split('.').next().unwrap())
    }

    fn token(header: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(header), b64("{}"))
    }

    /// RSA-8192's 1,024-byte signature, the largest, decodes into the verifier's buffer.
    #[test]
    fn the_largest_signature_fits() {
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xa5u8; 1024]);
        let mut buffer = [0u8; super::MAX_SIGNATURE_BYTES];
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(&encoded, &mut buffer);
        assert_eq!(decoded.map(|n| buffer[..n] == [0xa5u8; 1024]), Ok(true));
    }

    #[test]
    fn the_header_is_read_once_with_crit_found_however_written() {
        let h = of(&token(r#"{"alg":"RS256","kid":"k1","typ":"JWT","x":{"y":[1,2]}}"#)).unwrap();
        assert_eq!((h.alg, h.kid.as_deref(), h.crit), (jsonwebtoken::Algorithm::RS256, Some("k1"), false));
        for crit in [r#""crit":["exp"]"#, r#""crit":null"#, r#""\u0063rit":[]"#] {
            let h = of(&token(&format!(r#"{{"alg":"ES256",{crit}}}"#))).unwrap();
            assert!(h.crit, "{crit}");
        }
        for bad in [r#"{"alg":"XX256"}"#, r#"{"kid":"k1"}"#, r#"["alg"]"#, r#"{"alg":"RS256","alg":"ES256"}"#] {
            assert!(of(&token(bad)).is_none(), "{bad}");
        }
        assert!(of("not base64!.e30.c2ln").is_none());
    }
}
