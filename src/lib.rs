//! sipcfg: the configuration server for SIP phones under CUCM's SIP OAuth mode.
//!
//! A request's path: [`server`] (TLS, HTTP) → [`token`] (who is asking) → [`provision`] → [`filename`]
//! (what is asked for) → [`authorize`] (may they) → [`cache`] or [`render`] (the file) → back to
//! [`server::http`] for the response. The domain modules know nothing of HTTP; the server knows nothing of
//! XML. See docs/ARCHITECTURE.md.

pub mod app;
pub mod authorize;
pub mod cache;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod filename;
pub mod files;
pub mod fsutil;
pub mod health;
pub mod import;
pub mod inventory;
pub mod metrics;
pub mod model;
pub mod provision;
pub mod reload;
pub mod render;
pub mod server;
pub mod settings;
pub mod state;
pub mod systemd;
pub mod token;
pub mod token_service;
pub mod trust;
