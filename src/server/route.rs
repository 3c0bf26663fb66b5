//! What a request path on a phone-facing listener names: one of the token service's endpoints, or a file
//! name of the grammar ([`crate::provision::filename`]); and the kind the metrics count it as.

use crate::ops::metrics::FileKind;
use crate::provision::filename;

/// RFC 6749 token endpoint: activation-code and refresh-token grants.
pub const TOKEN_PATH: &str = "/oauth/token";
/// RFC 7009 revocation endpoint.
pub const REVOKE_PATH: &str = "/oauth/revoke";
/// The token service's signing keys (RFC 7517), for whoever verifies sipcfg's tokens.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Whether `path` is one of the token service's endpoints.
pub fn is_oauth_path(path: &str) -> bool {
    matches!(path, TOKEN_PATH | REVOKE_PATH | JWKS_PATH)
}

/// The kind of a request path (`/SEP001122334455.cnf.xml`), by the file-name grammar; no decoding and no
/// allocation (a percent-encoded name counts as `other`).
pub fn kind_of(path: &str) -> FileKind {
    match path {
        TOKEN_PATH => FileKind::OauthToken,
        REVOKE_PATH => FileKind::OauthRevoke,
        JWKS_PATH => FileKind::Jwks,
        _ => path
            .strip_prefix('/')
            .and_then(|name| filename::shape_of(name).ok())
            .map_or(FileKind::Other, FileKind::of_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_paths() {
        let cases = [
            ("/SEP001122334455.cnf.xml", FileKind::DeviceConfig),
            ("/sep001122334455.cnf.xml.sgn", FileKind::DeviceConfig),
            ("/CSFJSMITH.cnf.xml", FileKind::DeviceConfig),
            ("/SEP001122334455.cnf.xml.enc.sgn", FileKind::EncryptedConfig),
            ("/XMLDefault.cnf.xml", FileKind::DefaultConfig),
            ("/xmldefault.cnf.xml.sgn", FileKind::DefaultConfig),
            ("/caconfig.json", FileKind::CaConfig),
            ("/caconfig.json.sgn", FileKind::CaConfig),
            ("/RingList.xml", FileKind::Common),
            ("/oauth/token", FileKind::OauthToken),
            ("/oauth/revoke", FileKind::OauthRevoke),
            ("/.well-known/jwks.json", FileKind::Jwks),
            ("/", FileKind::Other),
            ("/../etc/passwd", FileKind::Other),
            ("/a%2Fb", FileKind::Other),
            ("*", FileKind::Other),
        ];
        for (path, kind) in cases {
            assert_eq!(kind_of(path), kind, "{path}");
        }
    }
}
