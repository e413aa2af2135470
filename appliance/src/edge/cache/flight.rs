//! Request coalescing: of concurrent misses for one key, the first goes to the upstream and the
//! others wait for it to store the response (nginx's `proxy_cache_lock`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Keys being fetched now.
#[derive(Default)]
pub(crate) struct Flights {
    by_key: Mutex<HashMap<Arc<str>, watch::Receiver<()>>>,
}

/// What a miss does.
pub(crate) enum Join {
    /// Fetch it; the others wait until the guard is dropped.
    Lead(FlightGuard),
    /// Another request is fetching it; wait with [`Wait::done`].
    Wait(Wait),
}

/// Held by the request fetching a key; dropping it (stored, not storable, or failed) wakes the
/// waiters.
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: Arc<str>,
    _done: watch::Sender<()>,
}

/// A waiter's side of a flight.
pub(crate) struct Wait(watch::Receiver<()>);

impl Flights {
    /// Joins the flight for `key`, leading it when there is none.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>) -> Join {
        let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = by_key.get(key) {
            return Join::Wait(Wait(done.clone()));
        }
        let (sender, receiver) = watch::channel(());
        by_key.insert(Arc::clone(key), receiver);
        Join::Lead(FlightGuard {
            flights: Arc::clone(self),
            key: Arc::clone(key),
            _done: sender,
        })
    }
}

impl Wait {
    /// Resolves when the leader has finished (its sender is gone), however it finished.
    pub(crate) async fn done(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Out of the map before the sender drops, so a woken waiter that misses again leads
        // a new flight instead of joining this finished one.
        self.flights
            .by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leads_the_rest_wait_until_it_is_done() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "GET /p".into();
        let Join::Lead(guard) = flights.join(&key) else {
            panic!("the first miss leads")
        };
        let waiters: Vec<_> = (0..3)
            .map(|_| match flights.join(&key) {
                Join::Wait(wait) => tokio::spawn(wait.done()),
                Join::Lead(_) => panic!("a second leader"),
            })
            .collect();
        assert!(matches!(flights.join(&"GET /other".into()), Join::Lead(_)));
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        drop(guard);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert!(
            matches!(flights.join(&key), Join::Lead(_)),
            "a finished flight is gone"
        );
    }
}
