//! Every transition of the update state machine.

use super::*;
use crate::ota::policy::{Decision, WaitReason};

fn offer(id: &str) -> Offer {
    Offer {
        action_id: id.into(),
        version: "2.0".into(),
        download: Handling::Attempt,
        update: Handling::Attempt,
        server_window_open: true,
        artifact: Artifact {
            filename: "kiosk.raucb".into(),
            size: 1000,
            hashes: Hashes {
                sha256: Some("ab".repeat(32)),
                ..Default::default()
            },
            url: "http://127.0.0.1/dl".into(),
        },
    }
}

fn boot_a() -> BootFacts {
    BootFacts {
        boot_id: "boot-1".into(),
        slot: "A".into(),
    }
}

fn boot_b_after_reboot() -> BootFacts {
    BootFacts {
        boot_id: "boot-2".into(),
        slot: "B".into(),
    }
}

fn boot_a_after_reboot() -> BootFacts {
    BootFacts {
        boot_id: "boot-2".into(),
        slot: "A".into(),
    }
}

fn go(s: State, e: Event) -> Step {
    step(s, e, &boot_a())
}

fn feedbacks(actions: &[Action]) -> Vec<&Feedback> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Feedback(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn final_report(s: &State) -> &Feedback {
    match s {
        State::Reporting { report } => report,
        other => panic!("expected Reporting, got {other:?}"),
    }
}

/// Drives a fresh offer to each named state.
fn offered() -> State {
    go(State::Idle, Event::Offered(offer("7"))).0
}
fn downloading() -> State {
    go(
        offered(),
        Event::Space {
            free_mb: 100,
            need_mb: 10,
        },
    )
    .0
}
fn downloaded() -> State {
    go(downloading(), Event::Verified).0
}
fn waiting() -> State {
    go(
        downloaded(),
        Event::Policy(Decision::Wait(WaitReason::OutsideInstallWindow)),
    )
    .0
}
fn installing() -> State {
    go(downloaded(), Event::Policy(Decision::Go)).0
}
fn reboot_pending() -> State {
    go(installing(), Event::InstallFinished { error: None }).0
}
fn rebooting() -> State {
    go(reboot_pending(), Event::Policy(Decision::Go)).0
}
fn verifying() -> State {
    step(rebooting(), Event::Started, &boot_b_after_reboot()).0
}
fn marking() -> State {
    go(verifying(), Event::Healthy).0
}

#[test]
fn an_offer_is_accepted_and_the_disk_checked() {
    let (s, a) = go(State::Idle, Event::Offered(offer("7")));
    assert_eq!(s.name(), "offered");
    assert!(a.contains(&Action::CheckSpace { bytes: 1000 }));
    assert_eq!(feedbacks(&a)[0].execution, Execution::Proceeding);
}

#[test]
fn download_skip_is_not_fetched() {
    let mut o = offer("7");
    o.download = Handling::Skip;
    let (s, a) = go(State::Idle, Event::Offered(o));
    assert_eq!(s, State::Idle);
    assert!(a.is_empty());
}

#[test]
fn a_full_disk_fails_the_action_without_downloading() {
    let (s, a) = go(
        offered(),
        Event::Space {
            free_mb: 5,
            need_mb: 40,
        },
    );
    let r = final_report(&s);
    assert_eq!(
        (r.execution, r.finished),
        (Execution::Closed, Finished::Failure)
    );
    assert!(r.details[0].contains("not enough space"), "{:?}", r.details);
    assert!(!a.contains(&Action::Download));
}

#[test]
fn enough_space_starts_the_download() {
    let (s, a) = go(
        offered(),
        Event::Space {
            free_mb: 100,
            need_mb: 10,
        },
    );
    assert_eq!(s.name(), "downloading");
    assert_eq!(a, vec![Action::Download]);
}

#[test]
fn progress_is_reported_in_ten_percent_steps() {
    let s = downloading();
    let (s, a) = go(s, Event::Progress { have: 50 });
    assert!(feedbacks(&a).is_empty(), "5% is not reported");
    let (s, a) = go(s, Event::Progress { have: 130 });
    assert_eq!(feedbacks(&a)[0].progress, Some((130, 1000)));
    let (s, a) = go(s, Event::Progress { have: 190 });
    assert!(feedbacks(&a).is_empty(), "still in the 10% step");
    let (_, a) = go(s, Event::Progress { have: 1000 });
    assert_eq!(feedbacks(&a)[0].progress, Some((1000, 1000)));
}

#[test]
fn a_wrong_hash_fails_and_deletes_the_download() {
    let (s, a) = go(
        downloading(),
        Event::HashMismatch {
            algorithm: "sha256",
        },
    );
    assert!(final_report(&s).details[0].contains("sha256"));
    assert_eq!(final_report(&s).finished, Finished::Failure);
    assert!(a.contains(&Action::DeleteDownload));
}

#[test]
fn a_permanent_download_error_is_reported_not_retried() {
    let (s, a) = go(
        downloading(),
        Event::DownloadFailed {
            reason: "HTTP 404".into(),
            permanent: true,
        },
    );
    assert!(final_report(&s).details[0].contains("404"));
    assert!(!a.contains(&Action::Download));
}

#[test]
fn a_transient_download_error_resumes() {
    let (s, a) = go(
        downloading(),
        Event::DownloadFailed {
            reason: "connection reset".into(),
            permanent: false,
        },
    );
    assert_eq!(s.name(), "downloading");
    assert_eq!(a, vec![Action::Download]);
}

#[test]
fn verified_and_installable_asks_the_policy() {
    let (s, a) = go(downloading(), Event::Verified);
    assert_eq!(s.name(), "downloaded");
    assert_eq!(feedbacks(&a)[0].execution, Execution::Downloaded);
    assert!(a.contains(&Action::EvaluatePolicy));
}

#[test]
fn a_closed_server_window_downloads_then_waits_and_installs_when_it_opens() {
    let mut o = offer("7");
    o.server_window_open = false;
    o.update = Handling::Skip;
    let s = go(State::Idle, Event::Offered(o.clone())).0;
    let s = go(
        s,
        Event::Space {
            free_mb: 100,
            need_mb: 10,
        },
    )
    .0;
    let (s, a) = go(s, Event::Verified);
    assert!(matches!(
        s,
        State::WaitingForWindow {
            reason: WaitReason::ServerWindowClosed,
            ..
        }
    ));
    assert!(!a.contains(&Action::EvaluatePolicy));
    // The policy cannot start an install the server does not allow.
    let (s, a) = go(s, Event::Policy(Decision::Go));
    assert_eq!(s.name(), "waiting_for_window");
    assert!(a.is_empty());
    // The same poll again: still closed, nothing new.
    let (s, a) = go(s, Event::Offered(o.clone()));
    assert_eq!(s.name(), "waiting_for_window");
    assert!(a.is_empty());
    // The window opens.
    o.server_window_open = true;
    o.update = Handling::Forced;
    let (s, a) = go(s, Event::Offered(o));
    assert_eq!(s.name(), "downloaded");
    assert!(s.offer().unwrap().forced());
    assert_eq!(a, vec![Action::EvaluatePolicy]);
}

#[test]
fn a_closed_local_window_waits_and_reports_the_reason_once_per_change() {
    let (s, a) = go(
        downloaded(),
        Event::Policy(Decision::Wait(WaitReason::OutsideInstallWindow)),
    );
    assert_eq!(s.name(), "waiting_for_window");
    assert!(feedbacks(&a)[0].details[0].contains("install window"));
    let (s, _) = go(
        s,
        Event::Policy(Decision::Wait(WaitReason::RecentScan { minutes_ago: 2 })),
    );
    assert!(matches!(
        s,
        State::WaitingForWindow {
            reason: WaitReason::RecentScan { .. },
            ..
        }
    ));
    let (s, a) = go(s, Event::Policy(Decision::Go));
    assert_eq!(s.name(), "installing");
    assert!(a.contains(&Action::Install));
}

#[test]
fn a_busy_scanner_and_a_full_outbox_wait() {
    for reason in [
        WaitReason::RecentScan { minutes_ago: 1 },
        WaitReason::OutboxNotDrained { depth: 4 },
        WaitReason::SessionWindow {
            session: "morning".into(),
        },
    ] {
        let (s, a) = go(downloaded(), Event::Policy(Decision::Wait(reason.clone())));
        assert_eq!(
            s,
            State::WaitingForWindow {
                offer: offer("7"),
                reason
            }
        );
        assert!(!a.contains(&Action::Install));
    }
}

#[test]
fn install_records_the_boot_it_started_in() {
    match installing() {
        State::Installing { before, .. } => assert_eq!(before, boot_a()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn install_progress_is_forwarded_in_steps() {
    let (s, a) = go(installing(), Event::InstallProgress { percent: 35 });
    assert_eq!(feedbacks(&a)[0].progress, Some((35, 100)));
    let (_, a) = go(s, Event::InstallProgress { percent: 38 });
    assert!(feedbacks(&a).is_empty());
}

#[test]
fn a_failed_install_is_reported_with_raucs_reason() {
    let (s, a) = go(
        installing(),
        Event::InstallFinished {
            error: Some("signature verification failed".into()),
        },
    );
    assert!(final_report(&s).details[0].contains("signature verification failed"));
    assert!(a.contains(&Action::DeleteDownload));
}

#[test]
fn a_finished_install_does_not_report_success() {
    let (s, a) = go(installing(), Event::InstallFinished { error: None });
    assert_eq!(s.name(), "reboot_pending");
    assert!(
        feedbacks(&a)
            .iter()
            .all(|f| f.execution == Execution::Proceeding)
    );
    assert!(a.contains(&Action::EvaluatePolicy));
}

#[test]
fn the_reboot_waits_for_the_policy() {
    let (s, a) = go(
        reboot_pending(),
        Event::Policy(Decision::Wait(WaitReason::RecentScan { minutes_ago: 0 })),
    );
    assert_eq!(s.name(), "reboot_pending");
    assert_eq!(feedbacks(&a).len(), 1);
    let (s, a) = go(
        s,
        Event::Policy(Decision::Wait(WaitReason::RecentScan { minutes_ago: 0 })),
    );
    assert!(a.is_empty(), "the same reason is not reported again");
    let (s, a) = go(s, Event::Policy(Decision::Go));
    assert_eq!(s.name(), "rebooting");
    assert!(a.contains(&Action::Reboot));
}

#[test]
fn booting_the_new_slot_waits_for_health_then_marks_then_reports_success() {
    let (s, a) = step(rebooting(), Event::Started, &boot_b_after_reboot());
    assert_eq!(s.name(), "verifying");
    assert_eq!(a, vec![Action::WaitHealthy]);
    let (s, a) = go(s, Event::Healthy);
    assert_eq!(s.name(), "marking");
    assert_eq!(a, vec![Action::MarkGood]);
    let (s, a) = go(s, Event::Marked { error: None });
    let r = final_report(&s);
    assert_eq!(
        (r.execution, r.finished),
        (Execution::Closed, Finished::Success)
    );
    assert_eq!(feedbacks(&a), vec![r]);
    let (s, a) = go(s, Event::Reported);
    assert_eq!(s, State::Idle);
    assert!(a.is_empty());
}

#[test]
fn a_failed_mark_is_a_failure() {
    let (s, _) = go(
        marking(),
        Event::Marked {
            error: Some("no such slot".into()),
        },
    );
    assert_eq!(final_report(&s).finished, Finished::Failure);
}

#[test]
fn an_unhealthy_new_slot_is_a_failure_naming_the_version() {
    let (s, _) = go(verifying(), Event::HealthDeadline);
    let r = final_report(&s);
    assert_eq!(r.finished, Finished::Failure);
    assert!(r.details[0].contains("2.0"));
}

#[test]
fn coming_back_on_the_old_slot_is_a_failure_naming_version_and_slot() {
    for s in [rebooting(), verifying(), marking(), reboot_pending()] {
        let (s, _) = step(s, Event::Started, &boot_a_after_reboot());
        let r = final_report(&s);
        assert_eq!(r.finished, Finished::Failure);
        assert!(r.details[0].contains("2.0") && r.details[0].contains("old slot A"));
    }
}

#[test]
fn an_agent_restart_without_a_reboot_reboots_again() {
    let (s, a) = go(rebooting(), Event::Started);
    assert_eq!(s.name(), "rebooting");
    assert_eq!(a, vec![Action::Reboot]);
    let (s, a) = go(reboot_pending(), Event::Started);
    assert_eq!(s.name(), "reboot_pending");
    assert_eq!(a, vec![Action::EvaluatePolicy]);
}

#[test]
fn a_restart_resumes_every_state() {
    assert_eq!(go(State::Idle, Event::Started), (State::Idle, vec![]));
    assert_eq!(
        go(offered(), Event::Started).1,
        vec![Action::CheckSpace { bytes: 1000 }]
    );
    assert_eq!(go(downloading(), Event::Started).1, vec![Action::Download]);
    assert_eq!(
        go(downloaded(), Event::Started).1,
        vec![Action::EvaluatePolicy]
    );
    assert_eq!(
        go(waiting(), Event::Started).1,
        vec![Action::EvaluatePolicy]
    );
    // A power cut during the install verifies the bundle again and retries.
    let (s, a) = go(installing(), Event::Started);
    assert_eq!(s.name(), "downloading");
    assert!(a.contains(&Action::Download));
    // Verifying after a restart in the same boot of the new slot.
    let (s, a) = step(verifying(), Event::Started, &boot_b_after_reboot());
    assert_eq!(s.name(), "verifying");
    assert_eq!(a, vec![Action::WaitHealthy]);
    let (s, a) = step(marking(), Event::Started, &boot_b_after_reboot());
    assert_eq!(s.name(), "verifying", "marking again is harmless");
    assert_eq!(a, vec![Action::WaitHealthy]);
    // An undelivered report is sent again.
    let failed = go(downloading(), Event::HashMismatch { algorithm: "md5" }).0;
    let (s, a) = go(failed.clone(), Event::Started);
    assert_eq!(s, failed);
    assert_eq!(feedbacks(&a), vec![final_report(&failed)]);
}

#[test]
fn cancel_is_honoured_before_rauc_writes() {
    for s in [
        State::Idle,
        offered(),
        downloading(),
        downloaded(),
        waiting(),
    ] {
        let name = s.name();
        let (next, a) = go(
            s,
            Event::Cancel {
                stop_id: "7".into(),
            },
        );
        assert_eq!(next, State::Idle, "{name}");
        assert!(
            a.iter().any(|a| matches!(
                a,
                Action::CancelFeedback { accepted: true, stop_id, .. } if stop_id == "7"
            )),
            "{name}: {a:?}"
        );
        if name != "idle" {
            assert!(a.contains(&Action::DeleteDownload), "{name}");
        }
    }
}

#[test]
fn cancel_is_rejected_with_a_reason_once_rauc_writes() {
    for s in [
        installing(),
        reboot_pending(),
        rebooting(),
        verifying(),
        marking(),
        go(downloading(), Event::HashMismatch { algorithm: "sha1" }).0,
    ] {
        let before = s.clone();
        let (next, a) = go(
            s,
            Event::Cancel {
                stop_id: "7".into(),
            },
        );
        assert_eq!(next, before, "state unchanged");
        match a.as_slice() {
            [
                Action::CancelFeedback {
                    accepted: false,
                    details,
                    ..
                },
            ] => assert!(!details.is_empty()),
            other => panic!("{}: {other:?}", before.name()),
        }
    }
    match go(
        installing(),
        Event::Cancel {
            stop_id: "7".into(),
        },
    )
    .1
    .as_slice()
    {
        [Action::CancelFeedback { details, .. }] => assert!(details.contains("RAUC is writing")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_action_replaces_one_not_yet_installing_but_not_one_installing() {
    let (s, a) = go(downloading(), Event::Offered(offer("8")));
    assert_eq!(s.offer().unwrap().action_id, "8");
    assert_eq!(s.name(), "offered");
    assert!(a.contains(&Action::DeleteDownload));
    let (s, a) = go(installing(), Event::Offered(offer("8")));
    assert_eq!(s.offer().unwrap().action_id, "7");
    assert!(a.is_empty());
    // The same action polled again during the download changes nothing.
    let (s, a) = go(downloading(), Event::Offered(offer("7")));
    assert_eq!(s.name(), "downloading");
    assert!(a.is_empty());
}

#[test]
fn events_that_do_not_apply_are_ignored() {
    for (s, e) in [
        (State::Idle, Event::Verified),
        (State::Idle, Event::Healthy),
        (offered(), Event::Progress { have: 5 }),
        (downloaded(), Event::InstallFinished { error: None }),
        (verifying(), Event::Policy(Decision::Go)),
        (installing(), Event::Reported),
    ] {
        let before = s.clone();
        assert_eq!(go(s, e), (before, vec![]));
    }
}

#[test]
fn states_survive_a_round_trip_through_json() {
    for s in [
        State::Idle,
        offered(),
        downloading(),
        downloaded(),
        waiting(),
        installing(),
        reboot_pending(),
        rebooting(),
        verifying(),
        marking(),
        go(verifying(), Event::HealthDeadline).0,
    ] {
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s, "{text}");
    }
}
