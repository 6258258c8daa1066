//! The agent's runtime: drives the pure state machine with the adapters.
//!
//! One thread (a current-thread runtime with a `LocalSet`), because the
//! adapters' futures need not be `Send` and the agent must stay small.
//! Long actions (download, install, waiting for health) run as local tasks
//! that send their outcome as events; polling goes on meanwhile, so a
//! cancel is seen during a download.
//!
//! Every transition is persisted before its actions run (see machine.rs).
//! A failing poll or feedback is logged, counted and backed off; the loop
//! never ends on an error of the server, RAUC or the daemon.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::OtaConfig;
use super::ddi::{self, Ddi};
use super::download::{self, Target};
use super::machine::{self, Action, BootFacts, Event, Feedback, State};
use super::policy::{self, KioskFacts, Rules};
use super::rauc::Installer;
use super::state::StateFile;
use crate::domain::schedule::Schedule;

/// What the agent asks of the kiosk itself.
#[allow(async_fn_in_trait)]
pub trait Kiosk {
    /// Last scan and outbox, or `None` when the store cannot be read (a
    /// broken daemon or database must not block the update that fixes it).
    async fn facts(&self) -> Option<KioskFacts>;
    /// The daemon's own word, over its local control socket.
    async fn healthy(&self) -> bool;
    /// Ordered shutdown of the daemon, then a reboot.
    async fn reboot(&self) -> Result<(), String>;
}

/// Downloads the bundle (the real one is `download::fetch`).
#[allow(async_fn_in_trait)]
pub trait Fetcher {
    async fn fetch(
        &self,
        url: &str,
        target: &Target,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), download::DownloadError>;
}

pub struct Settings {
    pub ota: OtaConfig,
    pub schedule: Schedule,
    pub device_id: String,
    /// `<data_dir>/ota`: state file and bundle.
    pub dir: PathBuf,
    /// `store.min_free_mb`.
    pub floor_mb: u64,
    /// Extra attributes for `configData` (serial, image version ...).
    pub attributes: BTreeMap<String, String>,
}

impl Settings {
    pub fn bundle_path(&self) -> PathBuf {
        self.dir.join("bundle.raucb")
    }
}

/// Counters shown by `attendance ota status` and the log.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub polls: u64,
    pub poll_failures: u64,
    pub feedback_failures: u64,
    pub download_failures: u32,
}

pub struct Agent<D, I, K, F> {
    pub ddi: Rc<D>,
    pub rauc: Rc<I>,
    pub kiosk: Rc<K>,
    pub fetcher: Rc<F>,
    pub settings: Rc<Settings>,
    pub file: StateFile,
    pub state: State,
    pub boot: BootFacts,
    pub stats: Rc<RefCell<Stats>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    queue: VecDeque<Event>,
    job: Option<JoinHandle<()>>,
    next_poll_in: Duration,
    config_sent: bool,
    /// Clock for the policy (tests move it).
    pub now: Rc<dyn Fn() -> DateTime<Utc>>,
}

