//! The agent with its test twins: a scripted DDI server, an in-memory
//! fetcher, RAUC's `FakeInstaller` and a fake kiosk.

use std::cell::RefCell;

use super::*;
use crate::domain::schedule::ScheduleConfig;
use crate::ota::ddi::{DdiError, PollReply};
use crate::ota::machine::{Artifact, Execution, Finished, Handling, Hashes, Offer};
use crate::ota::rauc::FakeInstaller;

#[derive(Default)]
struct MockDdi {
    offer: RefCell<Option<Offer>>,
    cancel: RefCell<Option<String>>,
    feedback: RefCell<Vec<Feedback>>,
    cancel_feedback: RefCell<Vec<(String, bool, String)>>,
    configs: RefCell<Vec<BTreeMap<String, String>>>,
    fail_polls: RefCell<u32>,
}

impl Ddi for MockDdi {
    async fn poll(&self) -> Result<PollReply, DdiError> {
        if *self.fail_polls.borrow() > 0 {
            *self.fail_polls.borrow_mut() -= 1;
            return Err(DdiError::Status {
                what: "poll",
                status: 503,
                retry_after: None,
            });
        }
        Ok(PollReply {
            sleep: Some(Duration::from_secs(60)),
            config_data: self.configs.borrow().is_empty().then(|| "cfg".to_string()),
            deployment: self
                .offer
                .borrow()
                .as_ref()
                .map(|o| format!("dep/{}", o.action_id)),
            cancel: self.cancel.borrow().clone(),
        })
    }
    async fn put_config(&self, _: &str, a: &BTreeMap<String, String>) -> Result<(), DdiError> {
        self.configs.borrow_mut().push(a.clone());
        Ok(())
    }
    async fn deployment(&self, _: &str) -> Result<Offer, DdiError> {
        self.offer.borrow().clone().ok_or(DdiError::Status {
            what: "deploymentBase",
            status: 404,
            retry_after: None,
        })
    }
    async fn cancel_action(&self, href: &str) -> Result<String, DdiError> {
        Ok(href.to_string())
    }
    async fn feedback(&self, fb: &Feedback) -> Result<(), DdiError> {
        self.feedback.borrow_mut().push(fb.clone());
        if fb.execution == Execution::Closed {
            // The server closes the action.
            self.offer.borrow_mut().take();
        }
        Ok(())
    }
    async fn cancel_feedback(&self, id: &str, ok: bool, d: &str) -> Result<(), DdiError> {
        self.cancel_feedback
            .borrow_mut()
            .push((id.to_string(), ok, d.to_string()));
        if ok {
            self.offer.borrow_mut().take();
            self.cancel.borrow_mut().take();
        }
        Ok(())
    }
}

/// Serves `body` like a Range-capable server; optionally a status instead.
struct MemFetcher {
    body: Vec<u8>,
    status: RefCell<Option<u16>>,
    calls: RefCell<u32>,
    /// Hold the download open (to cancel it meanwhile).
    stall: bool,
}

impl Fetcher for MemFetcher {
    async fn fetch(
        &self,
        _: &str,
        target: &Target,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), download::DownloadError> {
        *self.calls.borrow_mut() += 1;
        if let Some(s) = *self.status.borrow() {
            return Err(download::DownloadError::Status(s));
        }
        if self.stall {
            std::future::pending::<()>().await;
        }
        std::fs::create_dir_all(target.path.parent().unwrap()).unwrap();
        std::fs::write(&target.path, &self.body).unwrap();
        progress(self.body.len() as u64);
        Ok(())
    }
}

struct FakeKiosk {
    facts: RefCell<KioskFacts>,
    healthy: RefCell<bool>,
    reboots: RefCell<u32>,
}

impl Kiosk for FakeKiosk {
    async fn facts(&self) -> Option<KioskFacts> {
        Some(self.facts.borrow().clone())
    }
    async fn healthy(&self) -> bool {
        *self.healthy.borrow()
    }
    async fn reboot(&self) -> Result<(), String> {
        *self.reboots.borrow_mut() += 1;
        Ok(())
    }
}

