//! Assembles every subsystem from a [`Loaded`] config and runs them. `main` and the end-to-end
//! tests start the very same [`App`]; tests bind port 0 and read the addresses back.
//!
//! Lifecycle of every subsystem: config → validate ([`App::check`]) → start → reload (validate
//! first, then swap) → drain and stop.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{HttpServer, web};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{error, info, warn};

use crate::acme::Acme;
use crate::admin::{self, AdminAuth};
use crate::config::{Config, ConfigError, Loaded, Problem};
use crate::edge::redirect::Redirect;
use crate::edge::tls::{self, CertResolver};
use crate::edge::{self, EdgeState};
use crate::file_stamp::FileStamp;
use crate::loadtest;
use crate::monitor::health::{BoundAddrs, HealthSources};
use crate::monitor::{Monitors, schedule};
use crate::operations::{Control, Operations, UploadError};
use crate::policy::{self, Plugins, PolicyEngine};
use crate::pool::Pooler;
use crate::store::{self, SledStore, Store, Tree};
use crate::systemd;
use crate::telemetry;
use crate::telemetry::collector_tls::CollectorTls;
use crate::upstream::spawn_checks;

/// Why gatehouse cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is refused.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The config key of the listener.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The serving thread failed to start.
    #[error("cannot start serving: {0}")]
    Start(String),
}

/// A configured gatehouse, not yet serving.
pub struct App {
    loaded: Loaded,
}

/// What provisioning produced: the parts that read files before anything listens.
struct Provisioned {
    tls: Option<Arc<CertResolver>>,
}

/// Bound sockets, by role.
struct Listeners {
    edge: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    redirect: Vec<TcpListener>,
    admin: TcpListener,
    /// The pooler's, when databases are configured.
    pool: Vec<TcpListener>,
}

impl App {
    /// A gatehouse for this config.
    pub fn new(loaded: Loaded) -> Self {
        Self { loaded }
    }

    /// Validates everything a start would use, without binding, locking or serving: the config,
    /// the TLS files, the plugins (compiled and called once), and that the state dir could be
    /// used.
    pub fn check(&self) -> Result<(), AppError> {
        provision(&self.loaded)?;
        load_plugins(&self.loaded, None)?;
        crate::pool::check(&self.loaded.config.pool)
            .map_err(|problem| self.loaded.error(&[problem]))?;
        store::check_dir(&self.loaded.config.state.dir).map_err(|err| {
            self.loaded
                .error(&[Problem::new("state.dir", err.to_string())])
        })?;
        Ok(())
    }

    /// Starts serving on a background thread; returns once every listener is accepting.
    pub fn start(self) -> Result<RunningApp, AppError> {
        self.start_inner(false)
    }

    /// Serves until SIGTERM or SIGINT (graceful drain), reloading on SIGHUP. For `main`.
    pub fn serve(self) -> Result<(), AppError> {
        self.start_inner(true)?.wait();
        Ok(())
    }

