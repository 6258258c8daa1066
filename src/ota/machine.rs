//! The update agent as a pure state machine: `step(state, event)` returns
//! the next state and the actions the runtime must carry out, in order.
//!
//! Invariants:
//! - The runtime persists the new state (atomically, see `state.rs`) before
//!   it carries out any action, so after a power cut the persisted state is
//!   never behind what was done.
//! - A cancel is honoured in every state before `Installing` (the download
//!   is deleted, the cancel confirmed); from `Installing` on (RAUC may be
//!   writing the slot) it is rejected with the reason.
//! - Success is reported only from `Marking` after the slot was marked good,
//!   which happens only after the daemon was healthy on the new slot; a
//!   boot of the old slot after an install is reported as a failure naming
//!   the version that failed.
//! - Every state but `Idle` belongs to exactly one server action; a final
//!   report (`Reporting`) is retried until the server accepts it.

use serde::{Deserialize, Serialize};

use super::policy::{Decision, WaitReason};

/// The server's wish for a part of the deployment (DDI `download`/`update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    Skip,
    Attempt,
    Forced,
}

/// Expected digests of an artifact; any subset may be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    pub sha256: Option<String>,
    pub sha1: Option<String>,
    pub md5: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub filename: String,
    pub size: u64,
    pub hashes: Hashes,
    pub url: String,
}

/// One deployment offered by the server: a single RAUC bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub action_id: String,
    pub version: String,
    pub download: Handling,
    pub update: Handling,
    /// `maintenanceWindow` absent or `available`.
    pub server_window_open: bool,
    pub artifact: Artifact,
}

impl Offer {
    /// The server lets the device install now (it may still have to wait
    /// for the local policy).
    pub fn installable(&self) -> bool {
        self.update != Handling::Skip && self.server_window_open
    }
    pub fn forced(&self) -> bool {
        self.update == Handling::Forced
    }
}

