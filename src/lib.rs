//! Attendance kiosk daemon.
//!
//! `domain` is pure; every other module is an adapter around it. See
//! README.md for the way a scan travels.

pub mod app;
pub mod cards;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod evidence;
pub mod feedback;
pub mod http;
pub mod input;
pub mod logging;
pub mod ota;
pub mod secrets;
pub mod store;
pub mod sync;
