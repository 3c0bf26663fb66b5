//! What every layer uses and that knows nothing of phones: text encodings, durable file writes, time,
//! randomness, and the one stop signal of background tasks.

pub mod encoding;
pub mod fsutil;
pub mod progress;
pub mod random;
pub mod stop;
pub mod time;