/// Which boot and slot the device was on when RAUC was asked to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFacts {
    pub boot_id: String,
    pub slot: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Idle,
    /// Accepted; the disk is being checked.
    Offered {
        offer: Offer,
    },
    Downloading {
        offer: Offer,
        reported_pct: u8,
    },
    /// Complete and verified, installable as far as the server is concerned.
    Downloaded {
        offer: Offer,
    },
    /// Complete and verified; waiting for the server or the local policy.
    WaitingForWindow {
        offer: Offer,
        reason: WaitReason,
    },
    /// RAUC has been asked to install: cancel is rejected from here on.
    Installing {
        offer: Offer,
        before: BootFacts,
        reported_pct: u8,
    },
    /// The other slot holds the new release; waiting for a safe reboot.
    RebootPending {
        offer: Offer,
        before: BootFacts,
        reason: Option<WaitReason>,
    },
    /// The reboot was asked for.
    Rebooting {
        offer: Offer,
        before: BootFacts,
    },
    /// Booted the new slot; waiting for the daemon to be healthy.
    Verifying {
        offer: Offer,
        before: BootFacts,
    },
    /// The daemon was healthy; the slot is being marked good.
    Marking {
        offer: Offer,
        before: BootFacts,
    },
    /// The action's last word, sent until the server accepts it.
    Reporting {
        report: Feedback,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    Proceeding,
    Downloaded,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finished {
    Success,
    Failure,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub action_id: String,
    pub execution: Execution,
    pub finished: Finished,
    /// `cnt` of `of`.
    pub progress: Option<(u64, u64)>,
    pub details: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Agent start (after a restart, a reboot or a power cut).
    Started,
    /// A poll found this deployment (possibly the one already under way).
    Offered(Offer),
    /// The answer to `CheckSpace`: MiB free above every floor, and needed.
    Space {
        free_mb: u64,
        need_mb: u64,
    },
    Progress {
        have: u64,
    },
    Verified,
    HashMismatch {
        algorithm: &'static str,
    },
    DownloadFailed {
        reason: String,
        permanent: bool,
    },
    /// The server's `cancelAction` (its `stopId`).
    Cancel {
        stop_id: String,
    },
    Policy(Decision),
    InstallProgress {
        percent: u8,
    },
    InstallFinished {
        error: Option<String>,
    },
    Healthy,
    HealthDeadline,
    Marked {
        error: Option<String>,
    },
    /// The server accepted the final report.
    Reported,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CheckSpace {
        bytes: u64,
    },
    /// Download (resuming whatever is on disk), then verify.
    Download,
    DeleteDownload,
    Feedback(Feedback),
    CancelFeedback {
        stop_id: String,
        accepted: bool,
        details: String,
    },
    /// Ask the policy (`policy::decide`) and answer with `Event::Policy`.
    EvaluatePolicy,
    Install,
    /// Ordered shutdown of the daemon, then reboot.
    Reboot,
    WaitHealthy,
    MarkGood,
}

fn proceeding(offer: &Offer, details: impl Into<String>) -> Action {
    Action::Feedback(Feedback {
        action_id: offer.action_id.clone(),
        execution: Execution::Proceeding,
        finished: Finished::None,
        progress: None,
        details: vec![details.into()],
    })
}

fn closed(action_id: &str, ok: bool, details: String) -> Feedback {
    Feedback {
        action_id: action_id.to_string(),
        execution: Execution::Closed,
        finished: if ok {
            Finished::Success
        } else {
            Finished::Failure
        },
        progress: None,
        details: vec![details],
    }
}

/// Ends the action with a final report (kept until delivered).
fn report(action_id: &str, ok: bool, details: String, mut actions: Vec<Action>) -> Step {
    let report = closed(action_id, ok, details);
    actions.push(Action::Feedback(report.clone()));
    (State::Reporting { report }, actions)
}

pub type Step = (State, Vec<Action>);

impl State {
    /// The offer under way, if any.
    pub fn offer(&self) -> Option<&Offer> {
        match self {
            State::Idle | State::Reporting { .. } => None,
            State::Offered { offer }
            | State::Downloading { offer, .. }
            | State::Downloaded { offer }
            | State::WaitingForWindow { offer, .. }
            | State::Installing { offer, .. }
            | State::RebootPending { offer, .. }
            | State::Rebooting { offer, .. }
            | State::Verifying { offer, .. }
            | State::Marking { offer, .. } => Some(offer),
        }
    }

    /// A short name for logs and `attendance ota status`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Offered { .. } => "offered",
            State::Downloading { .. } => "downloading",
            State::Downloaded { .. } => "downloaded",
            State::WaitingForWindow { .. } => "waiting_for_window",
            State::Installing { .. } => "installing",
            State::RebootPending { .. } => "reboot_pending",
            State::Rebooting { .. } => "rebooting",
            State::Verifying { .. } => "verifying",
            State::Marking { .. } => "marking",
            State::Reporting { .. } => "reporting",
        }
    }

    /// Whether a cancel can still be honoured (nothing written to a slot).
    pub fn cancellable(&self) -> bool {
        matches!(
            self,
            State::Idle
                | State::Offered { .. }
                | State::Downloading { .. }
                | State::Downloaded { .. }
                | State::WaitingForWindow { .. }
        )
    }
}

/// Accepts a new offer from `Idle` (or replacing an offer not yet installing).
fn accept(offer: Offer, mut actions: Vec<Action>) -> Step {
    if offer.download == Handling::Skip {
        // The server announces the action but does not want it fetched yet.
        return (State::Idle, actions);
    }
    actions.push(proceeding(
        &offer,
        format!("accepted {} ({} bytes)", offer.version, offer.artifact.size),
    ));
    actions.push(Action::CheckSpace {
        bytes: offer.artifact.size,
    });
    (State::Offered { offer }, actions)
}

