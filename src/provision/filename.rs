//! The file-name grammar: which names a phone may ask for, and what each one means.
//!
//! Only names of this grammar are ever resolved. A request path is decoded once (percent-encoded unreserved
//! characters only) and must then be one of:
//!
//! | name | meaning |
//! |---|---|
//! | `SEP<12 hex>.cnf.xml` | configuration of a hardware phone, named by its MAC address |
//! | `CSF<name>.cnf.xml`, `BOT…`, `TCT…`, `TAB…` | configuration of a Jabber client |
//! | `BAT<12 hex>.cnf.xml` | a placeholder for a hardware phone not onboarded yet (no token ever opens it) |
//! | `<device>.cnf.xml.sgn` | the same file: on 6971 the unsigned file is served, as CUCM-compatible servers do |
//! | `<device>.cnf.xml.enc.sgn` | TFTP-encrypted configuration: never served (not supported with OAuth) |
//! | `XMLDefault.cnf.xml` | the cluster's default configuration (auto-registration, activation codes) |
//! | `caconfig.json`, `caconfig.json.sgn` | the Phone-Edge-Trust certificates |
//! | any other name of `A-Z a-z 0-9 . _ -` not starting with `.` | a common file from the file root |
//!
//! The device part is case-insensitive and normalised to upper case, as CUCM stores device names
//! (`sep00112233aabb.cnf.xml` and `SEP00112233AABB.cnf.xml` are the same file). The suffix `.cnf.xml` is
//! matched exactly, in lower case, as every phone sends it.

use std::fmt;

use crate::provision::model::Prefix;

/// Longest device name CUCM accepts (prefix included).
pub const MAX_DEVICE_NAME: usize = 15;
/// Longest request name considered at all; anything longer is refused before any parsing.
pub const MAX_FILE_NAME: usize = 128;

const CONFIG_SUFFIX: &str = ".cnf.xml";
const SIGNED_CONFIG_SUFFIX: &str = ".cnf.xml.sgn";
const ENCRYPTED_CONFIG_SUFFIX: &str = ".cnf.xml.enc.sgn";
pub const DEFAULT_CONFIG: &str = "XMLDefault.cnf.xml";
pub const CA_CONFIG: &str = "caconfig.json";

/// A device name in canonical form: a known prefix, upper case, CUCM's character set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct DeviceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceNameError {
    #[error("a device name starts with SEP, CSF, BOT, TCT or TAB (or BAT for a placeholder)")]
    UnknownPrefix,
    #[error(
        "a SEP device name is SEP followed by the MAC address as 12 hexadecimal digits (a placeholder: BAT and 12)"
    )]
    BadMac,
    #[error("a device name is at most {MAX_DEVICE_NAME} characters of A-Z, 0-9, '.', '_' and '-' after its prefix")]
    BadCharacters,
    #[error("device names are upper case (CUCM stores them so); write {0}")]
    NotCanonical(String),
}

impl DeviceName {
    /// Parses a name in any letter case and returns it in canonical (upper-case) form.
    pub fn parse_loose(name: &str) -> Result<DeviceName, DeviceNameError> {
        if name.len() > MAX_DEVICE_NAME || !name.is_ascii() {
            return Err(DeviceNameError::BadCharacters);
        }
        let upper = name.to_ascii_uppercase();
        let prefix =
            Prefix::ALL.into_iter().find(|p| upper.starts_with(p.as_str())).ok_or(DeviceNameError::UnknownPrefix)?;
        let rest = &upper[3..];
        match prefix {
            Prefix::Sep | Prefix::Bat => {
                if rest.len() != 12 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DeviceNameError::BadMac);
                }
            }
            _ => {
                let ok = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
                if rest.is_empty() || !rest.bytes().all(ok) {
                    return Err(DeviceNameError::BadCharacters);
                }
            }
        }
        Ok(DeviceName(upper))
    }

    /// Parses a name that must already be canonical (as in the inventory).
    pub fn parse_canonical(name: &str) -> Result<DeviceName, DeviceNameError> {
        let parsed = DeviceName::parse_loose(name)?;
        if parsed.0 != name {
            return Err(DeviceNameError::NotCanonical(parsed.0));
        }
        Ok(parsed)
    }

    pub fn prefix(&self) -> Prefix {
        Prefix::ALL.into_iter().find(|p| self.0.starts_with(p.as_str())).unwrap_or(Prefix::Sep) // unreachable: every DeviceName was parsed with a known prefix
    }

    /// The MAC address of a hardware phone (12 upper-case hex digits), `None` for Jabber clients.
    pub fn mac(&self) -> Option<&str> {
        (self.prefix() == Prefix::Sep).then(|| &self.0[3..])
    }

    /// Whether this is a placeholder (`BAT…`) that the first phone redeeming its code renames.
    pub fn is_placeholder(&self) -> bool {
        self.prefix() == Prefix::Bat
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRequest {
    /// `<device>.cnf.xml` or `<device>.cnf.xml.sgn`: the device's configuration file.
    DeviceConfig(DeviceName),
    /// `<device>.cnf.xml.enc.sgn`: an encrypted configuration, which sipcfg never serves.
    EncryptedConfig(DeviceName),
    /// `XMLDefault.cnf.xml`.
    DefaultConfig,
    /// `caconfig.json`: the Phone-Edge-Trust certificates.
    CaConfig,
    /// A common file (ring list, dial plan, locale, softkeys, firmware) from the file root.
    Common(String),
}

impl FileRequest {
    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FileRequest::DeviceConfig(_) => "device-config",
            FileRequest::EncryptedConfig(_) => "encrypted-config",
            FileRequest::DefaultConfig => "default-config",
            FileRequest::CaConfig => "ca-config",
            FileRequest::Common(_) => "common",
        }
    }
}

