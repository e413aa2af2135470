//! Logging: process logs to stderr (text or JSON) through tracing, access logs to stdout through
//! a non-blocking writer, so a slow terminal or pipe never stalls a worker; and request traces
//! over OTLP ([`traces`]).

pub mod collector_tls;
pub mod traces;

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

static ACCESS: OnceLock<NonBlocking> = OnceLock::new();
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Keeps the log writers flushing; drop it last.
#[must_use = "dropping the guard stops the access log writer"]
pub struct Telemetry {
    _access: WorkerGuard,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` does not parse (config validation normally catches this first).
    #[error("log.level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed.
    #[error("a log subscriber is already installed: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber and the access-log writer. Call once, from `main`.
pub fn init(config: &LogConfig) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::builder().parse(&config.level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let output = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()?;
    let _ = LEVEL.set(handle);
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let _ = ACCESS.set(writer);
    Ok(Telemetry { _access: guard })
}

/// Changes the process log filter (on reload). A no-op when [`init`] was not called.
pub fn set_level(level: &str) {
    if let (Some(handle), Ok(filter)) = (LEVEL.get(), EnvFilter::builder().parse(level)) {
        let _ = handle.reload(filter);
    }
}

/// Whether access lines go anywhere (not in tests that start the App without [`init`]).
pub fn access_log_enabled() -> bool {
    ACCESS.get().is_some()
}

/// Queues one access-log line. Lines are dropped, not waited for, if the writer falls behind.
pub fn write_access_line(line: &str) {
    if let Some(writer) = ACCESS.get() {
        let _ = writer.clone().write_all(line.as_bytes());
    }
}
