//! When to renew a certificate and how long to wait after a failure: pure arithmetic on times,
//! kept apart so it can be tested without a CA.

use std::time::{Duration, SystemTime};

/// The longest wait between attempts after failures.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// How often a CA's renewal info (ARI) is asked again, at least and at most, whatever its
/// `Retry-After` says.
pub(crate) const ARI_RECHECK: (Duration, Duration) =
    (Duration::from_secs(3600), Duration::from_secs(24 * 3600));

/// Two thirds into the certificate's lifetime, as Let's Encrypt and Caddy advise.
pub(crate) fn two_thirds(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime * 2 / 3
}

/// A time inside the CA's suggested window (RFC 9773 §4.2 asks clients to pick one at random,
/// so that renewals spread out); `spread` in [0, 1) says where.
pub(crate) fn in_window(start: SystemTime, end: SystemTime, spread: f64) -> SystemTime {
    let width = end.duration_since(start).unwrap_or_default();
    start + width.mul_f64(spread.clamp(0.0, 1.0))
}

/// The wait after `failures` consecutive failed attempts (1 or more): `first`, doubling each
/// time, up to [`MAX_BACKOFF`].
pub(crate) fn backoff(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// A certificate is shown as expiring when less than a sixth of its lifetime remains: by then
/// renewal (due at two thirds) has been failing for half of its window.
pub(crate) fn expiring(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after.duration_since(now).unwrap_or_default() < lifetime / 6
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renews_two_thirds_in_and_inside_the_ari_window() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        assert_eq!(two_thirds(start, start + 90 * DAY), start + 60 * DAY);
        assert_eq!(in_window(start, start + 2 * DAY, 0.0), start);
        assert_eq!(in_window(start, start + 2 * DAY, 0.5), start + DAY);
        assert_eq!(in_window(start, start + 2 * DAY, 7.0), start + 2 * DAY);
        // A window that ends before it starts is its start.
        assert_eq!(in_window(start + DAY, start, 0.5), start + DAY);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(minute, 1), minute);
        assert_eq!(backoff(minute, 2), 2 * minute);
        assert_eq!(backoff(minute, 4), 8 * minute);
        assert_eq!(backoff(minute, 40), MAX_BACKOFF);
        assert_eq!(backoff(minute, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn expiring_in_the_last_sixth() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 60 * DAY;
        assert!(!expiring(start, end, start + 49 * DAY));
        assert!(expiring(start, end, start + 51 * DAY));
        assert!(expiring(start, end, end + DAY));
    }
}