/// Why a name is not of the grammar. Every variant is answered the same way (404): the detail is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {MAX_FILE_NAME} bytes")]
    TooLong,
    #[error("the name holds a character outside A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
    #[error("the name has a bad percent-encoding")]
    BadEncoding,
    #[error("no file of this name is served")]
    Unknown,
    #[error("bad device name: {0}")]
    Device(#[from] DeviceNameError),
}

/// Parses a request path (everything after the first `/`, without the query) into what it asks for.
pub fn parse_request_path(raw: &str) -> Result<FileRequest, NameError> {
    let name = decode_once(raw)?;
    parse_name(&name)
}

/// What a name asks for, by the grammar alone: the device part is not checked yet, nothing is allocated.
/// [`parse_name`] builds on it, and so do the metrics, which label a request by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameShape<'a> {
    /// `<device>.cnf.xml` or `<device>.cnf.xml.sgn`, with the device part as written.
    DeviceConfig(&'a str),
    /// `<device>.cnf.xml.enc.sgn`.
    EncryptedConfig(&'a str),
    DefaultConfig,
    CaConfig,
    Common,
}

/// The shape of an already decoded file name.
pub fn shape_of(name: &str) -> Result<NameShape<'_>, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_FILE_NAME {
        return Err(NameError::TooLong);
    }
    if !name.bytes().all(is_name_byte) {
        return Err(NameError::BadCharacter);
    }
    if name.starts_with('.') || name.contains("..") {
        return Err(NameError::BadCharacter);
    }
    if let Some(device) = name.strip_suffix(ENCRYPTED_CONFIG_SUFFIX) {
        return Ok(NameShape::EncryptedConfig(device));
    }
    if let Some(device) = name.strip_suffix(SIGNED_CONFIG_SUFFIX).or_else(|| name.strip_suffix(CONFIG_SUFFIX)) {
        if device.eq_ignore_ascii_case("XMLDefault") {
            return Ok(NameShape::DefaultConfig);
        }
        return Ok(NameShape::DeviceConfig(device));
    }
    if name == CA_CONFIG || name.strip_suffix(".sgn") == Some(CA_CONFIG) {
        return Ok(NameShape::CaConfig);
    }
    Ok(NameShape::Common)
}