    fn start_inner(self, handle_signals: bool) -> Result<RunningApp, AppError> {
        let config = &self.loaded.config;
        let provisioned = provision(&self.loaded)?;
        crate::pool::check(&config.pool).map_err(|problem| self.loaded.error(&[problem]))?;
        let mut listeners = bind_all(config)?;
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(
                &config.state.dir,
                config.state.cache_capacity.as_u64(),
                config.state.flush_interval,
            )
            .map_err(|err| {
                self.loaded
                    .error(&[Problem::new("state.dir", err.to_string())])
            })?,
        );
        // Stamped before loading: an edit made meanwhile is then seen as a change.
        let plugin_stamps = policy::source_stamps(&config.plugins);
        let (policy, plugins) = load_plugins(&self.loaded, Some(Arc::clone(&store)))?;
        let instance = instance_id(store.as_ref());
        let (admin_auth, new_admin_token) =
            AdminAuth::load(config.admin.token.as_deref(), Arc::clone(&store)).map_err(|err| {
                self.loaded
                    .error(&[Problem::new("state.dir", err.to_string())])
            })?;
        if let Some(token) = &new_admin_token {
            // Shown once, on the terminal or in the service's journal; only its digest is kept.
            eprintln!(
                "\ngatehouse admin token (shown once; `gatehouse admin-token rotate` replaces it):\n\n    {token}\n"
            );
        }
        let edge = Arc::new(EdgeState::new(
            config,
            plugins,
            instance,
            Some(Arc::clone(&store)),
        ));
        let acme = match (&provisioned.tls, &config.edge.tls) {
            (Some(resolver), Some(tls)) => {
                Acme::new(tls, Arc::clone(&store), Arc::clone(resolver)).map(Arc::new)
            }
            _ => None,
        };
        if let Some(acme) = &acme {
            edge.set_acme(Arc::clone(acme));
        }
        let monitors = Monitors::new(&edge, Arc::clone(&store), config);
        let addrs = listeners.addrs();
        let (control, inbox) = unbounded_channel();
        let operations = Arc::new(Operations::new(control.clone(), self.loaded.clone()));
        let pooler = match config.pool.enabled() {
            true => {
                let listeners = std::mem::take(&mut listeners.pool);
                // The console's RELOAD goes through the serving thread, like SIGHUP.
                let reloads = Arc::clone(&operations);
                let reload: crate::pool::ReloadHook = Box::new(move || reloads.reload());
                let traces = edge.traces().filter(|_| config.traces.pool).cloned();
                let pooler = Pooler::start(&config.pool, listeners, reload, traces)
                    .map_err(AppError::Start)?;
                edge.set_pooler(pooler.view());
                Some(pooler)
            }
            false => None,
        };
        let (started_tx, started_rx) = mpsc::channel();
        let serving = Serving {
            loaded: self.loaded,
            edge,
            store,
            monitors,
            admin_auth: Arc::new(admin_auth),
            policy,
            plugin_stamps,
            tls: provisioned.tls,
            acme,
            addrs: addrs.clone(),
            control: control.clone(),
            operations,
            pooler,
        };
        let thread = std::thread::Builder::new()
            .name("gatehouse-main".into())
            .spawn(move || serving.run(listeners, inbox, started_tx, handle_signals))
            .map_err(|err| AppError::Start(err.to_string()))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(AppError::Start(why)),
            Err(_) => {
                return Err(AppError::Start(
                    "the serving thread ended during start".into(),
                ));
            }
        }
        info!(edge = ?addrs.edge, tls = ?addrs.tls, redirect = ?addrs.redirect, admin = %addrs.admin, pool = ?addrs.pool, "gatehouse is serving");
        Ok(RunningApp {
            addrs,
            control,
            thread: Some(thread),
            new_admin_token,
        })
    }
}

/// Loads what must be read from disk before serving, turning failures into config errors that
/// name the key and line.
fn provision(loaded: &Loaded) -> Result<Provisioned, ConfigError> {
    let missing_roots: Vec<Problem> = loaded
        .config
        .routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| {
            let dir = route.root.as_ref().filter(|dir| !dir.is_dir())?;
            let why = format!("{} is not a directory", dir.display());
            Some(Problem::new(&format!("routes.{index}.root"), why))
        })
        .collect();
    if !missing_roots.is_empty() {
        return Err(loaded.error(&missing_roots));
    }
    if loaded.config.traces.enabled {
        CollectorTls::load(&loaded.config.traces)
            .map_err(|err| loaded.error(&[Problem::new(err.key, err.to_string())]))?;
    }
    let tls = match &loaded.config.edge.tls {
        None => None,
        Some(config) => Some(Arc::new(CertResolver::new(config).map_err(|err| {
            loaded.error(&[Problem::new(err.config_key(), err.to_string())])
        })?)),
    };
    Ok(Provisioned { tls })
}

