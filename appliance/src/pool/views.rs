//! The pooler's state as tables: the admin console answers `SHOW POOLS`, `SHOW STATS`, ... with
//! them (PgBouncer's column names where it has the column), and `/api/v1/pool` serves the same
//! rows as JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::Shared;
use super::registry::State;
use super::stats::PoolTotals;

/// Rows under named columns.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) columns: &'static [&'static str],
    pub(crate) rows: Vec<Vec<Value>>,
}

impl Table {
    /// An array of objects, one per row.
    pub(crate) fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let object: Map<String, Value> = self
                        .columns
                        .iter()
                        .map(|c| c.to_string())
                        .zip(row.iter().cloned())
                        .collect();
                    Value::Object(object)
                })
                .collect(),
        )
    }
}

/// What `SHOW` accepts, by name.
pub(crate) const VIEWS: &[&str] = &[
    "pools",
    "stats",
    "clients",
    "servers",
    "databases",
    "queries",
];

/// The table of `SHOW name`, if there is one.
pub(crate) fn view(shared: &Shared, name: &str) -> Option<Table> {
    Some(match name {
        "pools" => pools(shared),
        "stats" => stats(shared),
        "clients" => clients(shared),
        "servers" => servers(shared),
        "databases" => databases(shared),
        "queries" => queries(shared),
        _ => return None,
    })
}

/// Every view, as `/api/v1/pool` serves them.
pub(crate) fn all_json(shared: &Shared) -> Value {
    let mut object = Map::new();
    object.insert("enabled".into(), json!(true));
    object.insert(
        "mode".into(),
        json!(format!("{:?}", shared.config().mode).to_lowercase()),
    );
    for name in VIEWS {
        if let Some(table) = view(shared, name) {
            object.insert((*name).to_string(), table.to_json());
        }
    }
    object.insert("paused".into(), json!(shared.paused()));
    object.insert(
        "database_health".into(),
        serde_json::to_value(shared.health.probes()).unwrap_or_default(),
    );
    Value::Object(object)
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn pools(shared: &Shared) -> Table {
    let clients = shared.registry.clients();
    let rows = shared
        .pools
        .all()
        .iter()
        .map(|pool| {
            let mine = clients.iter().filter(|c| c.pool == pool.key);
            let (mut active, mut waiting, mut idle, mut max_wait) = (0, 0, 0, 0);
            for client in mine {
                match client.link.state() {
                    State::Active => active += 1,
                    State::Idle => idle += 1,
                    State::Waiting => {
                        waiting += 1;
                        max_wait = max_wait.max(client.link.for_micros());
                    }
                }
            }
            let status = pool.status();
            vec![
                json!(pool.key.database),
                json!(pool.key.user),
                json!(active),
                json!(waiting),
                json!(idle),
                json!(status.size - status.available),
                json!(status.available),
                json!(status.max_size),
                json!(max_wait / 1_000_000),
                json!(max_wait % 1_000_000),
                json!(format!("{:?}", pool.mode).to_lowercase()),
                json!(pool.is_paused()),
            ]
        })
        .collect();
    Table {
        columns: &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_idle",
            "sv_active",
            "sv_idle",
            "sv_max",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "paused",
        ],
        rows,
    }
}

fn stats(shared: &Shared) -> Table {
    let rows = shared
        .pools
        .all()
        .iter()
        .map(|pool| {
            let t = &pool.totals;
            let get = PoolTotals::get;
            let (xacts, queries) = (get(&t.transactions), get(&t.queries));
            let mean = |micros: u64, count: u64| micros / count.max(1);
            vec![
                json!(pool.key.database),
                json!(pool.key.user),
                json!(xacts),
                json!(queries),
                json!(get(&t.received)),
                json!(get(&t.sent)),
                json!(get(&t.transaction_micros)),
                json!(get(&t.query_micros)),
                json!(get(&t.wait_micros)),
                json!(mean(get(&t.transaction_micros), xacts)),
                json!(mean(get(&t.query_micros), queries)),
                json!(get(&t.acquire_errors)),
            ]
        })
        .collect();
    Table {
        columns: &[
            "database",
            "user",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "avg_xact_time",
            "avg_query_time",
            "total_acquire_errors",
        ],
        rows,
    }
}

fn clients(shared: &Shared) -> Table {
    let rows = shared
        .registry
        .clients()
        .iter()
        .map(|client| {
            let state = client.link.state();
            vec![
                json!("C"),
                json!(client.pool.user),
                json!(client.pool.database),
                json!(state.name()),
                json!(client.addr.ip().to_string()),
                json!(client.addr.port()),
                json!(unix_seconds(client.connected)),
                json!(if state == State::Waiting {
                    client.link.for_micros()
                } else {
                    0
                }),
                json!(match client.link.peer() {
                    0 => Value::Null,
                    server => json!(server),
                }),
                json!(client.key.pid),
                json!(client.application_name),
            ]
        })
        .collect();
    Table {
        columns: &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "connect_time",
            "wait_us",
            "link",
            "pid",
            "application_name",
        ],
        rows,
    }
}

fn servers(shared: &Shared) -> Table {
    let rows = shared
        .registry
        .servers()
        .iter()
        .map(|server| {
            vec![
                json!("S"),
                json!(server.pool.user),
                json!(server.pool.database),
                json!(server.link.state().name()),
                json!(server.addr.ip().to_string()),
                json!(server.addr.port()),
                json!(server.local.ip().to_string()),
                json!(server.local.port()),
                json!(unix_seconds(server.connected)),
                json!(match server.link.peer() {
                    0 => Value::Null,
                    client => json!(client),
                }),
                json!(server.id),
                json!(server.remote_pid),
            ]
        })
        .collect();
    Table {
        columns: &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "local_addr",
            "local_port",
            "connect_time",
            "link",
            "id",
            "remote_pid",
        ],
        rows,
    }
}

fn databases(shared: &Shared) -> Table {
    let config = shared.config();
    let servers = shared.registry.servers();
    let rows = config
        .databases
        .iter()
        .map(|(name, db)| {
            let current = servers.iter().filter(|s| &s.pool.database == name).count();
            vec![
                json!(name),
                json!(db.host),
                json!(db.port),
                json!(db.dbname.as_deref().unwrap_or(name)),
                json!(db.user),
                json!(db.pool_size.unwrap_or(config.pool_size)),
                json!(config.max_overflow),
                json!(format!("{:?}", db.mode.unwrap_or(config.mode)).to_lowercase()),
                json!(current),
                json!(shared.is_paused(name)),
            ]
        })
        .collect();
    Table {
        columns: &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "max_overflow",
            "pool_mode",
            "current_connections",
            "paused",
        ],
        rows,
    }
}

fn queries(shared: &Shared) -> Table {
    let millis = |d: std::time::Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let mut rows = Vec::new();
    for pool in shared.pools.all() {
        for shape in pool.queries.shapes() {
            rows.push(vec![
                json!(pool.key.database),
                json!(pool.key.user),
                json!(shape.text),
                json!(shape.calls),
                json!(millis(shape.total)),
                json!(millis(shape.mean())),
                json!(millis(shape.p99())),
                json!(shape.rows),
                json!(shape.errors),
            ]);
        }
    }
    rows.sort_by(|a, b| {
        b[4].as_f64()
            .partial_cmp(&a[4].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Table {
        columns: &[
            "database", "user", "query", "calls", "total_ms", "mean_ms", "p99_ms", "rows", "errors",
        ],
        rows,
    }
}
