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
    /// What the type can show and do: lines, buttons, key expansion modules, phone services.
    pub features: Features,
}

/// The keys of one key expansion module (the 8800 series' modules: two pages of 14).
pub const KEM_KEYS: usize = 28;

/// What a phone type supports, as the inventory's rules check it and the templates render it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// The most lines (directory numbers) the type carries.
    pub max_lines: usize,
    /// Programmable line keys on the phone itself: lines first, then speed dials and BLF buttons. Zero for
    /// phones without them (the 7811, conference phones) and for Jabber clients: those take no speed dial and
    /// no BLF button.
    pub line_keys: usize,
    /// The most key expansion modules the type takes; each adds [`KEM_KEYS`] keys for speed dials and BLF.
    pub max_kems: usize,
    /// The key expansion module's name (CUCM's "Module 1" phone type); empty when the type takes none.
    pub kem_model: &'static str,
    /// Phone service URLs (directory, services, idle, authentication, information, messages): hardware
    /// phones only; Jabber clients take their directory and services from elsewhere.
    pub services: bool,
}

impl Features {
    const fn phone(keys: usize, max_kems: usize, kem_model: &'static str) -> Features {
        Features { max_lines: if keys == 0 { 1 } else { keys }, line_keys: keys, max_kems, kem_model, services: true }
    }
    const fn jabber(max_lines: usize) -> Features {
        Features { max_lines, line_keys: 0, max_kems: 0, kem_model: "", services: false }
    }
}

/// A 78xx or 88xx phone with `keys` line keys and no key expansion module.
const fn keys(keys: usize) -> Features {
    Features::phone(keys, 0, "")
}
/// A conference phone (7832, 8832): one line, no line keys.
const CONFERENCE: Features = Features::phone(0, 0, "");
const KEM_8800: &str = "Cisco 8800 Key Expansion Module";
const KEM_8865: &str = "Cisco 8865 Key Expansion Module";

macro_rules! phone_types {
    ($( $name:literal, $id:literal, $family:literal, $prefix:ident, $features:expr; )*) => {
        /// Every phone type sipcfg provisions.
        pub static PHONE_TYPES: &[PhoneType] = &[
            $( PhoneType { name: $name, id: $id, family: $family, prefix: Prefix::$prefix, features: $features }, )*
        ];
    };
}

phone_types! {
    "Cisco 7811", "cisco-7811", "cisco-78xx", Sep, keys(0);
    "Cisco 7821", "cisco-7821", "cisco-78xx", Sep, keys(2);
    "Cisco 7832", "cisco-7832", "cisco-78xx", Sep, CONFERENCE;
    "Cisco 7841", "cisco-7841", "cisco-78xx", Sep, keys(4);
    "Cisco 7861", "cisco-7861", "cisco-78xx", Sep, keys(16);
    "Cisco 8811", "cisco-8811", "cisco-88xx", Sep, keys(5);
    "Cisco 8832", "cisco-8832", "cisco-88xx", Sep, CONFERENCE;
    "Cisco 8832NR", "cisco-8832nr", "cisco-88xx", Sep, CONFERENCE;
    "Cisco 8841", "cisco-8841", "cisco-88xx", Sep, keys(5);
    "Cisco 8845", "cisco-8845", "cisco-88xx", Sep, keys(5);
    "Cisco 8851", "cisco-8851", "cisco-88xx", Sep, Features::phone(5, 2, KEM_8800);
    "Cisco 8851NR", "cisco-8851nr", "cisco-88xx", Sep, Features::phone(5, 2, KEM_8800);
    "Cisco 8861", "cisco-8861", "cisco-88xx", Sep, Features::phone(5, 3, KEM_8800);
    "Cisco 8865", "cisco-8865", "cisco-88xx", Sep, Features::phone(5, 3, KEM_8865);
    "Cisco 8865NR", "cisco-8865nr", "cisco-88xx", Sep, Features::phone(5, 3, KEM_8865);
    "Universal Device Template", "universal-device-template", "cisco-88xx", Sep, Features::phone(5, 3, KEM_8800);
    "Cisco Unified Client Services Framework", "cisco-csf", "jabber", Csf, Features::jabber(8);
    "Cisco Dual Mode for Android", "cisco-dual-mode-android", "jabber", Bot, Features::jabber(1);
    "Cisco Dual Mode for iPhone", "cisco-dual-mode-iphone", "jabber", Tct, Features::jabber(1);
    "Cisco Jabber for Tablet", "cisco-jabber-tablet", "jabber", Tab, Features::jabber(1);
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