const BODY: &[u8] = b"a signed RAUC bundle, really";

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn offer(id: &str, hashes: Hashes) -> Offer {
    Offer {
        action_id: id.into(),
        version: "2.0".into(),
        download: Handling::Forced,
        update: Handling::Forced,
        server_window_open: true,
        artifact: Artifact {
            filename: "b.raucb".into(),
            size: BODY.len() as u64,
            hashes,
            url: "http://127.0.0.1/dl".into(),
        },
    }
}

fn good_hashes() -> Hashes {
    Hashes {
        sha256: Some(sha256(BODY)),
        ..Default::default()
    }
}

type TestAgent = Agent<MockDdi, FakeInstaller, FakeKiosk, MemFetcher>;

fn agent(dir: &std::path::Path, slot: &str, boot_id: &str, stall: bool) -> TestAgent {
    let schedule = Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap();
    let settings = Settings {
        ota: OtaConfig {
            disk_margin_mb: 1,
            ..Default::default()
        },
        schedule,
        device_id: "kiosk-07".into(),
        dir: dir.join("ota"),
        floor_mb: 0,
        attributes: BTreeMap::new(),
    };
    let mut a = Agent::new(
        MockDdi::default(),
        FakeInstaller::new(slot),
        FakeKiosk {
            facts: RefCell::new(KioskFacts::default()),
            healthy: RefCell::new(true),
            reboots: RefCell::new(0),
        },
        MemFetcher {
            body: BODY.to_vec(),
            status: RefCell::new(None),
            calls: RefCell::new(0),
            stall,
        },
        settings,
        BootFacts {
            boot_id: boot_id.into(),
            slot: slot.into(),
        },
    );
    a.now = Rc::new(|| {
        // 22:00 in Manila, a Wednesday: inside the default install window.
        DateTime::parse_from_rfc3339("2026-03-04T22:00:00+08:00")
            .unwrap()
            .with_timezone(&Utc)
    });
    a
}

/// Polls and lets the background jobs finish, a few rounds.
async fn settle(a: &mut TestAgent) {
    for _ in 0..6 {
        a.poll_once().await;
        // Jobs hash on a blocking thread: give them real time.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            a.drain_jobs().await;
        }
    }
}

fn run_local<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

fn finals(a: &TestAgent) -> Vec<Feedback> {
    a.ddi
        .feedback
        .borrow()
        .iter()
        .filter(|f| f.execution == Execution::Closed)
        .cloned()
        .collect()
}

#[test]
fn a_to_b_reports_success_only_after_the_healthy_reboot() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        a.start().await;
        *a.ddi.offer.borrow_mut() = Some(offer("5", good_hashes()));
        settle(&mut a).await;
        assert_eq!(a.state.name(), "rebooting");
        assert_eq!(a.rauc.snapshot().installed.len(), 1);
        assert_eq!(*a.kiosk.reboots.borrow(), 1);
        assert!(finals(&a).is_empty(), "nothing final before the reboot");
        assert!(!a.ddi.configs.borrow().is_empty(), "configData sent");
        assert_eq!(a.ddi.configs.borrow()[0]["device_id"], "kiosk-07");
        assert!(
            !a.settings.bundle_path().exists(),
            "bundle deleted after install"
        );
    });
    // The reboot: a new agent on slot B reads the persisted state.
    run_local(async {
        let mut a = agent(dir.path(), "B", "boot-2", false);
        a.ddi.configs.borrow_mut().push(BTreeMap::new());
        a.start().await;
        assert_eq!(a.state.name(), "verifying");
        settle(&mut a).await;
        assert_eq!(a.rauc.snapshot().marked_good, 1);
        let f = finals(&a);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].action_id.as_str(), f[0].finished),
            ("5", Finished::Success)
        );
        assert_eq!(a.state, State::Idle);
    });
}

#[test]
fn coming_back_on_the_old_slot_reports_failure() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        a.start().await;
        *a.ddi.offer.borrow_mut() = Some(offer("5", good_hashes()));
        settle(&mut a).await;
        assert_eq!(a.state.name(), "rebooting");
    });
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-3", false);
        a.start().await;
        settle(&mut a).await;
        let f = finals(&a);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].finished, Finished::Failure);
        assert!(f[0].details[0].contains("2.0"), "{:?}", f[0].details);
        assert_eq!(a.rauc.snapshot().marked_good, 0);
    });
}