/// Parses an already decoded file name.
pub fn parse_name(name: &str) -> Result<FileRequest, NameError> {
    Ok(match shape_of(name)? {
        NameShape::DeviceConfig(device) => FileRequest::DeviceConfig(DeviceName::parse_loose(device)?),
        NameShape::EncryptedConfig(device) => FileRequest::EncryptedConfig(DeviceName::parse_loose(device)?),
        NameShape::DefaultConfig => FileRequest::DefaultConfig,
        NameShape::CaConfig => FileRequest::CaConfig,
        NameShape::Common => FileRequest::Common(name.to_owned()),
    })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Decodes percent-encoded octets exactly once. Only unreserved characters may be encoded (RFC 3986 §2.3
/// says encoding them changes nothing); an encoded `/`, `%`, NUL or anything else is refused, so no second
/// decoding anywhere could ever see a different name.
fn decode_once(raw: &str) -> Result<String, NameError> {
    if raw.len() > MAX_FILE_NAME * 3 {
        return Err(NameError::TooLong);
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(NameError::BadEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| NameError::BadEncoding)?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| NameError::BadEncoding)?;
            if !(is_name_byte(v) || v == b'~') {
                return Err(NameError::BadEncoding);
            }
            out.push(v as char);
            i += 3;
        } else {
            out.push(b as char);
            i += 1;
        }
    }
    if !raw.is_ascii() {
        return Err(NameError::BadCharacter);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> FileRequest {
        FileRequest::DeviceConfig(DeviceName::parse_canonical(name).unwrap())
    }

    #[test]
    fn config_names() {
        assert_eq!(parse_request_path("SEP001122334455.cnf.xml"), Ok(device("SEP001122334455")));
        assert_eq!(parse_request_path("sep00112233aabb.cnf.xml"), Ok(device("SEP00112233AABB")));
        assert_eq!(parse_request_path("CSFJSMITH.cnf.xml"), Ok(device("CSFJSMITH")));
        assert_eq!(parse_request_path("csfjsmith.cnf.xml"), Ok(device("CSFJSMITH")));
        assert_eq!(parse_request_path("TCTJSMITH.cnf.xml"), Ok(device("TCTJSMITH")));
        assert_eq!(parse_request_path("SEP001122334455%2Ecnf.xml"), Ok(device("SEP001122334455")));
        assert_eq!(parse_request_path("SEP001122334455.cnf.xml.sgn"), Ok(device("SEP001122334455")));
        assert_eq!(
            parse_request_path("SEP001122334455.cnf.xml.enc.sgn"),
            Ok(FileRequest::EncryptedConfig(DeviceName::parse_canonical("SEP001122334455").unwrap()))
        );
        assert_eq!(parse_request_path("XMLDefault.cnf.xml"), Ok(FileRequest::DefaultConfig));
        assert_eq!(parse_request_path("xmldefault.cnf.xml.sgn"), Ok(FileRequest::DefaultConfig));
        assert_eq!(parse_request_path("caconfig.json"), Ok(FileRequest::CaConfig));
        assert_eq!(parse_request_path("caconfig.json.sgn"), Ok(FileRequest::CaConfig));
        assert_eq!(parse_request_path("dialplan.xml"), Ok(FileRequest::Common("dialplan.xml".into())));
        assert_eq!(
            parse_request_path("sip88xx.14-3-1-0001-63.loads"),
            Ok(FileRequest::Common("sip88xx.14-3-1-0001-63.loads".into()))
        );
    }

    #[test]
    fn refused_names() {
        for bad in [
            "",
            "SEP00112233445.cnf.xml",
            "SEP0011223344556.cnf.xml",
            "SEP00112233445G.cnf.xml",
            "../SEP001122334455.cnf.xml",
            ".hidden",
            "..",
            "a..b",
            "XYZ001122334455.cnf.xml",
            "a/SEP001122334455.cnf.xml",
            "SEP001122334455%2F.cnf.xml",
            "SEP001122334455%00.cnf.xml",
            "SEP001122334455%2.cnf.xml",
            "SEP001122334455%zz.cnf.xml",
            "XYZ001122334455.cnf.xml",
            "CSF.cnf.xml",
            "CSFABCDEFGHIJKLM.cnf.xml",
            "SEPé01122334455.cnf.xml",
            "SEP001122334455.cnf.xml\0",
        ] {
            assert!(parse_request_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_request_path(&"A".repeat(600)), Err(NameError::TooLong));
        assert_eq!(parse_request_path(&"A".repeat(129)), Err(NameError::TooLong));
    }

    #[test]
    fn canonical_names() {
        assert!(DeviceName::parse_canonical("SEP001122334455").is_ok());
        assert_eq!(
            DeviceName::parse_canonical("sep001122334455"),
            Err(DeviceNameError::NotCanonical("SEP001122334455".into()))
        );
        assert_eq!(DeviceName::parse_canonical("SEP001122334455").unwrap().mac(), Some("001122334455"));
        assert_eq!(DeviceName::parse_canonical("CSFJSMITH").unwrap().mac(), None);
    }
}
