//! What a plugin's imports do: the request's headers and cookies, the response's headers, and the
//! grantable capabilities (`log`, `now`, `kv`, `config`). Grants are enforced at load (a plugin
//! that imports an interface it was not granted is refused), so these implementations may run.
//!
//! WASI: a Rust guest built for wasm32-wasip2 imports `wasi:io` and `wasi:cli`; they are linked
//! with a context that has nothing in it (no environment, empty stdin, stdout and stderr kept
//! only for trap messages; see [`super::stdio`]). Filesystem, sockets, clocks and random are not
//! linked at all.

use std::sync::Arc;
use std::time::Instant;

use actix_web::HttpRequest;
use actix_web::http::header::{COOKIE, HeaderMap};
use tracing::{debug, error, info, warn};
use wasmtime::StoreLimits;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::cli::{WasiCli, WasiCliCtxView};
use wasmtime_wasi::p2::bindings::cli;

use super::bindings::cache_rules::gatehouse::policy::response_headers;
use super::bindings::shared::{clock, kv, log, plugin_config, request_headers, types};
use super::settings::Settings;
use super::stdio::Output;
use crate::store::Tree;

/// The data of one plugin instance's store.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) settings: Arc<Settings>,
    /// The request being decided, for its headers and cookies; set for the length of a call.
    pub(crate) request: Option<HttpRequest>,
    /// The response being decided (cache rules), for its headers; set for the length of a call.
    pub(crate) response_headers: Option<HeaderMap>,
    /// What the plugin wrote to stdout and stderr lately.
    pub(crate) output: Output,
}

impl PluginState {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(settings.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let output = Output::default();
        Self {
            wasi: WasiCtx::builder()
                .stdout(output.clone())
                .stderr(output.clone())
                .build(),
            table: ResourceTable::new(),
            limits,
            settings,
            request: None,
            response_headers: None,
            output,
        }
    }

    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

/// The `wasi:cli` view of the state (built here rather than through `WasiView`, which would
/// require the state to be `Send`; it holds the request, which is not, and never leaves its
/// thread).
fn cli(state: &mut PluginState) -> WasiCliCtxView<'_> {
    WasiCliCtxView {
        ctx: state.wasi.cli(),
        table: &mut state.table,
    }
}

/// Links everything a plugin may import: our interfaces and the inert `wasi:io` and `wasi:cli`.
pub(crate) fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    request_headers::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    response_headers::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    clock::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    kv::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    plugin_config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;

    super::stdio::link(linker)?;
    cli::exit::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::environment::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::stdin::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::stdout::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::stderr::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(linker, self::cli)?;
    Ok(())
}

impl types::Host for PluginState {}

impl request_headers::Host for PluginState {
    fn get(&mut self, name: String) -> Option<String> {
        first_value(self.request.as_ref()?.headers(), &name)
    }

    fn cookie(&mut self, name: String) -> Option<String> {
        let headers = self.request.as_ref()?.headers();
        headers
            .get_all(COOKIE)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }
}

impl response_headers::Host for PluginState {
    fn get(&mut self, name: String) -> Option<String> {
        first_value(self.response_headers.as_ref()?, &name)
    }
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = self.settings.name.as_str();
        match level {
            log::Level::Debug => debug!(target: "gatehouse::plugin", plugin, "{message}"),
            log::Level::Info => info!(target: "gatehouse::plugin", plugin, "{message}"),
            log::Level::Warn => warn!(target: "gatehouse::plugin", plugin, "{message}"),
            log::Level::Error => error!(target: "gatehouse::plugin", plugin, "{message}"),
        }
    }
}

impl clock::Host for PluginState {
    fn now(&mut self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

impl plugin_config::Host for PluginState {
    fn get(&mut self) -> String {
        self.settings.config.clone()
    }
}

impl kv::Host for PluginState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let kv = self.settings.kv.as_ref()?;
        kv.store.get(Tree::PluginKv, &kv.key(&key)).ok().flatten()
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::Error> {
        let Some(kv) = self.settings.kv.as_ref() else {
            return Err(kv::Error::Unavailable("no state store".into()));
        };
        kv.set(&key, &value).map_err(|err| match err {
            super::settings::KvError::Quota => kv::Error::QuotaExceeded,
            super::settings::KvError::Store(why) => kv::Error::Unavailable(why),
        })
    }

    fn delete(&mut self, key: String) {
        if let Some(kv) = self.settings.kv.as_ref() {
            kv.delete(&key);
        }
    }
}