#[test]
fn an_unhealthy_daemon_is_never_marked_good() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        a.start().await;
        *a.ddi.offer.borrow_mut() = Some(offer("5", good_hashes()));
        settle(&mut a).await;
    });
    run_local(async {
        let mut a = agent(dir.path(), "B", "boot-2", false);
        *a.kiosk.healthy.borrow_mut() = false;
        a.start().await;
        settle(&mut a).await;
        assert_eq!(a.state.name(), "verifying", "still within the deadline");
        a.handle(Event::HealthDeadline).await;
        settle(&mut a).await;
        assert_eq!(a.rauc.snapshot().marked_good, 0);
        assert_eq!(finals(&a)[0].finished, Finished::Failure);
    });
}

#[test]
fn a_wrong_hash_is_reported_and_nothing_installed() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        a.start().await;
        let bad = Hashes {
            sha1: Some("0".repeat(40)),
            ..Default::default()
        };
        *a.ddi.offer.borrow_mut() = Some(offer("6", bad));
        settle(&mut a).await;
        let f = finals(&a);
        assert_eq!(f.len(), 1);
        assert!(f[0].details[0].contains("sha1"));
        assert!(a.rauc.snapshot().installed.is_empty());
        assert!(!a.settings.bundle_path().exists());
        assert_eq!(a.state, State::Idle);
    });
}

#[test]
fn a_404_download_is_one_failure_report_not_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        *a.fetcher.status.borrow_mut() = Some(404);
        a.start().await;
        *a.ddi.offer.borrow_mut() = Some(offer("6", good_hashes()));
        settle(&mut a).await;
        assert_eq!(*a.fetcher.calls.borrow(), 1);
        let f = finals(&a);
        assert_eq!(f.len(), 1);
        assert!(f[0].details[0].contains("404"));
    });
}

#[test]
fn a_cancel_during_the_download_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", true);
        a.start().await;
        *a.ddi.offer.borrow_mut() = Some(offer("9", good_hashes()));
        settle(&mut a).await;
        assert_eq!(a.state.name(), "downloading");
        *a.ddi.cancel.borrow_mut() = Some("9".into());
        settle(&mut a).await;
        assert_eq!(a.state, State::Idle);
        let c = a.ddi.cancel_feedback.borrow().clone();
        assert_eq!(c.len(), 1);
        assert!(c[0].1, "accepted");
        assert!(a.rauc.snapshot().installed.is_empty());
    });
}

#[test]
fn a_busy_kiosk_waits_then_installs_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        let now = (a.now)();
        *a.kiosk.facts.borrow_mut() = KioskFacts {
            last_scan: Some(now - chrono::Duration::minutes(2)),
            outbox_depth: 0,
            outbox_oldest: None,
        };
        a.start().await;
        *a.ddi.offer.borrow_mut() = Some(offer("5", good_hashes()));
        settle(&mut a).await;
        assert_eq!(a.state.name(), "waiting_for_window");
        assert!(a.rauc.snapshot().installed.is_empty());
        *a.kiosk.facts.borrow_mut() = KioskFacts::default();
        settle(&mut a).await;
        assert_eq!(a.state.name(), "rebooting");
    });
}

#[test]
fn polls_back_off_on_server_errors() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let mut a = agent(dir.path(), "A", "boot-1", false);
        *a.ddi.fail_polls.borrow_mut() = 3;
        a.start().await;
        let d1 = a.poll_once().await;
        let d2 = a.poll_once().await;
        assert!(d2 > d1, "{d1:?} then {d2:?}");
        assert_eq!(a.stats.borrow().poll_failures, 2);
        a.poll_once().await;
        let ok = a.poll_once().await;
        assert_eq!(a.stats.borrow().poll_failures, 0);
        assert!(
            ok >= Duration::from_secs(54) && ok <= Duration::from_secs(66),
            "{ok:?}"
        );
    });
}
