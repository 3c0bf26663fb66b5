//! How a request arrived, which decides what it may get.

use crate::provision::inventory::Device;

/// How a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// TLS on the phone port: bearer token required.
    Https,
    /// Plain HTTP (legacy port): tokens refused, only what needs no token.
    Legacy,
    /// Mutual TLS from an admitted edge proxy: bearer token required.
    Edge,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Https, Channel::Legacy, Channel::Edge];

    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Https => "https",
            Channel::Legacy => "http",
            Channel::Edge => "edge",
        }
    }

    /// Whether an activation code for `device` may be redeemed on this channel: through an edge proxy
    /// (Mobile and Remote Access) only for a device with CUCM's "Allow Activation Code via MRA"; on the phone
    /// port for every device.
    pub fn admits_activation(self, device: Option<&Device>) -> bool {
        self != Channel::Edge || device.is_some_and(|d| d.allow_activation_code_via_mra)
    }
}
