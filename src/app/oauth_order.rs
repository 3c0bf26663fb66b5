//! CUCM's SIP OAuth task flow has an order: Phone-Edge-Trust, then the refresh login flow (or another token
//! issuer), the OAuth ports, the Expressway-C connections for Mobile and Remote Access, OAuth phone security
//! profiles, and only then the cluster switch (`utils sipOAuth-mode enable`). Here: what is missing before the
//! switch. `sipcfg sip-oauth-mode enable` refuses while a step that would leave every phone without a file is
//! missing; `check`, `serve` and reloads warn while the switch is on and one is.

use crate::config::Config;
use crate::provision::inventory::Inventory;
use crate::provision::trust::TrustCert;

/// What is missing before the cluster switch, split by consequence.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Steps without which no OAuth phone can get its file: `sip-oauth-mode enable` refuses.
    pub blocking: Vec<String>,
    /// Steps whose absence is worth knowing but leaves phones served.
    pub advice: Vec<String>,
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.blocking.is_empty() && self.advice.is_empty()
    }
}

/// The steps before the cluster switch that `config`, `inventory` and the Phone-Edge-Trust store `trust`
/// have not done.
pub fn before_the_switch(config: &Config, inventory: &Inventory, trust: &[TrustCert]) -> Missing {
    let mut missing = Missing::default();
    if trust.is_empty() {
        missing.blocking.push(
            "step 2 of docs/sip-oauth-task-flow.md, Phone-Edge-Trust: the store holds no certificate, so OAuth phones could not validate this \
             server on 6971; add the CA that issued the server certificate with `sipcfg cert add --purpose \
             phone-edge-trust <ca.pem>`"
                .to_owned(),
        );
    }
    if !inventory.cluster.refresh_login_flow && !config.auth.has_external_issuer() {
        missing.blocking.push(
            "step 3 of docs/sip-oauth-task-flow.md, tokens: the refresh login flow is off and [auth] trusts no other issuer's keys, so no phone \
             can get a token; turn it on with `sipcfg cluster set --refresh-login-flow on` (or add the keys of \
             the issuer your phones get tokens from to [auth])"
                .to_owned(),
        );
    }
    if !inventory.profiles.values().any(|p| p.oauth) {
        missing.advice.push(
            "step 7 of docs/sip-oauth-task-flow.md, profiles: no phone security profile has OAuth on, so the switch changes no phone's file; \
             set `oauth = true` on the profiles of the phones that should use SIP OAuth"
                .to_owned(),
        );
    }
    missing
}