/// The policy engine (only when plugins are configured: it runs a ticker thread) and the
/// configured plugins, loaded and smoke-tested. Problems are located at `plugins.NAME.source`.
fn load_plugins(
    loaded: &Loaded,
    store: Option<Arc<dyn Store>>,
) -> Result<(Option<Arc<PolicyEngine>>, Plugins), ConfigError> {
    if loaded.config.plugins.is_empty() {
        return Ok((None, Plugins::default()));
    }
    let engine = Arc::new(
        PolicyEngine::new(store)
            .map_err(|err| loaded.error(&[Problem::new("plugins", err.to_string())]))?,
    );
    let plugins = Plugins::default()
        .prepare(&engine, &loaded.config.plugins)
        .map_err(|problems| loaded.error(&problems))?
        .commit();
    Ok((Some(engine), plugins))
}

fn bind_all(config: &Config) -> Result<Listeners, AppError> {
    let backlog = config.edge.backlog as i32;
    let bind_many =
        |key: &'static str, addrs: &[SocketAddr]| -> Result<Vec<TcpListener>, AppError> {
            addrs.iter().map(|addr| bind(key, *addr, backlog)).collect()
        };
    Ok(Listeners {
        edge: bind_many("edge.listen", &config.edge.listen)?,
        tls: bind_many(
            "edge.tls.listen",
            config.edge.tls.as_ref().map_or(&[], |t| &t.listen),
        )?,
        redirect: bind_many(
            "edge.redirect.listen",
            config.edge.redirect.as_ref().map_or(&[], |r| &r.listen),
        )?,
        admin: bind("admin.listen", config.admin.listen, 128)?,
        pool: match config.pool.enabled() {
            true => bind_many("pool.listen", &config.pool.listen)?,
            false => Vec::new(),
        },
    })
}

/// A listening socket with address reuse (restarts do not wait out TIME_WAIT) and our backlog.
fn bind(key: &'static str, addr: SocketAddr, backlog: i32) -> Result<TcpListener, AppError> {
    let fail = |source| AppError::Bind { key, addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(backlog).map_err(fail)?;
    Ok(socket.into())
}

impl Listeners {
    fn addrs(&self) -> BoundAddrs {
        let local = |l: &TcpListener| l.local_addr().expect("bound socket has an address");
        BoundAddrs {
            edge: self.edge.iter().map(local).collect(),
            tls: self.tls.iter().map(local).collect(),
            redirect: self.redirect.iter().map(local).collect(),
            admin: local(&self.admin),
            pool: crate::pool::local_addrs(&self.pool),
        }
    }
}

/// A stable id for this installation, kept in the store (request ids carry it).
fn instance_id(store: &dyn Store) -> u64 {
    const KEY: &[u8] = b"instance_id";
    if let Ok(Some(bytes)) = store.get(Tree::Meta, KEY)
        && let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice())
    {
        return u64::from_be_bytes(raw);
    }
    use std::hash::BuildHasher;
    // RandomState is seeded from the OS: a random id without another dependency.
    let id = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    if let Err(err) = store.put(Tree::Meta, KEY, &id.to_be_bytes()) {
        warn!(error = %err, "cannot store the instance id; request ids will change on restart");
    }
    id
}

/// How often plugin files are checked for a new build: a stat per file, cheap enough to make a
/// `cargo build` go live within a second.
const PLUGIN_POLL: Duration = Duration::from_secs(1);

/// A serving gatehouse. Dropping it shuts it down gracefully.
pub struct RunningApp {
    addrs: BoundAddrs,
    control: UnboundedSender<Control>,
    thread: Option<JoinHandle<()>>,
    new_admin_token: Option<String>,
}

impl RunningApp {
    /// The admin token generated by this start (the first on its state dir, or the first
    /// after `admin.token` was removed from the config); it is not kept anywhere else.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.new_admin_token.as_deref()
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// Re-reads the config file and applies it if valid; on error the running config stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let (reply, answer) = mpsc::channel();
        let _ = self.control.send(Control::Reload(Some(reply)));
        answer.recv().unwrap_or(Ok(()))
    }

    /// Stops accepting and starts draining; returns at once.
    pub fn begin_shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }

    /// Blocks until gatehouse has stopped.
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Graceful shutdown: stop accepting, let requests in flight finish (up to
    /// `edge.drain_timeout`), flush the store, return.
    pub fn shutdown(self) {
        self.begin_shutdown();
        self.wait();
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.control.send(Control::Shutdown);
            let _ = thread.join();
        }
    }
}

