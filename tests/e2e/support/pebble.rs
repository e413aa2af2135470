//! A real ACME server: Debian's `pebble`, with `pebble-challtestsrv` as its DNS server (every
//! name resolves to 127.0.0.1), both on free loopback ports. Its HTTPS listener has a
//! certificate from a [`TestCa`]; the certificates it issues chain to a root fetched from its
//! management listener.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{TestCa, eventually, free_port};

/// A running pebble and its DNS server.
pub struct Pebble {
    processes: Vec<Child>,
    /// The directory URL.
    pub directory: String,
    /// A PEM file holding the CA that signed pebble's own HTTPS certificate (for `ca_root`).
    pub api_root: PathBuf,
    /// The root the issued certificates chain to (PEM).
    pub issuing_root: String,
    dir: TempDir,
}

impl Pebble {
    /// Starts pebble sending validations to `http_port` and `tls_port`; certificates it issues
    /// live `validity_seconds` (pebble's default, 5 years, when none).
    pub async fn start(http_port: u16, tls_port: u16, validity_seconds: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let (cert, key, _) = ca.issue(dir.path(), "pebble");
        let api_root = dir.path().join("api-root.pem");
        std::fs::write(&api_root, &ca.pem).unwrap();
        let (api, management, dns) = (free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(seconds) = validity_seconds {
            config["pebble"]["certificateValidityPeriod"] = seconds.into();
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
            ])
            .args([
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // Validate at once, every time, and never reject a good nonce: tests wait less
            // and do not depend on chance.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (Debian package pebble)");
        let client = super::client(Some(&ca));
        let directory = format!("https://127.0.0.1:{api}/dir");
        eventually(Duration::from_secs(10), "pebble answers", || async {
            client.get(&directory).send().await.is_ok()
        })
        .await;
        let roots = format!("https://127.0.0.1:{management}/roots/0");
        let issuing_root = super::text_of(client.get(roots)).await;
        Self {
            processes: vec![dns_server, pebble],
            directory,
            api_root,
            issuing_root,
            dir,
        }
    }

    /// `[edge.tls.acme]` keys for this server, trying `challenges` in order.
    pub fn acme_config(&self, challenges: &[&str]) -> String {
        format!(
            "directory = \"{}\"\nca_root = \"{}\"\nemail = \"ops@gatehouse.test\"\nchallenges = {challenges:?}\n",
            self.directory,
            self.api_root.display(),
        )
    }

    /// What pebble logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}
