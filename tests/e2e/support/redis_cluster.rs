//! A real three-node Redis Cluster (no replicas) on free loopback ports, started with Debian's
//! `redis-server` and joined with `redis-cli --cluster create`; stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The running nodes.
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
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .current_dir(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server (Debian package redis-server)")
            })
            .collect();
        let cluster = Self {
            ports,
            nodes,
            _dir: dir,
        };
        for port in &cluster.ports {
            cluster.wait_for(*port, &["ping"], "PONG");
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
            cluster.wait_for(*port, &["cluster", "info"], "cluster_state:ok");
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

    fn wait_for(&self, port: u16, command: &[&str], expected: &str) {
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
