//! Authorization: may this token's subject have this device's configuration?
//!
//! A device token opens its own device only; a user token opens the devices the user owns. Every refusal
//! looks the same to the client (403), whether the device exists or not; the reason is for the log.

use crate::filename::DeviceName;
use crate::inventory::{Device, Inventory};
use crate::token::Subject;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The device does not exist, or is not the token's device, or not owned by the token's user.
    #[error("the file is not the token subject's")]
    NotOwn,
    /// The device is the subject's, but disabled in the inventory.
    #[error("the device is disabled")]
    DeviceDisabled,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotOwn => "not-own",
            Refusal::DeviceDisabled => "device-disabled",
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
    if !device.enabled {
        return Err(Refusal::DeviceDisabled);
    }
    Ok(device)
}
