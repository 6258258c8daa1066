//! RAUC through its D-Bus API (`de.pengutronix.rauc.Installer` on the
//! system bus), behind the [`Installer`] trait; the test twin is
//! `FakeInstaller` (in-memory slots) in this module.
//!
//! `InstallBundle` is called with an empty options dictionary: every RAUC
//! since 1.6 (Debian bookworm ships 1.8) accepts that, and an option RAUC
//! does not know fails the call. Progress comes from the `Progress`
//! property, the end from the `Completed` signal, the reason of a failure
//! from `LastError`. Nothing here runs the `rauc` program.

use std::collections::HashMap;
use std::path::Path;

use futures_util::StreamExt;
use zbus::zvariant::{OwnedValue, Value};

#[derive(Debug, thiserror::Error)]
pub enum RaucError {
    #[error("RAUC over D-Bus: {0}")]
    Bus(String),
    #[error("RAUC install failed: {0}")]
    Install(String),
    #[error("RAUC: {0}")]
    Slots(String),
}

fn bus(e: zbus::Error) -> RaucError {
    // zbus error texts name the D-Bus error and RAUC's message; they carry
    // no secrets, but keep them short.
    let mut t = e.to_string();
    t.truncate(200);
    RaucError::Bus(t)
}

/// One slot as `GetSlotStatus` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slot {
    pub name: String,
    pub bootname: Option<String>,
    pub state: Option<String>,
    pub boot_status: Option<String>,
    pub bundle_version: Option<String>,
}

#[allow(async_fn_in_trait)]
pub trait Installer {
    /// The booted slot's bootname (`A`, `B`).
    async fn boot_slot(&self) -> Result<String, RaucError>;
    async fn compatible(&self) -> Result<String, RaucError>;
    async fn slots(&self) -> Result<Vec<Slot>, RaucError>;
    /// Installs and waits for `Completed`; `progress` gets percentages.
    async fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u8)) -> Result<(), RaucError>;
    /// Marks the booted slot good.
    async fn mark_good(&self) -> Result<(), RaucError>;
}

#[zbus::proxy(
    interface = "de.pengutronix.rauc.Installer",
    default_service = "de.pengutronix.rauc",
    default_path = "/"
)]
trait RaucInstaller {
    fn install_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;
    fn get_slot_status(&self) -> zbus::Result<Vec<(String, HashMap<String, OwnedValue>)>>;
    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;
}

/// The real installer: RAUC's service on the system bus.
pub struct DbusInstaller {
    proxy: RaucInstallerProxy<'static>,
    /// `/data/ota/proven`: after marking good, the slot's checksum is
    /// recorded here, as the mark-good script does, so that script never
    /// reboots a release the agent found healthy (see image-config).
    proven_dir: std::path::PathBuf,
}

impl DbusInstaller {
    pub async fn connect(proven_dir: std::path::PathBuf) -> Result<Self, RaucError> {
        let conn = zbus::Connection::system().await.map_err(bus)?;
        let proxy = RaucInstallerProxy::new(&conn).await.map_err(bus)?;
        Ok(DbusInstaller { proxy, proven_dir })
    }

    async fn record_proven(&self) -> Result<(), RaucError> {
        let raw = self.proxy.get_slot_status().await.map_err(bus)?;
        let Some((bootname, checksum)) = raw.iter().find_map(|(_, d)| {
            (text(d, "state").as_deref() == Some("booted"))
                .then(|| Some((text(d, "bootname")?, text(d, "sha256")?)))
                .flatten()
        }) else {
            // A factory-written slot has no checksum: nothing to record.
            return Ok(());
        };
        if bootname.is_empty() || bootname.contains('/') || bootname.starts_with('.') {
            return Err(RaucError::Slots("unexpected bootname".into()));
        }
        let file = crate::ota::state::StateFile::at(&self.proven_dir.join(&bootname));
        file.write_text(&format!("{checksum}\n"))
            .map_err(|e| RaucError::Slots(e.to_string()))
    }
}

fn text(d: &HashMap<String, OwnedValue>, k: &str) -> Option<String> {
    d.get(k).and_then(|v| String::try_from(v.clone()).ok())
}

