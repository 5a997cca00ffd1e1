//! The password rules of a server: which addresses it may listen on without one, and the gate
//! each connection passes through when it has one.
//!
//! A connection starts closed when the server has a password. Both dialects ask the gate
//! before every request: only `AUTH`, `HELLO` and `QUIT` (RESP) or `Auth` (native) pass a
//! closed gate. A failed attempt is answered late: the answer to the n-th failure on a
//! connection is released `fail_delay * 2^(n-1)` (at most [`AUTH_FAIL_DELAY_GROWTH_MAX`] times
//! `fail_delay`) after the previous failure's answer, so pipelined guesses queue up behind each
//! other rather than run in parallel. The wait is a timer in the session's ordered response
//! queue: the worker thread and other connections go on meanwhile. After
//! [`AUTH_FAILURES_MAX`] failures the connection is closed once the last answer is out. A
//! server shutdown does not wait for a held-back answer; it closes the connection.
//!
//! Failures are also spaced per worker, across all its connections: a worker releases at most
//! one failed attempt's answer every [`AUTH_FAIL_SPACING_DIVISOR`]-th of `fail_delay` (10 a
//! second at the default 200 ms), so opening many connections does not multiply an attacker's
//! guessing rate. A right password is answered at once, whatever the queue of failures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::Password;
use crate::limits::{
    AUTH_FAILURES_MAX, AUTH_FAIL_DELAY_GROWTH_MAX, AUTH_FAIL_DELAY_MS, AUTH_FAIL_SPACING_DIVISOR,
};

thread_local! {
    /// The earliest time this worker thread releases its next failed attempt's answer.
    static NEXT_FAILURE_SLOT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Takes this worker's next slot for a failed attempt's answer: no earlier than `now`, and
/// `spacing` after the slot taken before it.
fn worker_failure_slot(now: Instant, spacing: Duration) -> Instant {
    NEXT_FAILURE_SLOT.with(|next| {
        let slot = next.get().map_or(now, |n| n.max(now));
        next.set(Some(slot + spacing));
        slot
    })
}

/// The RESP user whose password the server's password is (Redis's `default` user).
pub const DEFAULT_USER: &[u8] = b"default";

/// A server's password settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `None`: clients need not authenticate.
    pub password: Option<Arc<Password>>,
    /// The delay of the answer to a connection's first failed attempt.
    pub fail_delay: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password: None,
            fail_delay: Duration::from_millis(AUTH_FAIL_DELAY_MS),
        }
    }
}

/// Refuses to listen on an address other machines can reach unless a password is set.
/// Loopback means 127.0.0.0/8 and ::1 (and ::ffff:127.x.y.z); 0.0.0.0 and :: are not.
pub fn check_listen_address(addr: SocketAddr, has_password: bool) -> Result<(), String> {
    if has_password || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {addr} without a password: it is not a loopback address, so \
         other machines could read and write every key; set one with --requirepass-file PATH \
         (or --requirepass PASSWORD), or listen on 127.0.0.1"
    ))
}

/// How much later than the previous failure's answer the answer to failure number `failures`
/// (from 1) on a connection is released.
pub fn fail_delay(first: Duration, failures: u32) -> Duration {
    let doubling = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first.saturating_mul(doubling.min(AUTH_FAIL_DELAY_GROWTH_MAX))
}

/// What the gate made of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The connection is authenticated.
    Accepted,
    /// Wrong password (or user): answer no earlier than `until`, then close if `close`.
    Refused { until: Instant, close: bool },
}

/// One connection's authentication state.
#[derive(Debug)]
pub struct Gate {
    config: AuthConfig,
    open: bool,
    failures: u32,
    /// When the answer to the latest failure is released.
    released: Instant,
}

impl Gate {
    pub fn new(config: AuthConfig) -> Gate {
        Gate {
            open: config.password.is_none(),
            config,
            failures: 0,
            released: Instant::now(),
        }
    }

    /// Whether requests other than authentication pass.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether the server has a password at all.
    pub fn has_password(&self) -> bool {
        self.config.password.is_some()
    }

