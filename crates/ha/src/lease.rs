//! Roles and the write lease.

use std::fmt;
use std::time::{Duration, Instant};

/// An instance's part in hot failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The instance whose subscriber connectors write to the output topics.
    Active,
    /// Buffers its output, ready to take over.
    Standby,
    /// Not known to be either (joining, ZooKeeper unreachable, session lost, lease run out): the
    /// instance writes nothing and buffers like a standby.
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A time-limited permission to write, renewed on every proof that the ZooKeeper session is
/// alive (a reply to a request sent at `now`).
///
/// ZooKeeper deletes an instance's node at the earliest one session timeout after it last heard
/// from the instance, which is after the instance sent its last answered request. A lease
/// shorter than the session timeout, counted from the sending of that request, therefore runs
/// out before any other instance can see the node go and become active: a paused or partitioned
/// former active stops writing first. [`Lease::for_session`] takes 2/3 of the session timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    duration: Duration,
    renewed: Option<Instant>,
}

impl Lease {
    /// A lease of `duration`; not valid until first renewed.
    pub const fn new(duration: Duration) -> Lease {
        Lease {
            duration,
            renewed: None,
        }
    }

    /// A lease of 2/3 of `session_timeout`.
    pub fn for_session(session_timeout: Duration) -> Lease {
        Lease::new(session_timeout * 2 / 3)
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Records proof of session liveness: a reply to a request sent at `now`. An older `now`
    /// than the last renewal changes nothing.
    pub fn renew(&mut self, now: Instant) {
        if self.renewed.is_none_or(|r| now > r) {
            self.renewed = Some(now);
        }
    }

    /// Withdraws the lease (session lost, leaving).
    pub fn revoke(&mut self) {
        self.renewed = None;
    }

    /// Whether the holder may write at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|end| now < end)
    }

    /// When the lease runs out, if it was ever renewed.
    pub fn expires_at(&self) -> Option<Instant> {
        self.renewed.map(|r| r + self.duration)
    }

    /// How long the lease stays valid after `now` (zero when it is not valid).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at()
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn not_valid_until_renewed() {
        let l = Lease::new(100 * MS);
        let t = Instant::now();
        assert!(!l.valid(t));
        assert_eq!(l.expires_at(), None);
        assert_eq!(l.remaining(t), Duration::ZERO);
    }

    #[test]
    fn valid_for_its_duration_after_renewal() {
        let mut l = Lease::new(100 * MS);
        let t = Instant::now();
        l.renew(t);
        assert!(l.valid(t));
        assert!(l.valid(t + 99 * MS));
        assert!(!l.valid(t + 100 * MS));
        assert_eq!(l.remaining(t + 30 * MS), 70 * MS);
        l.renew(t + 50 * MS);
        assert!(l.valid(t + 149 * MS));
        assert!(!l.valid(t + 150 * MS));
    }

    #[test]
    fn an_older_renewal_does_not_shorten_or_extend() {
        let mut l = Lease::new(100 * MS);
        let t = Instant::now();
        l.renew(t + 50 * MS);
        l.renew(t); // a late reply to an earlier request
        assert_eq!(l.expires_at(), Some(t + 150 * MS));
    }

    #[test]
    fn revoke_ends_it_at_once() {
        let mut l = Lease::new(100 * MS);
        let t = Instant::now();
        l.renew(t);
        l.revoke();
        assert!(!l.valid(t));
    }

    #[test]
    fn session_lease_is_two_thirds_and_ends_before_the_session_can_expire() {
        let session = 600 * MS;
        let mut l = Lease::for_session(session);
        assert_eq!(l.duration(), 400 * MS);
        // The last answered request was sent at t; ZooKeeper heard it at t or later, so the
        // node cannot vanish before t + session: the lease is over by then.
        let t = Instant::now();
        l.renew(t);
        assert!(!l.valid(t + session));
        assert!(l.expires_at().unwrap() < t + session);
    }

    #[test]
    fn role_text() {
        assert_eq!(Role::Active.to_string(), "active");
        assert_eq!(Role::Standby.to_string(), "standby");
        assert_eq!(Role::Unknown.as_str(), "unknown");
    }
}