/// Everything the serving thread owns.
struct Serving {
    loaded: Loaded,
    edge: Arc<EdgeState>,
    store: Arc<dyn Store>,
    monitors: Monitors,
    admin_auth: Arc<AdminAuth>,
    /// The policy engine, once any plugin has been configured.
    policy: Option<Arc<PolicyEngine>>,
    /// The plugin files as last loaded, polled for new builds.
    plugin_stamps: BTreeMap<String, Option<FileStamp>>,
    tls: Option<Arc<CertResolver>>,
    /// Keeps the `tls = "auto"` sites' certificates.
    acme: Option<Arc<Acme>>,
    addrs: BoundAddrs,
    control: UnboundedSender<Control>,
    operations: Arc<Operations>,
    pooler: Option<Pooler>,
}

impl Serving {
    fn run(
        mut self,
        listeners: Listeners,
        mut inbox: UnboundedReceiver<Control>,
        started: mpsc::Sender<Result<(), String>>,
        handle_signals: bool,
    ) {
        actix_rt::System::new().block_on(async move {
            let servers = match self.start_servers(listeners) {
                Ok(servers) => servers,
                Err(err) => {
                    let _ = started.send(Err(err.to_string()));
                    return;
                }
            };
            for group in self.edge.runtime().groups.values() {
                spawn_checks(group);
            }
            if let Some(resolver) = &self.tls {
                let interval = self
                    .loaded
                    .config
                    .edge
                    .tls
                    .as_ref()
                    .map_or(Duration::from_secs(5), |t| t.reload_interval);
                actix_rt::spawn(tls::watch(Arc::downgrade(resolver), interval));
            }
            if let Some(acme) = &self.acme {
                acme.spawn(&self.monitors.alerts);
            }
            if handle_signals {
                actix_rt::spawn(forward_signals(self.control.clone()));
            }
            if self.loaded.config.monitoring.enabled {
                let monitors = self.monitors.clone();
                let config = self.loaded.config.monitoring.clone();
                actix_rt::spawn(async move { schedule::run(monitors, &config).await });
            }
            if self.loaded.config.load_test.enabled {
                let config = self.loaded.config.load_test.clone();
                let log = Arc::clone(&self.monitors.load_tests);
                actix_rt::spawn(loadtest::schedule::run(config, log));
            }
            actix_rt::spawn(admin::serve_control(
                self.loaded.config.state.dir.clone(),
                Arc::clone(&self.admin_auth),
            ));
            // Warming goes through a plain listener, as a visitor's request would.
            if let Some(edge) = self.addrs.edge.first() {
                actix_rt::spawn(edge::cache::warm(Arc::clone(&self.edge), *edge));
            }
            let _ = started.send(Ok(()));
            systemd::ready();

            let mut plugin_poll = tokio::time::interval(PLUGIN_POLL);
            plugin_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Pinged from this loop: if it hangs, systemd restarts gatehouse.
            let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
            loop {
                let message = tokio::select! {
                    message = inbox.recv() => message,
                    _ = plugin_poll.tick() => {
                        self.reload_changed_plugins();
                        continue;
                    }
                    _ = async { watchdog.as_mut()?.tick().await; Some(()) }, if watchdog.is_some() => {
                        systemd::watchdog();
                        continue;
                    }
                };
                let Some(message) = message else { break };
                match message {
                    Control::Reload(reply) => {
                        systemd::reloading();
                        let result = self.reload();
                        systemd::ready();
                        match (&result, reply) {
                            (_, Some(reply)) => {
                                let _ = reply.send(result);
                            }
                            (Ok(()), None) => info!("configuration reloaded"),
                            (Err(err), None) => {
                                error!("reload refused, the running configuration stays:\n{err}")
                            }
                        }
                    }
                    Control::UploadPlugin { name, wasm, reply } => {
                        let _ = reply.send(self.upload_plugin(&name, &wasm));
                    }
                    Control::Shutdown => break,
                }
            }
            systemd::stopping();
            self.drain(&servers).await;
            if let Some(pooler) = self.pooler.take() {
                pooler.stop();
            }
            if let Some(traces) = self.edge.traces() {
                // Off the runtime: the flush waits for the export thread.
                let traces = Arc::clone(traces);
                let _ = actix_web::web::block(move || traces.shutdown()).await;
            }
            self.edge.cache().flush();
            if let Err(err) = self.store.flush() {
                error!(error = %err, "state store flush failed at shutdown");
            }
            info!("stopped");
            // Ends the worker threads too, and with them any connection still open.
            actix_rt::System::current().stop();
        });
    }

