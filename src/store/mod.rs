//! Where state lives: the implementations of the domain's stores ([`crate::auth::store::AuthStore`]) and the
//! shared store of a cluster.
//!
//! | module | what |
//! |---|---|
//! | [`sqlite`] | the embedded token-service state of one node: a SQLite file |
//! | [`postgres`] | the shared store of a cluster: the deployment and the token service's state in PostgreSQL |
//! | [`kek`] | the key-encryption key that protects the signing keys in the shared store |

pub mod kek;
pub mod postgres;
pub mod sqlite;
