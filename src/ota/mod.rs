//! The fleet update agent (`attendance ota run`, its own systemd unit so it
//! keeps working when the attendance service is broken): hawkBit DDI ->
//! download to /data -> RAUC over D-Bus -> ordered reboot -> the daemon
//! healthy over its control socket -> mark good -> `closed/success`.
//!
//! - `machine`: the pure state machine; `policy`: when installing and
//!   rebooting is safe for the school (pure); `state`: the persisted state;
//!   `config`: the `ota.*` settings.
//! - Adapters, each behind a trait with a test twin: `ddi` (HTTP),
//!   `download` (Range resume), `rauc` (D-Bus), `system` (the daemon's
//!   control socket and store, systemd over D-Bus).

pub mod agent;
pub mod config;
pub mod ddi;
pub mod download;
pub mod machine;
pub mod policy;
pub mod rauc;
pub mod state;
pub mod system;

pub use config::OtaConfig;