impl Installer for DbusInstaller {
    async fn boot_slot(&self) -> Result<String, RaucError> {
        self.proxy.boot_slot().await.map_err(bus)
    }

    async fn compatible(&self) -> Result<String, RaucError> {
        self.proxy.compatible().await.map_err(bus)
    }

    async fn slots(&self) -> Result<Vec<Slot>, RaucError> {
        let raw = self.proxy.get_slot_status().await.map_err(bus)?;
        Ok(raw
            .into_iter()
            .map(|(name, d)| Slot {
                bootname: text(&d, "bootname"),
                state: text(&d, "state"),
                boot_status: text(&d, "boot-status"),
                bundle_version: text(&d, "bundle.version"),
                name,
            })
            .collect())
    }

    async fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u8)) -> Result<(), RaucError> {
        let source = bundle
            .to_str()
            .ok_or_else(|| RaucError::Install("bundle path is not UTF-8".into()))?;
        // Subscribe before starting so the signal cannot be missed.
        let mut completed = self.proxy.receive_completed().await.map_err(bus)?;
        let mut changes = self.proxy.receive_progress_changed().await;
        self.proxy
            .install_bundle(source, HashMap::new())
            .await
            .map_err(bus)?;
        loop {
            tokio::select! {
                signal = completed.next() => {
                    let Some(signal) = signal else {
                        return Err(RaucError::Bus("the Completed signal stream ended".into()));
                    };
                    let result = signal.args().map_err(bus)?.result;
                    if result == 0 {
                        progress(100);
                        return Ok(());
                    }
                    let mut reason = self.proxy.last_error().await.unwrap_or_default();
                    reason.truncate(300);
                    return Err(RaucError::Install(if reason.is_empty() {
                        format!("result {result}")
                    } else {
                        reason
                    }));
                }
                Some(change) = changes.next() => {
                    if let Ok((pct, _, _)) = change.get().await {
                        progress(pct.clamp(0, 100) as u8);
                    }
                }
            }
        }
    }

    async fn mark_good(&self) -> Result<(), RaucError> {
        self.proxy.mark("good", "booted").await.map_err(bus)?;
        self.record_proven().await
    }
}

/// The test twin: two slots in memory; an install writes the other slot.
#[derive(Debug)]
pub struct FakeInstaller {
    pub state: std::sync::Mutex<FakeSlots>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeSlots {
    pub booted: String,
    pub installed: Vec<String>,
    pub marked_good: u32,
    /// The next install fails with this reason.
    pub fail_with: Option<String>,
}

impl FakeInstaller {
    pub fn new(booted: &str) -> Self {
        FakeInstaller {
            state: std::sync::Mutex::new(FakeSlots {
                booted: booted.into(),
                ..Default::default()
            }),
        }
    }

    pub fn snapshot(&self) -> FakeSlots {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeSlots) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Installer for FakeInstaller {
    async fn boot_slot(&self) -> Result<String, RaucError> {
        Ok(self.with(|s| s.booted.clone()))
    }
    async fn compatible(&self) -> Result<String, RaucError> {
        Ok("attendance-kiosk-test".into())
    }
    async fn slots(&self) -> Result<Vec<Slot>, RaucError> {
        let booted = self.with(|s| s.booted.clone());
        Ok(["A", "B"]
            .iter()
            .map(|b| Slot {
                name: format!("rootfs.{b}"),
                bootname: Some(b.to_string()),
                state: Some(if *b == booted { "booted" } else { "inactive" }.into()),
                ..Default::default()
            })
            .collect())
    }
    async fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u8)) -> Result<(), RaucError> {
        if let Some(reason) = self.with(|s| s.fail_with.take()) {
            return Err(RaucError::Install(reason));
        }
        if !bundle.exists() {
            return Err(RaucError::Install("bundle not found".into()));
        }
        for p in [0, 25, 50, 75] {
            progress(p);
        }
        self.with(|s| s.installed.push(bundle.display().to_string()));
        progress(100);
        Ok(())
    }
    async fn mark_good(&self) -> Result<(), RaucError> {
        self.with(|s| s.marked_good += 1);
        Ok(())
    }
}
