//! Who is connected: every client (with its cancel key and where its cancels go) and every
//! server connection, each with its state as PgBouncer names them, for the admin console,
//! `/api/v1/pool` and `/metrics`. State changes are atomic stores; the maps are locked only on
//! connect, disconnect, cancel and when an admin looks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use super::cancel::cancel_server;
use super::codec::BackendKey;
use super::pools::PoolKey;

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// Logged in, holding nothing (client) or in the pool (server).
    Idle = 0,
    /// A client waiting for a server connection.
    Waiting = 1,
    /// Linked: a client holding a server, a server serving a client.
    Active = 2,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Waiting => "waiting",
            Self::Active => "active",
        }
    }
}

/// Microseconds on the process's monotonic clock.
pub(crate) fn now_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A state and when it began.
#[derive(Debug)]
pub(crate) struct Link {
    state: AtomicU8,
    since: AtomicU64,
    /// The other end: the server's id for a client, the client's pid for a server; 0: none.
    peer: AtomicU64,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(State::Idle as u8),
            since: AtomicU64::new(now_micros()),
            peer: AtomicU64::new(0),
        }
    }
}

impl Link {
    pub(crate) fn set(&self, state: State, peer: u64) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.since.store(now_micros(), Ordering::Relaxed);
        self.peer.store(peer, Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            1 => State::Waiting,
            2 => State::Active,
            _ => State::Idle,
        }
    }

    /// Microseconds in the current state.
    pub(crate) fn for_micros(&self) -> u64 {
        now_micros().saturating_sub(self.since.load(Ordering::Relaxed))
    }

    pub(crate) fn peer(&self) -> u64 {
        self.peer.load(Ordering::Relaxed)
    }
}

/// A logged-in client.
#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub(crate) key: BackendKey,
    pub(crate) pool: PoolKey,
    pub(crate) addr: SocketAddr,
    pub(crate) connected: SystemTime,
    pub(crate) application_name: String,
    pub(crate) link: Link,
    /// Where a cancel goes now: the server connection's address and key.
    cancel_target: Mutex<Option<(SocketAddr, BackendKey)>>,
}

impl ClientEntry {
    /// The client got (`Some`) or gave back (`None`) a server connection.
    pub(crate) fn set_cancel_target(&self, target: Option<(SocketAddr, BackendKey)>) {
        *self.cancel_target.lock().expect("cancel target lock") = target;
    }
}

/// A server connection.
#[derive(Debug)]
pub(crate) struct ServerEntry {
    pub(crate) id: u64,
    pub(crate) pool: PoolKey,
    pub(crate) addr: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) connected: SystemTime,
    pub(crate) remote_pid: i32,
    pub(crate) link: Link,
}

/// Every client and server connection.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    clients: Mutex<HashMap<i32, Arc<ClientEntry>>>,
    servers: Mutex<HashMap<u64, Arc<ServerEntry>>>,
    next_pid: AtomicI32,
}

impl Registry {
    /// Registers a client under a fresh key; [`Registry::forget_client`] it when it leaves.
    pub(crate) fn add_client(
        &self,
        pool: PoolKey,
        addr: SocketAddr,
        application_name: String,
    ) -> Arc<ClientEntry> {
        let mut secret = [0u8; 4];
        getrandom::fill(&mut secret).expect("the OS random source works");
        // Positive, like PostgreSQL's process ids.
        let pid = (self.next_pid.fetch_add(1, Ordering::Relaxed) & i32::MAX).max(1);
        let entry = Arc::new(ClientEntry {
            key: BackendKey {
                pid,
                secret: i32::from_be_bytes(secret),
            },
            pool,
            addr,
            connected: SystemTime::now(),
            application_name,
            link: Link::default(),
            cancel_target: Mutex::new(None),
        });
        self.clients
            .lock()
            .expect("clients lock")
            .insert(pid, Arc::clone(&entry));
        entry
    }

    pub(crate) fn forget_client(&self, key: BackendKey) {
        self.clients.lock().expect("clients lock").remove(&key.pid);
    }

    pub(crate) fn add_server(&self, entry: ServerEntry) -> Arc<ServerEntry> {
        let entry = Arc::new(entry);
        self.servers
            .lock()
            .expect("servers lock")
            .insert(entry.id, Arc::clone(&entry));
        entry
    }

    pub(crate) fn forget_server(&self, id: u64) {
        self.servers.lock().expect("servers lock").remove(&id);
    }

    pub(crate) fn clients(&self) -> Vec<Arc<ClientEntry>> {
        let mut clients: Vec<_> = self
            .clients
            .lock()
            .expect("clients lock")
            .values()
            .cloned()
            .collect();
        clients.sort_by_key(|c| c.key.pid);
        clients
    }

    pub(crate) fn servers(&self) -> Vec<Arc<ServerEntry>> {
        let mut servers: Vec<_> = self
            .servers
            .lock()
            .expect("servers lock")
            .values()
            .cloned()
            .collect();
        servers.sort_by_key(|s| s.id);
        servers
    }

    /// Forwards a client's cancel; a wrong secret or an idle client does nothing, as in
    /// PostgreSQL (which never answers a cancel request either).
    pub(crate) async fn cancel(&self, key: BackendKey) {
        let target = {
            let clients = self.clients.lock().expect("clients lock");
            match clients.get(&key.pid) {
                Some(client) if client.key.secret == key.secret => {
                    *client.cancel_target.lock().expect("cancel target lock")
                }
                _ => None,
            }
        };
        if let Some((addr, server_key)) = target {
            cancel_server(addr, server_key).await;
        }
    }
}
