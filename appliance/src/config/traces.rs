//! `[traces]`: OpenTelemetry traces exported over OTLP to any collector.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durations;

/// Request traces, exported over OTLP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// Export traces. Default `false`.
    pub enabled: bool,
    /// The collector: `http://host:4317` for gRPC, `http://host:4318/v1/traces` for HTTP.
    /// Default `"http://127.0.0.1:4317"`.
    pub endpoint: String,
    /// `"grpc"` or `"http"` (HTTP with protobuf bodies). Default `"grpc"`.
    pub protocol: OtlpProtocol,
    /// Headers (gRPC metadata) sent with every export, e.g. an API key. Default: none.
    pub headers: BTreeMap<String, String>,
    /// Share of new traces recorded, 0 to 1; a request that arrives with a sampled parent
    /// (`traceparent`) is recorded whatever this says. Default `1.0`.
    pub sampling_ratio: f64,
    /// `service.name` of the spans. Default `"gatehouse"`.
    pub service_name: String,
    /// More resource attributes (`deployment.environment = "prod"`, ...). Default: none.
    pub resource: BTreeMap<String, String>,
    /// Finished spans waiting for export at most; more are dropped (and counted) rather
    /// than slow a request. Default `4096`.
    pub queue_size: usize,
    /// Time one export may take. Default `"5s"`.
    #[serde(with = "durations")]
    pub export_timeout: Duration,
    /// A span per transaction the pooler serves (`pool.transaction`: database, user, server,
    /// the wait for a server, how it ended). Default `false`.
    pub pool: bool,
    /// PEM certificates of the CAs trusted for an `https://` collector, beside the system's.
    /// Default: the system's only.
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate chain shown to an `https://` collector that asks for one (mutual TLS),
    /// with its private key in `client_key`. Default: none.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: OtlpProtocol::Grpc,
            headers: BTreeMap::new(),
            sampling_ratio: 1.0,
            service_name: "gatehouse".into(),
            resource: BTreeMap::new(),
            queue_size: 4096,
            export_timeout: Duration::from_secs(5),
            pool: false,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, path /v1/traces).
    Http,
}
