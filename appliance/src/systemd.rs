//! Telling systemd how gatehouse is doing, for `Type=notify` units (the .deb's): ready once
//! serving, reloading, stopping, and watchdog pings from the thread that owns the configuration,
//! so a gatehouse whose control loop hangs is restarted. Without `NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Serving.
pub(crate) fn ready() {
    send(&[NotifyState::Ready]);
}

/// Reloading the configuration; [`ready`] follows.
pub(crate) fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// Draining before exit.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Still alive.
pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: twice per period systemd allows, when it watches.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}
