//! Attendance kiosk daemon.
//!
//! `domain` is pure; every other module is an adapter around it. See
//! README.md for the way a scan travels.

pub mod config;
pub mod domain;
pub mod feedback;
pub mod input;
pub mod store;