    /// An attempt to authenticate as `user` (`None`: the default user) with `candidate`.
    /// Without a server password the default user needs none, as in Redis. A failed attempt
    /// leaves an authenticated connection authenticated, as in Redis.
    pub fn attempt(&mut self, user: Option<&[u8]>, candidate: &[u8]) -> Verdict {
        let user_ok = user.is_none_or(|u| u == DEFAULT_USER);
        // Compared whatever the user, so the time does not tell which part was wrong.
        let password_ok = self
            .config
            .password
            .as_ref()
            .is_none_or(|p| p.matches(candidate));
        if user_ok && password_ok {
            self.open = true;
            return Verdict::Accepted;
        }
        self.failures = self.failures.saturating_add(1);
        let now = Instant::now();
        let slot = worker_failure_slot(now, self.config.fail_delay / AUTH_FAIL_SPACING_DIVISOR);
        self.released = self.released.max(slot) + fail_delay(self.config.fail_delay, self.failures);
        let close = self.failures >= AUTH_FAILURES_MAX;
        if close {
            tracing::warn!(
                "closing a connection after {} failed password attempts",
                self.failures
            );
        }
        Verdict::Refused {
            until: self.released,
            close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_password(pw: &str, first_ms: u64) -> AuthConfig {
        AuthConfig {
            password: Some(Arc::new(Password::new(pw.to_owned()).unwrap())),
            fail_delay: Duration::from_millis(first_ms),
        }
    }

    #[test]
    fn only_loopback_addresses_may_go_without_a_password() {
        // Guards against a server reachable from other machines with no password at all.
        for ok in [
            "127.0.0.1:4000",
            "127.1.2.3:0",
            "[::1]:4000",
            "[::ffff:127.0.0.1]:1",
        ] {
            let addr: SocketAddr = ok.parse().unwrap();
            assert_eq!(check_listen_address(addr, false), Ok(()), "{ok}");
        }
        for refused in [
            "0.0.0.0:4000",
            "[::]:4000",
            "192.168.1.5:4000",
            "10.0.0.1:0",
            "[fe80::1]:4000",
            "[::ffff:10.0.0.1]:1",
        ] {
            let addr: SocketAddr = refused.parse().unwrap();
            let e = check_listen_address(addr, false).unwrap_err();
            assert!(
                e.contains(&addr.to_string())
                    && e.contains("--requirepass-file")
                    && e.contains("--requirepass PASSWORD"),
                "{e}"
            );
            assert!(!e.contains('\n'));
            assert_eq!(check_listen_address(addr, true), Ok(()), "{refused}");
        }
    }

    #[test]
    fn failure_delays_double_up_to_ten_times_the_first() {
        // Guards against a delay that does not grow, grows without bound, or overflows.
        let first = Duration::from_millis(200);
        let ms: Vec<u128> = (1..=12).map(|n| fail_delay(first, n).as_millis()).collect();
        assert_eq!(
            ms,
            [200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000]
        );
        assert_eq!(fail_delay(first, u32::MAX), Duration::from_secs(2));
        assert_eq!(fail_delay(first, 0), first);
    }

    #[test]
    fn the_gate_opens_on_the_password_and_delays_failures_one_after_another() {
        // Guards against pipelined guesses answered in parallel, or a connection guessing forever.
        let mut gate = Gate::new(with_password("s3cret", 100));
        assert!(!gate.is_open() && gate.has_password());
        let near = |d: Duration, ms: u64| {
            d >= Duration::from_millis(ms) && d < Duration::from_millis(ms + 50)
        };
        let start = Instant::now();
        let Verdict::Refused { until, close } = gate.attempt(None, b"nope") else {
            panic!()
        };
        assert!(near(until - start, 100) && !close, "{:?}", until - start);
        // A second guess at once waits for the first's answer, then its own, longer delay.
        let Verdict::Refused { until, .. } = gate.attempt(None, b"nope") else {
            panic!()
        };
        assert!(near(until - start, 300), "{:?}", until - start);
        // The right password for another user is refused too.
        assert!(matches!(
            gate.attempt(Some(b"bob"), b"s3cret"),
            Verdict::Refused { .. }
        ));
        assert!(!gate.is_open());
        assert_eq!(gate.attempt(Some(b"default"), b"s3cret"), Verdict::Accepted);
        assert!(gate.is_open());
        // A failure after success keeps the connection open, as in Redis.
        assert!(matches!(gate.attempt(None, b"x"), Verdict::Refused { .. }));
        assert!(gate.is_open());
        let mut closes = Vec::new();
        for _ in 5..=AUTH_FAILURES_MAX {
            match gate.attempt(None, b"x") {
                Verdict::Refused { close, .. } => closes.push(close),
                Verdict::Accepted => panic!(),
            }
        }
        assert_eq!(closes.iter().filter(|c| **c).count(), 1);
        assert_eq!(closes.last(), Some(&true));
    }

    #[test]
    fn failures_on_many_connections_of_a_worker_are_spaced_out() {
        // Guards against an attacker multiplying its guessing rate by opening connections: the
        // first failure of each of 20 fresh connections on one thread is released a spacing
        // after the one before, while the right password is accepted at once.
        let config = with_password("s3cret", 100);
        let spacing = Duration::from_millis(100) / AUTH_FAIL_SPACING_DIVISOR;
        let start = Instant::now();
        let releases: Vec<Instant> = (0..20)
            .map(
                |_| match Gate::new(config.clone()).attempt(None, b"guess") {
                    Verdict::Refused { until, .. } => until,
                    Verdict::Accepted => panic!("a wrong password was accepted"),
                },
            )
            .collect();
        for pair in releases.windows(2) {
            assert!(pair[1] - pair[0] >= spacing, "{:?}", pair[1] - pair[0]);
        }
        assert!(releases[19] - start >= spacing * 19 + Duration::from_millis(100));
        assert_eq!(
            Gate::new(config).attempt(None, b"s3cret"),
            Verdict::Accepted
        );
    }

    #[test]
    fn without_a_password_the_default_user_needs_none() {
        // Guards against `AUTH default x` failing without a server password, as Redis accepts it.
        let mut gate = Gate::new(AuthConfig::default());
        assert!(gate.is_open() && !gate.has_password());
        assert_eq!(gate.attempt(Some(b"default"), b"x"), Verdict::Accepted);
        assert!(matches!(
            gate.attempt(Some(b"bob"), b"x"),
            Verdict::Refused { .. }
        ));
    }
}
