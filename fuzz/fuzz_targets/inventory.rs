//! The inventory parser on arbitrary TOML: it never panics, and an inventory it accepts is consistent
//! (every device's profile and owner exist, and the device is filed under its own canonical name).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sipcfg::provision::filename::DeviceName;
use sipcfg::provision::inventory::Inventory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(inventory) = Inventory::parse(Path::new("fuzz.toml"), text) else {
        return;
    };
    for (name, device) in &inventory.devices {
        assert_eq!(name, &device.name, "device {name} is filed under another name");
        assert!(DeviceName::parse_canonical(name.as_str()).is_ok(), "device name {name} is not canonical");
        assert!(
            inventory.profiles.contains_key(&device.profile),
            "device {name} has the unknown profile {:?}",
            device.profile
        );
        assert!(inventory.profile_of(device).is_some(), "profile_of({name}) is None");
        if let Some(owner) = &device.owner {
            assert!(inventory.users.contains_key(owner), "device {name} has the unknown owner {owner:?}");
            assert!(inventory.owner_of(device).is_some(), "owner_of({name}) is None");
        }
    }
    for (name, profile) in &inventory.profiles {
        assert_eq!(name, &profile.name, "profile {name:?} carries the name {:?}", profile.name);
    }
    for (id, user) in &inventory.users {
        assert_eq!(id, &user.id, "user {id:?} carries the id {:?}", user.id);
    }
    assert!(!inventory.cluster.call_managers.is_empty(), "an inventory without call managers was accepted");
});
