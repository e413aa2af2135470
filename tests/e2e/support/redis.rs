//! Real Redis servers started by the tests with Debian's `redis-server` on free loopback ports,
//! keeping nothing on disk: one server that a test may kill and start again, and a three-node
//! Redis Cluster (no replicas) joined with `redis-cli --cluster create`. Both stop when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::{Gatehouse, eventually, get_json};

/// A key prefix no other test uses (tests share the machine's Redis).
pub fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("gatehouse-test-{name}-{}-{nanos}:", std::process::id())
}

/// Waits until `gatehouse` says Redis is connected.
pub async fn connected(gatehouse: &Gatehouse) {
    eventually(Duration::from_secs(15), "Redis connected", || async {
        get_json(gatehouse.admin_url("/healthz")).await["checks"]["redis"]["status"] == "ok"
    })
    .await;
}

/// One server.
pub struct RedisServer {
    port: u16,
    node: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers.
    pub fn start() -> Self {
        let mut server = Self {
            port: super::free_port(),
            node: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.start_again();
        server
    }

    /// The `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: clients see their connections reset).
    pub fn kill(&mut self) {
        if let Some(mut node) = self.node.take() {
            let _ = node.kill();
            let _ = node.wait();
        }
    }

    /// Starts the (killed) server again on the same port, empty.
    pub fn start_again(&mut self) {
        self.node = Some(spawn_node(self.port, self.dir.path(), &[]));
        wait_for(self.port, &["ping"], "PONG");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The running nodes of a cluster.
pub struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts three nodes and waits until the cluster says `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port_with_bus()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let config = format!("nodes-{port}.conf");
                let args = ["--cluster-enabled", "yes", "--cluster-config-file", &config];
                spawn_node(*port, dir.path(), &args)
            })
            .collect();
        let cluster = Self {
            ports,
            nodes,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_for(*port, &["ping"], "PONG");
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &cluster.ports {
            wait_for(*port, &["cluster", "info"], "cluster_state:ok");
        }
        cluster
    }

    /// The port of one node.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// The `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports[1..]
            .iter()
            .map(|port| format!("node=127.0.0.1:{port}"))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            self.ports[0],
            nodes.join("&")
        )
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_port_with_bus() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-server` on `port` in `dir`, with `args`.
fn spawn_node(port: u16, dir: &Path, args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server)")
}

/// Waits until `command` to the node on `port` answers with `expected` in it.
fn wait_for(port: u16, command: &[&str], expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(command)
            .output()
            .expect("redis-cli");
        if String::from_utf8_lossy(&output.stdout).contains(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis node {port}: {command:?} never said {expected}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