impl<D, I, K, F> Agent<D, I, K, F>
where
    D: Ddi + 'static,
    I: Installer + 'static,
    K: Kiosk + 'static,
    F: Fetcher + 'static,
{
    pub fn new(ddi: D, rauc: I, kiosk: K, fetcher: F, settings: Settings, boot: BootFacts) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let file = StateFile::new(&settings.dir);
        Agent {
            ddi: Rc::new(ddi),
            rauc: Rc::new(rauc),
            kiosk: Rc::new(kiosk),
            fetcher: Rc::new(fetcher),
            next_poll_in: Duration::ZERO,
            settings: Rc::new(settings),
            file,
            state: State::Idle,
            boot,
            stats: Rc::default(),
            events_tx,
            events_rx,
            queue: VecDeque::new(),
            job: None,
            config_sent: false,
            now: Rc::new(Utc::now),
        }
    }

    /// Loads the persisted state (a corrupt file is moved aside and the
    /// agent starts idle) and handles `Started`.
    pub async fn start(&mut self) {
        self.state = match self.file.load() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "ota state unreadable; starting idle");
                State::Idle
            }
        };
        tracing::info!(state = self.state.name(), slot = %self.boot.slot, "ota agent started");
        self.handle(Event::Started).await;
    }

    /// Feeds one event and everything it leads to.
    pub async fn handle(&mut self, event: Event) {
        self.queue.push_back(event);
        self.process().await;
    }

    async fn process(&mut self) {
        while let Some(e) = self.queue.pop_front() {
            let before = self.state.name();
            let (next, actions) = machine::step(self.state.clone(), e, &self.boot);
            if next != self.state {
                if let Err(e) = self.file.save(&next) {
                    // Not persisted: do not act on it (the invariant), try
                    // again from the old state on the next event.
                    tracing::error!(error = %e, "cannot persist ota state; actions deferred");
                    continue;
                }
                if next.name() != before {
                    tracing::info!(from = before, to = next.name(), "ota state");
                }
                self.state = next;
            }
            for a in actions {
                self.act(a).await;
            }
        }
    }

    /// Takes events the background jobs sent, without waiting.
    pub async fn drain_jobs(&mut self) {
        while let Ok(e) = self.events_rx.try_recv() {
            self.handle(e).await;
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::CheckSpace { bytes } => {
                let path = self.settings.bundle_path();
                let have = download::have(&path);
                let need_mb = download::need_mb(bytes, have, self.settings.ota.disk_margin_mb);
                let free = download::free_mb(&self.settings.dir)
                    .or_else(|| self.settings.dir.parent().and_then(download::free_mb))
                    .unwrap_or(0);
                let free_mb = free.saturating_sub(self.settings.floor_mb);
                self.queue.push_back(Event::Space { free_mb, need_mb });
            }
            Action::Download => self.start_download(),
            Action::DeleteDownload => {
                if let Some(j) = self.job.take() {
                    j.abort();
                }
                let path = self.settings.bundle_path();
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(error = %e, "cannot delete the bundle"),
                }
            }
            Action::Feedback(fb) => {
                self.send_feedback(&fb).await;
            }
            Action::CancelFeedback {
                stop_id,
                accepted,
                details,
            } => {
                if let Err(e) = self.ddi.cancel_feedback(&stop_id, accepted, &details).await {
                    self.stats.borrow_mut().feedback_failures += 1;
                    tracing::warn!(error = %e, "cancel feedback not delivered; the server asks again");
                }
            }
            Action::EvaluatePolicy => {
                let d = self.decide().await;
                self.queue.push_back(Event::Policy(d));
            }
            Action::Install => self.start_install(),
            Action::Reboot => {
                if let Err(e) = self.kiosk.reboot().await {
                    tracing::error!(error = %e, "reboot failed; tried again at the next start");
                }
            }
            Action::WaitHealthy => self.start_health_wait(),
            Action::MarkGood => {
                let error = self.rauc.mark_good().await.err().map(|e| e.to_string());
                self.queue.push_back(Event::Marked { error });
            }
        }
    }

    /// Returns whether the server took it. Final reports that fail stay in
    /// `Reporting` and are sent again at the next poll.
    async fn send_feedback(&mut self, fb: &Feedback) -> bool {
        match self.ddi.feedback(fb).await {
            Ok(()) => {
                if matches!(&self.state, State::Reporting { report } if report == fb) {
                    tracing::info!(action = %fb.action_id, finished = ?fb.finished, "final report delivered");
                    self.queue.push_back(Event::Reported);
                }
                true
            }
            Err(e) => {
                self.stats.borrow_mut().feedback_failures += 1;
                tracing::warn!(error = %e, "feedback not delivered");
                false
            }
        }
    }

    pub async fn decide(&self) -> policy::Decision {
        let Some(offer) = self.state.offer() else {
            return policy::Decision::Go;
        };
        let facts = self.kiosk.facts().await.unwrap_or_default();
        let rules = Rules {
            schedule: &self.settings.schedule,
            window: &self.settings.ota.window,
            quiet_minutes: self.settings.ota.quiet_minutes,
            max_outbox_age_minutes: self.settings.ota.max_outbox_age_minutes,
        };
        policy::decide(
            &rules,
            &facts,
            (self.now)(),
            offer.forced(),
            offer.server_window_open,
        )
    }

    fn start_download(&mut self) {
        let Some(offer) = self.state.offer().cloned() else {
            return;
        };
        if let Some(j) = self.job.take() {
            j.abort();
        }
        let failures = self.stats.borrow().download_failures;
        let (fetcher, settings, tx, stats) = (
            self.fetcher.clone(),
            self.settings.clone(),
            self.events_tx.clone(),
            self.stats.clone(),
        );
        self.job = Some(tokio::task::spawn_local(async move {
            if failures > 0 {
                tokio::time::sleep(ddi::backoff(failures - 1, None)).await;
            }
            let target = Target {
                path: settings.bundle_path(),
                size: offer.artifact.size,
                floor_mb: settings.floor_mb,
                rate_limit: settings.ota.rate_limit_kib_s * 1024,
            };
            let progress_tx = tx.clone();
            let mut last_sent = 0u64;
            let size = offer.artifact.size;
            let mut progress = move |have: u64| {
                // The machine reports in 10% steps; send at most per MiB.
                if have >= last_sent + (1 << 20) || have == size {
                    last_sent = have;
                    let _ = progress_tx.send(Event::Progress { have });
                }
            };
            let result = fetcher
                .fetch(&offer.artifact.url, &target, &mut progress)
                .await;
            let event = match result {
                Ok(()) => {
                    let path = target.path.clone();
                    let hashes = offer.artifact.hashes.clone();
                    match tokio::task::spawn_blocking(move || download::verify(&path, &hashes))
                        .await
                    {
                        Ok(Ok(None)) => {
                            stats.borrow_mut().download_failures = 0;
                            Event::Verified
                        }
                        Ok(Ok(Some(algorithm))) => Event::HashMismatch { algorithm },
                        Ok(Err(e)) => Event::DownloadFailed {
                            reason: e.to_string(),
                            permanent: false,
                        },
                        Err(_) => Event::DownloadFailed {
                            reason: "verification task failed".into(),
                            permanent: false,
                        },
                    }
                }
                Err(e) => {
                    let permanent = e.permanent();
                    if !permanent {
                        stats.borrow_mut().download_failures += 1;
                    }
                    tracing::warn!(error = %e, permanent, "download stopped");
                    Event::DownloadFailed {
                        reason: e.to_string(),
                        permanent,
                    }
                }
            };
            let _ = tx.send(event);
        }));
    }

    fn start_install(&mut self) {
        let (rauc, settings, tx) = (
            self.rauc.clone(),
            self.settings.clone(),
            self.events_tx.clone(),
        );
        self.job = Some(tokio::task::spawn_local(async move {
            let path = settings.bundle_path();
            let ptx = tx.clone();
            let mut progress = move |percent: u8| {
                let _ = ptx.send(Event::InstallProgress { percent });
            };
            let error = rauc
                .install(&path, &mut progress)
                .await
                .err()
                .map(|e| e.to_string());
            let _ = tx.send(Event::InstallFinished { error });
        }));
    }

    fn start_health_wait(&mut self) {
        let (kiosk, tx) = (self.kiosk.clone(), self.events_tx.clone());
        let deadline = Duration::from_secs(self.settings.ota.health_deadline_s);
        self.job = Some(tokio::task::spawn_local(async move {
            let give_up = tokio::time::Instant::now() + deadline;
            loop {
                if kiosk.healthy().await {
                    let _ = tx.send(Event::Healthy);
                    return;
                }
                if tokio::time::Instant::now() >= give_up {
                    let _ = tx.send(Event::HealthDeadline);
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }

    /// One poll of the server and what it leads to; returns the time until
    /// the next poll.
    pub async fn poll_once(&mut self) -> Duration {
        self.stats.borrow_mut().polls += 1;
        let default = Duration::from_secs(self.settings.ota.default_poll_s);
        let reply = match self.ddi.poll().await {
            Ok(r) => r,
            Err(e) => {
                let failures = {
                    let mut s = self.stats.borrow_mut();
                    s.poll_failures += 1;
                    s.poll_failures
                };
                tracing::warn!(error = %e, failures, "poll failed");
                if e.back_off() {
                    return ddi::backoff(failures.min(16) as u32, e.retry_after());
                }
                return default;
            }
        };
        self.stats.borrow_mut().poll_failures = 0;
        if let Some(href) = &reply.config_data
            && !self.config_sent
        {
            let attrs = self.attributes().await;
            match self.ddi.put_config(href, &attrs).await {
                Ok(()) => self.config_sent = true,
                Err(e) => tracing::warn!(error = %e, "configData not accepted"),
            }
        } else if reply.config_data.is_some() {
            // Asked again (e.g. after an update): send fresh attributes.
            self.config_sent = false;
        }
        if let Some(href) = &reply.cancel {
            match self.ddi.cancel_action(href).await {
                Ok(stop_id) => self.handle(Event::Cancel { stop_id }).await,
                Err(e) => tracing::warn!(error = %e, "cancelAction unreadable"),
            }
        } else if let Some(href) = &reply.deployment {
            match self.ddi.deployment(href).await {
                Ok(offer) => self.handle(Event::Offered(offer)).await,
                Err(e) if e.permanent() => {
                    // A deployment we can never take: say so, once per poll
                    // (the server keeps it open until told).
                    tracing::warn!(error = %e, "deployment refused");
                    if let Some(id) = action_id_from_href(href) {
                        let fb = Feedback {
                            action_id: id,
                            execution: machine::Execution::Closed,
                            finished: machine::Finished::Failure,
                            progress: None,
                            details: vec![format!("refused: {e}")],
                        };
                        self.send_feedback(&fb).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "deploymentBase unreadable"),
            }
        }
        // An undelivered final report goes again.
        if let State::Reporting { report } = self.state.clone() {
            self.send_feedback(&report).await;
            self.process().await;
        }
        // Waiting states ask the policy at every poll.
        if matches!(
            self.state,
            State::Downloaded { .. } | State::RebootPending { .. }
        ) || matches!(&self.state, State::WaitingForWindow { offer, .. } if offer.installable())
        {
            let d = self.decide().await;
            self.handle(Event::Policy(d)).await;
        }
        let sleep = reply.sleep.unwrap_or(default);
        ddi::poll_interval(
            sleep,
            self.settings.ota.poll_jitter_percent,
            rand::random::<f64>(),
        )
    }

    async fn attributes(&self) -> BTreeMap<String, String> {
        let mut a = self.settings.attributes.clone();
        a.insert("device_id".into(), self.settings.device_id.clone());
        a.insert("slot".into(), self.boot.slot.clone());
        if let Ok(c) = self.rauc.compatible().await {
            a.insert("hw_boardname".into(), c.clone());
            a.insert("rauc_compatible".into(), c);
        }
        a.entry("hw_revision".into())
            .or_insert_with(|| "default".into());
        if let Ok(slots) = self.rauc.slots().await
            && let Some(v) = slots
                .iter()
                .find(|s| s.state.as_deref() == Some("booted"))
                .and_then(|s| s.bundle_version.clone())
        {
            a.insert("sw_version".into(), v);
        }
        a
    }

    /// Runs until `shutdown`.
    pub async fn run(&mut self, shutdown: CancellationToken) {
        self.start().await;
        loop {
            let wait = self.next_poll_in;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if let Some(j) = self.job.take() {
                        // A download resumes at the next start; an install
                        // is RAUC's (it goes on without us).
                        j.abort();
                    }
                    return;
                }
                Some(e) = self.events_rx.recv() => self.handle(e).await,
                _ = tokio::time::sleep(wait) => {
                    self.next_poll_in = self.poll_once().await;
                }
            }
        }
    }
}

/// `.../deploymentBase/{id}?c=...` -> `id`.
fn action_id_from_href(href: &str) -> Option<String> {
    let path = href.split('?').next()?;
    let (_, id) = path.rsplit_once("/deploymentBase/")?;
    let id = id.trim_end_matches('/');
    (!id.is_empty() && id.len() <= 64 && !id.contains('/')).then(|| id.to_string())
}

#[cfg(test)]
mod tests;