    /// Stops accepting, then waits until no request is in flight or the deadline passes.
    /// actix's graceful stop alone would also wait for idle HTTP/2 connections, which its h2
    /// dispatcher never closes, so an idle browser tab would hold a shutdown for the whole
    /// deadline; once the last request has ended, stopping the system closes them.
    async fn drain(&self, servers: &[actix_web::dev::ServerHandle]) {
        let active = self.edge.active();
        info!(in_flight = active.count(), deadline = ?self.loaded.config.edge.drain_timeout,
            "stopping: no new connections; draining requests in flight");
        let stopped = futures_util::future::join_all(servers.iter().map(|s| s.stop(true)));
        tokio::select! {
            _ = stopped => {}
            _ = active.idle() => {}
        }
        match active.count() {
            0 => info!("all requests finished"),
            n => warn!(
                in_flight = n,
                "drain deadline reached: closing the connections of unfinished requests"
            ),
        }
    }

    fn start_servers(
        &self,
        listeners: Listeners,
    ) -> std::io::Result<Vec<actix_web::dev::ServerHandle>> {
        let config = &self.loaded.config;
        let mut handles = Vec::new();
        let drain = config.edge.drain_timeout.as_secs_f64().ceil() as u64;

        let settings = edge::server::Settings {
            workers: workers(config),
            keep_alive: config.edge.keep_alive,
            request_head_timeout: config.edge.request_head_timeout,
            drain,
        };
        let tls = self
            .tls
            .as_ref()
            .map(|resolver| (listeners.tls, tls::edge_server_config(Arc::clone(resolver))));
        let server = edge::server::build(&self.edge, settings, listeners.edge, tls)?;
        handles.push(spawn_server(server));

        let health = web::Data::new(HealthSources {
            edge: Arc::clone(&self.edge),
            store: Arc::clone(&self.store),
            tls: self.tls.clone(),
            addrs: self.addrs.clone(),
            started: Instant::now(),
        });
        let admin_edge = web::Data::from(Arc::clone(&self.edge));
        let auth = web::Data::from(Arc::clone(&self.admin_auth));
        let monitors = web::Data::new(self.monitors.clone());
        let operations = web::Data::from(Arc::clone(&self.operations));
        let admin = HttpServer::new(move || {
            actix_web::App::new()
                .app_data(health.clone())
                .app_data(operations.clone())
                .app_data(admin_edge.clone())
                .app_data(auth.clone())
                .app_data(monitors.clone())
                .configure(crate::admin::configure)
        })
        .workers(1)
        .shutdown_timeout(drain)
        .disable_signals()
        .listen(listeners.admin)?;
        handles.push(spawn_server(admin.run()));

        if let Some(redirect) = &config.edge.redirect {
            let https_port = redirect
                .https_port
                .or_else(|| self.addrs.tls.first().map(SocketAddr::port))
                .unwrap_or(443);
            let target = web::Data::new(Redirect {
                https_port,
                challenges: self.tls.as_ref().map(|resolver| resolver.challenges()),
            });
            let mut server = HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(target.clone())
                    .default_service(web::to(
                        |req: actix_web::HttpRequest, to: web::Data<Redirect>| async move {
                            to.respond(&req)
                        },
                    ))
            })
            .workers(1)
            .shutdown_timeout(drain)
            .disable_signals();
            for listener in listeners.redirect {
                server = server.listen(listener)?;
            }
            handles.push(spawn_server(server.run()));
        }
        Ok(handles)
    }

    /// Validate first, then swap. Only the TLS step can fail after validation, and it swaps
    /// nothing when it fails, so a refused reload leaves everything as it was.
    fn reload(&mut self) -> Result<(), ConfigError> {
        let next = self.loaded.reload()?;
        crate::pool::check(&next.config.pool).map_err(|problem| next.error(&[problem]))?;
        let plugins = self.prepare_plugins(&next)?;
        if let Some(pooler) = &self.pooler {
            pooler
                .reload(&next.config.pool)
                .map_err(|why| next.error(&[Problem::new("pool", why)]))?;
        }
        match (&next.config.edge.tls, &self.tls) {
            (Some(config), Some(resolver)) => resolver
                .reload_from(config)
                .map_err(|err| next.error(&[Problem::new(err.config_key(), err.to_string())]))?,
            (None, None) => {}
            _ => warn!("turning TLS on or off takes effect after a restart"),
        }
        for key in restart_only_changes(&self.loaded.config, &next.config) {
            warn!(
                key,
                "this setting changed but takes effect only after a restart"
            );
        }
        telemetry::set_level(&next.config.log.level);
        let plugins = plugins.map(policy::Prepared::commit).unwrap_or_default();
        for group in self.edge.apply(&next.config, plugins) {
            spawn_checks(&group);
        }
        self.plugin_stamps = policy::source_stamps(&next.config.plugins);
        self.monitors.alerts.reload(&next.config);
        self.operations.set_config(next.clone());
        self.loaded = next;
        Ok(())
    }

    /// Loads the plugins whose files changed since they were loaded, and swaps each in. A file
    /// that does not load (a broken build, or one still being written) is refused with the
    /// error logged; the version in use keeps serving.
    fn reload_changed_plugins(&mut self) {
        let stamps = policy::source_stamps(&self.loaded.config.plugins);
        if stamps == self.plugin_stamps {
            return;
        }
        self.plugin_stamps = stamps;
        let Some(engine) = &self.policy else { return };
        let config = &self.loaded.config;
        match self.edge.runtime().plugins.prepare(engine, &config.plugins) {
            Ok(prepared) => {
                for group in self.edge.apply(config, prepared.commit()) {
                    spawn_checks(&group);
                }
            }
            Err(problems) => error!(
                "a plugin file changed but cannot be loaded; the running version stays:\n{}",
                self.loaded.error(&problems)
            ),
        }
    }

    /// Checks a new build of plugin `name`; when it loads, writes it over the plugin's file (so
    /// a restart keeps it) and puts it in use. The running version stays for rollback.
    fn upload_plugin(&mut self, name: &str, wasm: &[u8]) -> Result<String, UploadError> {
        let config = &self.loaded.config;
        let source = match config.plugins.get(name) {
            None => return Err(UploadError::Unknown(name.to_string())),
            Some(plugin) if plugin.source.starts_with("builtin:") => {
                return Err(UploadError::BuiltIn(
                    name.to_string(),
                    plugin.source.clone(),
                ));
            }
            Some(plugin) => std::path::PathBuf::from(&plugin.source),
        };
        let engine = self
            .policy
            .as_ref()
            .expect("configured plugins have an engine");
        let prepared = self
            .edge
            .runtime()
            .plugins
            .prepare_with(engine, &config.plugins, Some((name, wasm)))
            .map_err(|problems| UploadError::Invalid(self.loaded.error(&problems).to_string()))?;
        crate::file_stamp::write_atomically(&source, wasm)
            .map_err(|err| UploadError::Write(source.display().to_string(), err.to_string()))?;
        for group in self.edge.apply(config, prepared.commit()) {
            spawn_checks(&group);
        }
        self.plugin_stamps = policy::source_stamps(&config.plugins);
        let runtime = self.edge.runtime();
        let sha256 = runtime
            .plugins
            .get(name)
            .map(|plugin| plugin.current().sha256.clone())
            .unwrap_or_default();
        info!(plugin = name, %sha256, "plugin uploaded through the admin API and in use");
        Ok(sha256)
    }

    /// Loads the plugins of `next` that are new or changed (the engine is created the first time
    /// plugins appear). Nothing is swapped yet.
    fn prepare_plugins(&mut self, next: &Loaded) -> Result<Option<policy::Prepared>, ConfigError> {
        if next.config.plugins.is_empty() {
            return Ok(None);
        }
        if self.policy.is_none() {
            let engine = PolicyEngine::new(Some(Arc::clone(&self.store)))
                .map_err(|err| next.error(&[Problem::new("plugins", err.to_string())]))?;
            self.policy = Some(Arc::new(engine));
        }
        let engine = self.policy.as_ref().expect("created above");
        let prepared = self
            .edge
            .runtime()
            .plugins
            .prepare(engine, &next.config.plugins);
        prepared.map(Some).map_err(|problems| next.error(&problems))
    }
}

