//! Circuit breaker and retry backoff for one cloud endpoint.
//!
//! The engine is one task calling one endpoint at a time, so the breaker
//! needs no locking: half-open naturally means "exactly one probe".
//! Backoff is exponential with "equal jitter" (a uniformly random delay in
//! `[d/2, d]`), so a fleet of kiosks coming back after an outage does not
//! hit the project in lock step, yet each waits at least half the nominal
//! delay. It is a dozen lines on top of `rand`, which the crate already
//! has; the retry crates (`backon`, `backoff`) wrap the retried call, which
//! does not fit a loop that also has to interleave several endpoints.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::config::{BackoffConfig, BreakerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// One probe call is allowed; its outcome closes or reopens.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Breaker plus backoff of one endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub name: &'static str,
    breaker: BreakerConfig,
    backoff: BackoffConfig,
    state: BreakerState,
    /// Consecutive failures (drives both the breaker and the backoff).
    failures: u32,
    /// No call before this instant (backoff or open breaker).
    not_before: Option<Instant>,
}

impl Endpoint {
    pub fn new(name: &'static str, breaker: BreakerConfig, backoff: BackoffConfig) -> Self {
        Endpoint {
            name,
            breaker,
            backoff,
            state: BreakerState::Closed,
            failures: 0,
            not_before: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// `Ok` when a call may be made now, else how long to wait. An open
    /// breaker whose period has ended turns half-open here.
    pub fn ready(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(t) = self.not_before
            && now < t
        {
            return Err(t - now);
        }
        if self.state == BreakerState::Open {
            self.state = BreakerState::HalfOpen;
            tracing::info!(endpoint = self.name, "circuit breaker half-open: probing");
        }
        Ok(())
    }

    pub fn on_success(&mut self) {
        if self.state != BreakerState::Closed {
            tracing::info!(endpoint = self.name, "circuit breaker closed");
        }
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.not_before = None;
    }

    /// Records a failure; returns the delay before the next call.
    pub fn on_failure(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let mut delay = backoff_delay(&self.backoff, self.failures, &mut rand::thread_rng());
        let opens = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.failures >= self.breaker.failure_threshold,
            BreakerState::Open => false,
        };
        if opens {
            self.state = BreakerState::Open;
            tracing::warn!(
                endpoint = self.name,
                failures = self.failures,
                open_ms = self.breaker.open_ms,
                "circuit breaker open"
            );
        }
        if self.state == BreakerState::Open {
            delay = delay.max(Duration::from_millis(self.breaker.open_ms));
        }
        self.not_before = Some(now + delay);
        delay
    }
}

/// Delay after `failures` consecutive failures (1 = first failure).
pub fn backoff_delay(cfg: &BackoffConfig, failures: u32, rng: &mut impl Rng) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let nominal = cfg
        .initial_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.max_ms)
        .max(1);
    let low = nominal / 2;
    Duration::from_millis(rng.gen_range(low..=nominal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(threshold: u32, open_ms: u64) -> Endpoint {
        Endpoint::new(
            "t",
            BreakerConfig {
                failure_threshold: threshold,
                open_ms,
            },
            BackoffConfig {
                initial_ms: 10,
                max_ms: 80,
            },
        )
    }

    #[test]
    fn opens_after_threshold_then_half_opens_then_closes() {
        let t0 = Instant::now();
        let mut e = ep(3, 1000);
        assert!(e.ready(t0).is_ok());
        e.on_failure(t0);
        e.on_failure(t0);
        assert_eq!(e.state(), BreakerState::Closed);
        let d = e.on_failure(t0);
        assert_eq!(e.state(), BreakerState::Open);
        assert!(d >= Duration::from_millis(1000));
        assert!(e.ready(t0 + Duration::from_millis(500)).is_err());
        assert!(e.ready(t0 + d).is_ok());
        assert_eq!(e.state(), BreakerState::HalfOpen);
        e.on_success();
        assert_eq!(e.state(), BreakerState::Closed);
        assert_eq!(e.consecutive_failures(), 0);
        assert!(e.ready(t0 + d).is_ok());
    }

    #[test]
    fn a_failed_probe_reopens_at_once() {
        let t0 = Instant::now();
        let mut e = ep(2, 100);
        e.on_failure(t0);
        let d = e.on_failure(t0);
        assert!(e.ready(t0 + d).is_ok());
        assert_eq!(e.state(), BreakerState::HalfOpen);
        let d2 = e.on_failure(t0 + d);
        assert_eq!(e.state(), BreakerState::Open);
        assert!(e.ready(t0 + d + d2 / 2).is_err());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cfg = BackoffConfig {
            initial_ms: 100,
            max_ms: 1000,
        };
        let mut rng = rand::thread_rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d1 = backoff_delay(&cfg, 1, &mut rng).as_millis();
            assert!((50..=100).contains(&d1));
            let d3 = backoff_delay(&cfg, 3, &mut rng).as_millis();
            assert!((200..=400).contains(&d3));
            let d_big = backoff_delay(&cfg, 1000, &mut rng).as_millis();
            assert!((500..=1000).contains(&d_big));
            seen.insert(d3);
        }
        assert!(seen.len() > 10, "no jitter: {seen:?}");
    }
}
