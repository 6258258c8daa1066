//! The domain core: pure rules with no I/O.
//!
//! Everything here is deterministic given its inputs (the clock is a
//! parameter), so it is tested exhaustively with unit tests and fuzzed.

pub mod payload;
pub mod record;
pub mod rules;
pub mod schedule;
