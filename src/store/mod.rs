//! Where state lives: the implementations of the domain's stores ([`crate::auth::store::AuthStore`]).
//!
//! | module | what |
//! |---|---|
//! | [`sqlite`] | the embedded token-service state of one node: a SQLite file |

pub mod sqlite;
