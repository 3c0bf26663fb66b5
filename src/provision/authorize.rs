//! Authorization: may this token's subject have this device's configuration?
//!
//! A device token opens its own device only; a user token opens the devices the user owns. Every refusal
//! looks the same to the client (403), whether the device exists or not; the reason is for the log.

use crate::provision::filename::DeviceName;
use crate::provision::inventory::{Device, Inventory};
use crate::provision::subject::Subject;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The device does not exist, or is not the token's device, or not owned by the token's user.
    #[error("the file is not the token subject's")]
    NotOwn,
    /// The device is the subject's, but disabled in the inventory.
    #[error("the device is disabled")]
    DeviceDisabled,
    /// A user token, but the user is disabled (gone from the directory) or no longer in the inventory.
    #[error("the user is disabled")]
    UserDisabled,
    /// Plain HTTP: the device's profile uses OAuth (or the device is unknown or disabled), so its file is
    /// only served over HTTPS to its token.
    #[error("the file is served only over HTTPS to the device's token")]
    HttpsOnly,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotOwn => "not-own",
            Refusal::DeviceDisabled => "device-disabled",
            Refusal::UserDisabled => "user-disabled",
            Refusal::HttpsOnly => "https-only",
        }
    }
}

/// Returns the device if `subject` may download its configuration.
pub fn device_config<'a>(
    inventory: &'a Inventory,
    subject: &Subject,
    name: &DeviceName,
) -> Result<&'a Device, Refusal> {
    let device = inventory.device(name).ok_or(Refusal::NotOwn)?;
    let own = match subject {
        Subject::Device(d) => d == name,
        Subject::User(u) => device.owner.as_deref() == Some(u.as_str()),
    };
    if !own {
        return Err(Refusal::NotOwn);
    }
    if let Subject::User(u) = subject
        && !inventory.users.get(u).is_some_and(|user| user.enabled)
    {
        return Err(Refusal::UserDisabled);
    }
    if !device.enabled {
        return Err(Refusal::DeviceDisabled);
    }
    Ok(device)
}

/// Plain HTTP (legacy 6970): only enabled devices whose profile has OAuth off. Unknown, disabled and OAuth
/// devices are refused alike.
pub fn legacy_device_config<'a>(inventory: &'a Inventory, name: &DeviceName) -> Result<&'a Device, Refusal> {
    let device = inventory.device(name).ok_or(Refusal::HttpsOnly)?;
    let oauth = inventory.profile_of(device).is_none_or(|p| p.oauth);
    if oauth || !device.enabled {
        return Err(Refusal::HttpsOnly);
    }
    Ok(device)
}
