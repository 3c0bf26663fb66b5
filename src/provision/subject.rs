//! Who a request speaks for, once its token is verified: one device, or one user. Authorization decides on
//! it ([`crate::provision::authorize`]); the token service writes it into the tokens it issues as `sub`.
//!
//! The `sub` format, `device:<device name>` or `user:<user id>`, is sipcfg's decision (CUCM's is not public,
//! see docs/decisions.md).

use std::fmt;

use crate::provision::filename::DeviceName;

/// Longest user id (as in the inventory).
pub const MAX_USER_ID: usize = 128;

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One device: opens that device's files only.
    Device(DeviceName),
    /// One user: opens the files of every device the user owns.
    User(String),
}

impl Subject {
    /// Reads a token's `sub` claim; `None` if it is neither `device:<name>` nor `user:<id>`.
    pub fn parse(sub: &str) -> Option<Subject> {
        if let Some(name) = sub.strip_prefix("device:") {
            return DeviceName::parse_loose(name).ok().map(Subject::Device);
        }
        let id = sub.strip_prefix("user:")?;
        (!id.is_empty() && id.len() <= MAX_USER_ID && !id.chars().any(char::is_control))
            .then(|| Subject::User(id.to_owned()))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Device(d) => write!(f, "device:{d}"),
            Subject::User(u) => write!(f, "user:{u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_refuse_other_forms() {
        for sub in ["device:SEP001122334455", "user:jsmith"] {
            assert_eq!(Subject::parse(sub).map(|s| s.to_string()).as_deref(), Some(sub));
        }
        assert_eq!(Subject::parse("device:sep001122334455").unwrap().to_string(), "device:SEP001122334455");
        for bad in ["", "jsmith", "user:", "device:XYZ1", "user:a\nb", "group:x"] {
            assert_eq!(Subject::parse(bad), None, "{bad:?}");
        }
    }
}