/// Settings that bind sockets, size threads or open files: a reload cannot change them.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let tls_listen = |c: &Config| c.edge.tls.as_ref().map(|t| t.listen.clone());
    // The ACME sites' tasks and the on-demand policy are made with the process.
    let acme = |c: &Config| {
        c.edge.tls.as_ref().map(|t| {
            let sites = t.auto_sites().cloned().collect::<Vec<_>>();
            (t.acme.clone(), sites, t.on_demand.clone())
        })
    };
    [
        ("edge.listen", old.edge.listen != new.edge.listen),
        ("edge.tls.listen", tls_listen(old) != tls_listen(new)),
        (
            "edge.tls.acme, edge.tls.on_demand and the tls = \"auto\" sites",
            acme(old) != acme(new),
        ),
        ("edge.redirect", old.edge.redirect != new.edge.redirect),
        ("edge.workers", old.edge.workers != new.edge.workers),
        ("edge.backlog", old.edge.backlog != new.edge.backlog),
        (
            "edge.keep_alive",
            old.edge.keep_alive != new.edge.keep_alive,
        ),
        (
            "edge.request_head_timeout",
            old.edge.request_head_timeout != new.edge.request_head_timeout,
        ),
        (
            "edge.drain_timeout",
            old.edge.drain_timeout != new.edge.drain_timeout,
        ),
        ("admin", old.admin != new.admin),
        ("state", old.state != new.state),
        ("log.format", old.log.format != new.log.format),
        ("cache.memory", old.cache.memory != new.cache.memory),
        ("cache.disk", old.cache.disk != new.cache.disk),
        ("redis", old.redis != new.redis),
        ("pool.listen", old.pool.listen != new.pool.listen),
        ("pool.workers", old.pool.workers != new.pool.workers),
        (
            "pool.databases (turning the pooler on or off)",
            old.pool.enabled() != new.pool.enabled(),
        ),
        ("monitoring", old.monitoring != new.monitoring),
        ("alerts.history", old.alerts.history != new.alerts.history),
        ("trends", old.trends != new.trends),
        ("load_test", old.load_test != new.load_test),
        ("traces", old.traces != new.traces),
        (
            "rate_limits.shared",
            old.rate_limits.shared != new.rate_limits.shared,
        ),
        (
            "rate_limits.max_keys",
            old.rate_limits.max_keys != new.rate_limits.max_keys,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

fn workers(config: &Config) -> usize {
    match config.edge.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn spawn_server(server: actix_web::dev::Server) -> actix_web::dev::ServerHandle {
    let handle = server.handle();
    actix_rt::spawn(server);
    handle
}

/// SIGTERM and SIGINT drain and stop; SIGHUP reloads.
async fn forward_signals(control: UnboundedSender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop gatehouse with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { let _ = control.send(Control::Shutdown); return; }
            _ = int.recv() => { let _ = control.send(Control::Shutdown); return; }
            _ = hup.recv() => { info!("SIGHUP: reloading configuration"); let _ = control.send(Control::Reload(None)); }
        }
    }
}