/// After a verified download, or when the server's view of it changes.
fn ready(offer: Offer) -> Step {
    if offer.installable() {
        (State::Downloaded { offer }, vec![Action::EvaluatePolicy])
    } else {
        (
            State::WaitingForWindow {
                offer,
                reason: WaitReason::ServerWindowClosed,
            },
            vec![],
        )
    }
}

fn pct(cnt: u64, of: u64) -> u8 {
    cnt.min(of)
        .saturating_mul(100)
        .checked_div(of)
        .map_or(100, |p| p as u8)
}

/// Progress is reported in steps of this many percent.
const PROGRESS_STEP: u8 = 10;

/// `boot` is the boot the agent runs in (boot id and booted slot).
pub fn step(state: State, event: Event, boot: &BootFacts) -> Step {
    use Event as E;

    // Cancel: honoured before RAUC writes, rejected after.
    if let E::Cancel { stop_id } = &event {
        let stop_id = stop_id.clone();
        if state.cancellable() {
            let mut actions = Vec::new();
            if !matches!(state, S::Idle) {
                actions.push(Action::DeleteDownload);
            }
            actions.push(Action::CancelFeedback {
                stop_id,
                accepted: true,
                details: format!("canceled while {}", state.name()),
            });
            return (S::Idle, actions);
        }
        let details = match &state {
            S::Installing { .. } => "RAUC is writing the slot; the install cannot be stopped",
            S::Reporting { .. } => "the action has already ended",
            _ => "the new release is installed; it is verified after the reboot",
        };
        let actions = vec![Action::CancelFeedback {
            stop_id,
            accepted: false,
            details: details.into(),
        }];
        return (state, actions);
    }

    match (state, event) {
        // --- a poll ------------------------------------------------------
        (S::Idle, E::Offered(offer)) => accept(offer, vec![]),
        (
            s @ (S::Offered { .. }
            | S::Downloading { .. }
            | S::Downloaded { .. }
            | S::WaitingForWindow { .. }),
            E::Offered(new),
        ) => {
            let current = s.offer().cloned();
            match current {
                Some(cur) if cur.action_id == new.action_id => match s {
                    // The server's flags may have changed (its window opened).
                    S::Downloaded { .. } | S::WaitingForWindow { .. } => {
                        let (next, actions) = ready(Offer {
                            artifact: cur.artifact,
                            ..new
                        });
                        match (&s, &next) {
                            (S::WaitingForWindow { .. }, S::WaitingForWindow { .. }) => {
                                (s, actions)
                            }
                            _ => (next, actions),
                        }
                    }
                    other => (other, vec![]),
                },
                // A different action replaces one not yet installing.
                _ => accept(new, vec![Action::DeleteDownload]),
            }
        }
        // Installing or later: the server sees our progress; nothing new starts.
        (s, E::Offered(_)) => (s, vec![]),

        // --- agent start (after a restart or a power cut) ---------------
        (S::Idle, E::Started) => (S::Idle, vec![]),
        (S::Offered { offer }, E::Started) => {
            let bytes = offer.artifact.size;
            (S::Offered { offer }, vec![Action::CheckSpace { bytes }])
        }
        (s @ S::Downloading { .. }, E::Started) => (s, vec![Action::Download]),
        (s @ S::Downloaded { .. }, E::Started) => (s, vec![Action::EvaluatePolicy]),
        (s @ S::WaitingForWindow { .. }, E::Started) => {
            let actions = match s.offer() {
                Some(o) if o.installable() => vec![Action::EvaluatePolicy],
                _ => vec![],
            };
            (s, actions)
        }
        // Cut during the install: the bundle is still on disk; fetch what is
        // missing (nothing, usually), verify it again and install again.
        (S::Installing { offer, .. }, E::Started) => (
            S::Downloading {
                offer: offer.clone(),
                reported_pct: 0,
            },
            vec![
                proceeding(
                    &offer,
                    "install interrupted by a restart; verifying the bundle again",
                ),
                Action::Download,
            ],
        ),
        (
            S::RebootPending {
                offer,
                before,
                reason,
            },
            E::Started,
        ) => {
            if boot.boot_id == before.boot_id {
                (
                    S::RebootPending {
                        offer,
                        before,
                        reason,
                    },
                    vec![Action::EvaluatePolicy],
                )
            } else {
                after_reboot(offer, before, boot.clone())
            }
        }
        (S::Rebooting { offer, before }, E::Started) => {
            if boot.boot_id == before.boot_id {
                // The agent restarted before the reboot happened.
                (S::Rebooting { offer, before }, vec![Action::Reboot])
            } else {
                after_reboot(offer, before, boot.clone())
            }
        }
        (S::Verifying { offer, before } | S::Marking { offer, before }, E::Started) => {
            after_reboot(offer, before, boot.clone())
        }
        (s @ S::Reporting { .. }, E::Started) => {
            let actions = match &s {
                S::Reporting { report } => vec![Action::Feedback(report.clone())],
                _ => vec![],
            };
            (s, actions)
        }

        // --- disk and download -------------------------------------------
        (S::Offered { offer }, E::Space { free_mb, need_mb }) => {
            if free_mb >= need_mb {
                (
                    S::Downloading {
                        offer,
                        reported_pct: 0,
                    },
                    vec![Action::Download],
                )
            } else {
                let id = offer.action_id.clone();
                report(
                    &id,
                    false,
                    format!(
                        "not enough space on /data: the bundle needs {need_mb} MiB with margin, {free_mb} MiB are free above the database's floor"
                    ),
                    vec![Action::DeleteDownload],
                )
            }
        }
        (
            S::Downloading {
                offer,
                reported_pct,
            },
            E::Progress { have },
        ) => {
            let p = pct(have, offer.artifact.size);
            if p >= reported_pct.saturating_add(PROGRESS_STEP) {
                let fb = Action::Feedback(Feedback {
                    action_id: offer.action_id.clone(),
                    execution: Execution::Proceeding,
                    finished: Finished::None,
                    progress: Some((have, offer.artifact.size)),
                    details: vec![format!("downloading: {p}%")],
                });
                let shown = p - p % PROGRESS_STEP;
                (
                    S::Downloading {
                        offer,
                        reported_pct: shown,
                    },
                    vec![fb],
                )
            } else {
                (
                    S::Downloading {
                        offer,
                        reported_pct,
                    },
                    vec![],
                )
            }
        }
        (S::Downloading { offer, .. }, E::Verified) => {
            let fb = Action::Feedback(Feedback {
                action_id: offer.action_id.clone(),
                execution: Execution::Downloaded,
                finished: Finished::None,
                progress: Some((offer.artifact.size, offer.artifact.size)),
                details: vec![format!("downloaded and verified {}", offer.version)],
            });
            let (next, mut actions) = ready(offer);
            actions.insert(0, fb);
            (next, actions)
        }
        (S::Downloading { offer, .. }, E::HashMismatch { algorithm }) => report(
            &offer.action_id,
            false,
            format!("{algorithm} of the downloaded bundle does not match the server's"),
            vec![Action::DeleteDownload],
        ),
        (
            S::Downloading { offer, .. },
            E::DownloadFailed {
                reason,
                permanent: true,
            },
        ) => report(
            &offer.action_id,
            false,
            format!("download failed: {reason}"),
            vec![Action::DeleteDownload],
        ),
        // Transient: the runtime backs off and tries again, resuming.
        (
            s @ S::Downloading { .. },
            E::DownloadFailed {
                permanent: false, ..
            },
        ) => (s, vec![Action::Download]),

        // --- policy, install, reboot --------------------------------------
        (S::Downloaded { offer } | S::WaitingForWindow { offer, .. }, E::Policy(decision))
            if offer.installable() =>
        {
            match decision {
                Decision::Go => {
                    let fb = proceeding(&offer, format!("installing {}", offer.version));
                    (
                        S::Installing {
                            offer,
                            before: boot.clone(),
                            reported_pct: 0,
                        },
                        vec![fb, Action::Install],
                    )
                }
                Decision::Wait(reason) => {
                    let fb = proceeding(&offer, format!("waiting: {reason}"));
                    (S::WaitingForWindow { offer, reason }, vec![fb])
                }
            }
        }
        (
            S::Installing {
                offer,
                before,
                reported_pct,
            },
            E::InstallProgress { percent },
        ) => {
            if percent >= reported_pct.saturating_add(PROGRESS_STEP) {
                let shown = percent - percent % PROGRESS_STEP;
                let fb = Action::Feedback(Feedback {
                    action_id: offer.action_id.clone(),
                    execution: Execution::Proceeding,
                    finished: Finished::None,
                    progress: Some((u64::from(percent.min(100)), 100)),
                    details: vec![format!("installing: {percent}%")],
                });
                (
                    S::Installing {
                        offer,
                        before,
                        reported_pct: shown,
                    },
                    vec![fb],
                )
            } else {
                (
                    S::Installing {
                        offer,
                        before,
                        reported_pct,
                    },
                    vec![],
                )
            }
        }
        (S::Installing { offer, before, .. }, E::InstallFinished { error: None }) => {
            let fb = proceeding(
                &offer,
                format!("installed {}; rebooting when it is safe", offer.version),
            );
            (
                S::RebootPending {
                    offer,
                    before,
                    reason: None,
                },
                vec![Action::DeleteDownload, fb, Action::EvaluatePolicy],
            )
        }
        (S::Installing { offer, .. }, E::InstallFinished { error: Some(e) }) => report(
            &offer.action_id,
            false,
            format!("RAUC install of {} failed: {e}", offer.version),
            vec![Action::DeleteDownload],
        ),
        (S::RebootPending { offer, before, .. }, E::Policy(Decision::Go)) => {
            let fb = proceeding(&offer, "rebooting into the new slot");
            (S::Rebooting { offer, before }, vec![fb, Action::Reboot])
        }
        (
            S::RebootPending {
                offer,
                before,
                reason,
            },
            E::Policy(Decision::Wait(r)),
        ) => {
            let actions = if reason.as_ref() != Some(&r) {
                vec![proceeding(&offer, format!("reboot waits: {r}"))]
            } else {
                vec![]
            };
            (
                S::RebootPending {
                    offer,
                    before,
                    reason: Some(r),
                },
                actions,
            )
        }

        // --- after the reboot ---------------------------------------------
        (S::Verifying { offer, before }, E::Healthy) => {
            (S::Marking { offer, before }, vec![Action::MarkGood])
        }
        (S::Verifying { offer, .. }, E::HealthDeadline) => {
            let id = offer.action_id.clone();
            report(
                &id,
                false,
                format!(
                    "version {}: the daemon was not healthy within the deadline on the new slot; the slot is not marked good",
                    offer.version
                ),
                vec![],
            )
        }
        (S::Marking { offer, .. }, E::Marked { error: None }) => report(
            &offer.action_id,
            true,
            format!("version {} booted, healthy and marked good", offer.version),
            vec![],
        ),
        (S::Marking { offer, .. }, E::Marked { error: Some(e) }) => report(
            &offer.action_id,
            false,
            format!(
                "version {} healthy but marking the slot good failed: {e}",
                offer.version
            ),
            vec![],
        ),
        (S::Reporting { .. }, E::Reported) => (S::Idle, vec![]),

        // Anything else does not apply to this state: ignored.
        (s, _) => (s, vec![]),
    }
}

fn after_reboot(offer: Offer, before: BootFacts, boot: BootFacts) -> Step {
    if boot.slot == before.slot {
        let id = offer.action_id.clone();
        report(
            &id,
            false,
            format!(
                "version {} did not stay booted: the device came back on the old slot {}",
                offer.version, before.slot
            ),
            vec![],
        )
    } else {
        (S::Verifying { offer, before }, vec![Action::WaitHealthy])
    }
}

use State as S;

#[cfg(test)]
mod tests;
