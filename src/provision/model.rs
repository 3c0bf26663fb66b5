//! Phone types: the models sipcfg knows, the device-name prefix each uses, and the template family each
//! falls back to. The list is CUCM's list of phone types that may use SIP OAuth.

use std::fmt;

/// How a device of a type is named, which is also how its configuration file is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Prefix {
    /// Hardware phones: `SEP` followed by the MAC address as 12 hex digits.
    Sep,
    /// Cisco Unified Client Services Framework (Jabber for desktop).
    Csf,
    /// Cisco Dual Mode for Android.
    Bot,
    /// Cisco Dual Mode for iPhone.
    Tct,
    /// Cisco Jabber for Tablet.
    Tab,
    /// A placeholder for a hardware phone whose MAC address is not known yet (CUCM's `BAT` followed by 12 hex
    /// digits): its activation code onboards the first phone that redeems it, whose `SEP` name then
    /// replaces the placeholder. No phone type has it as its own prefix.
    Bat,
}

impl Prefix {
    pub const ALL: [Prefix; 6] = [Prefix::Sep, Prefix::Csf, Prefix::Bot, Prefix::Tct, Prefix::Tab, Prefix::Bat];

    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Sep => "SEP",
            Prefix::Csf => "CSF",
            Prefix::Bot => "BOT",
            Prefix::Tct => "TCT",
            Prefix::Tab => "TAB",
            Prefix::Bat => "BAT",
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One phone type (CUCM "Phone Type" / product).
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct PhoneType {
    /// The name CUCM shows and the inventory uses, e.g. `Cisco 8851`.
    pub name: &'static str,
    /// Stable identifier used for template file names, e.g. `cisco-8851`.
    pub id: &'static str,
    /// Template family the model falls back to, e.g. `cisco-88xx`.
    pub family: &'static str,
    pub prefix: Prefix,
}

macro_rules! phone_types {
    ($( $name:literal, $id:literal, $family:literal, $prefix:ident; )*) => {
        /// Every phone type sipcfg provisions.
        pub static PHONE_TYPES: &[PhoneType] = &[
            $( PhoneType { name: $name, id: $id, family: $family, prefix: Prefix::$prefix }, )*
        ];
    };
}

phone_types! {
    "Cisco 7811", "cisco-7811", "cisco-78xx", Sep;
    "Cisco 7821", "cisco-7821", "cisco-78xx", Sep;
    "Cisco 7832", "cisco-7832", "cisco-78xx", Sep;
    "Cisco 7841", "cisco-7841", "cisco-78xx", Sep;
    "Cisco 7861", "cisco-7861", "cisco-78xx", Sep;
    "Cisco 8811", "cisco-8811", "cisco-88xx", Sep;
    "Cisco 8832", "cisco-8832", "cisco-88xx", Sep;
    "Cisco 8832NR", "cisco-8832nr", "cisco-88xx", Sep;
    "Cisco 8841", "cisco-8841", "cisco-88xx", Sep;
    "Cisco 8845", "cisco-8845", "cisco-88xx", Sep;
    "Cisco 8851", "cisco-8851", "cisco-88xx", Sep;
    "Cisco 8851NR", "cisco-8851nr", "cisco-88xx", Sep;
    "Cisco 8861", "cisco-8861", "cisco-88xx", Sep;
    "Cisco 8865", "cisco-8865", "cisco-88xx", Sep;
    "Cisco 8865NR", "cisco-8865nr", "cisco-88xx", Sep;
    "Universal Device Template", "universal-device-template", "cisco-88xx", Sep;
    "Cisco Unified Client Services Framework", "cisco-csf", "jabber", Csf;
    "Cisco Dual Mode for Android", "cisco-dual-mode-android", "jabber", Bot;
    "Cisco Dual Mode for iPhone", "cisco-dual-mode-iphone", "jabber", Tct;
    "Cisco Jabber for Tablet", "cisco-jabber-tablet", "jabber", Tab;
}

/// Finds a phone type by its CUCM name (exact, as CUCM spells it).
pub fn phone_type(name: &str) -> Option<&'static PhoneType> {
    PHONE_TYPES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_unique() {
        for (i, a) in PHONE_TYPES.iter().enumerate() {
            for b in &PHONE_TYPES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.id, b.id);
            }
        }
        assert_eq!(phone_type("Cisco 8851").map(|t| t.prefix), Some(Prefix::Sep));
        assert!(phone_type("Cisco 9971").is_none());
    }
}
