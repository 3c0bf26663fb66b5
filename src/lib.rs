//! sipcfg: the configuration server for SIP phones under CUCM's SIP OAuth mode.
//!
//! The folders are the layers, and each depends only on those below it:
//!
//! | layer | folders | what |
//! |---|---|---|
//! | 5 | [`cli`] | the `sipcfg` command line: one file per command group |
//! | 4 | [`server`], [`ops`] | HTTP (listeners, the phone, OAuth and admin handlers); the process around it (reload, health, metrics, systemd) |
//! | 3 | [`app`] | what a running node holds, built from the configuration, and what a reload swaps |
//! | 2½ | [`store`] | where state lives: SQLite for one node, PostgreSQL for a cluster |
//! | 2 | [`provision`], [`auth`], [`tls`] | the domain: names, inventory, rendering, cache; tokens and the token service; TLS settings |
//! | 1 | [`config`], [`util`] | the configuration file; encodings, durable writes, time, randomness, the stop signal |
//!
//! A request's path: [`server`] (TLS, HTTP) → [`auth`] (who is asking) → [`provision`] (what is asked for,
//! may they, the file from the cache or the templates) → back to [`server`] for the response. The domain
//! knows nothing of HTTP; the server knows nothing of XML. See docs/ARCHITECTURE.md.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ops;
pub mod provision;
pub mod server;
pub mod store;
pub mod tls;
pub mod util;
