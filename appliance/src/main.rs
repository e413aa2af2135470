//! The `gatehouse` command: parse, load config, hand over to [`gatehouse::App`].

// The library keeps stdout for the access log; the CLI's own answers belong there.
#![allow(clippy::print_stdout)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gatehouse::loadtest::{self, LoadTest, Progress};
use gatehouse::policy::{Inspection, PluginKind, tool};
use gatehouse::{App, AppError, config, probe, telemetry};

/// A proxy allocates small objects per request on every worker: mimalloc is several times faster
/// at that than glibc's allocator, and musl's (the static build) is slower still.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One binary in front of your web app and PostgreSQL.
#[derive(Parser)]
#[command(name = "gatehouse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve. Without a config file: edge on :8080 to 127.0.0.1:3000, admin on 127.0.0.1:9901,
    /// state in ./data.
    Run {
        /// TOML config file; environment variables (GATEHOUSE_SECTION__KEY) override it.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the config and everything it points at (certificates, state dir); serve nothing.
    Check {
        /// TOML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Manage the admin token.
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Write, build and try policy plugins.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Load a URL at rising concurrency and print requests per second, average and p99
    /// latency and failures per level.
    Bench {
        /// The http:// or https:// URL, requested with GET.
        url: String,
        /// Concurrent clients per level, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_values_t = [5, 20, 50])]
        concurrency: Vec<usize>,
        /// How long each level lasts (10s, 1m, ...).
        #[arg(short, long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Time one request may take before it counts as failed.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the running gatehouse answers `/health` on its admin listener, 1 otherwise
    /// (for container health checks: a scratch image has no curl).
    Health {
        /// TOML config file, for admin.listen (environment variables apply as for `run`).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Probe the admin listener at this address instead (HOST:PORT).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Replace the admin token and print the new one; the old one stops working at once. Works
    /// whether gatehouse runs (through its control socket) or not (in its state store).
    Rotate {
        /// TOML config file (for state.dir and admin.token).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Create a plugin crate that builds, tests and loads as it is.
    New {
        /// rate-limit, cache-rules or recommendations.
        kind: PluginKind,
        /// Crate name: lowercase letters, digits, - and _.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin crate to a component (needs the wasm32-wasip2 target) and check it loads.
    Build {
        /// The plugin crate.
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
    /// Run a fixture's calls on a component in the real host, with instructions counted.
    Test {
        /// The component (.wasm).
        wasm: PathBuf,
        /// JSON: {"config": .., "calls": [{"request": .., "response": .., "snapshot": .., "expect": ..}]}
        #[arg(long)]
        fixture: PathBuf,
    },
    /// Show what a component is and which grants it needs.
    Inspect {
        /// The component (.wasm).
        wasm: PathBuf,
    },
}

fn main() -> ExitCode {
    // Two rustls providers linked into one binary would make rustls refuse to pick: choose ours.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config.as_deref()),
        Command::Check { config } => check(&config),
        Command::AdminToken {
            command: AdminTokenCommand::Rotate { config },
        } => return rotate_admin_token(config.as_deref()),
        Command::Policy { command } => return policy(command),
        Command::Bench {
            url,
            concurrency,
            duration,
            timeout,
            json,
        } => {
            let test = LoadTest {
                url,
                levels: concurrency,
                duration,
                timeout,
            };
            return bench(&test, json);
        }
        Command::Health {
            config,
            admin,
            timeout,
        } => return health(config.as_deref(), admin, timeout),
        Command::Version => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            ExitCode::from(match err {
                AppError::Config(_) => 2,
                _ => 1,
            })
        }
    }
}

fn run(file: Option<&Path>) -> Result<(), AppError> {
    let loaded = config::load(file)?;
    let _telemetry = match telemetry::init(&loaded.config.log) {
        Ok(guard) => guard,
        Err(err) => return Err(AppError::Start(format!("logging: {err}"))),
    };
    App::new(loaded).serve()
}

fn health(file: Option<&Path>, admin: Option<std::net::SocketAddr>, timeout: Duration) -> ExitCode {
    let admin = match admin {
        Some(admin) => admin,
        None => match config::load(file) {
            Ok(loaded) => probe::admin_address(loaded.config.admin.listen),
            Err(err) => {
                eprintln!("gatehouse: {err}");
                return ExitCode::from(2);
            }
        },
    };
    match probe::probe(admin, timeout) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("gatehouse: not healthy: {why}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &Path) -> Result<(), AppError> {
    let loaded = config::load(Some(file))?;
    App::new(loaded).check()?;
    println!("{}: ok", file.display());
    Ok(())
}

fn bench(test: &LoadTest, json: bool) -> ExitCode {
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        if !json && std::io::stderr().is_terminal() {
            scope.spawn(|| show_progress(test, &progress, &done));
        }
        let report = loadtest::run(test, &progress);
        done.store(true, Ordering::Relaxed);
        report
    });
    match report {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a report serializes")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", loadtest::table(&report));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gatehouse bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A progress bar on stderr: the level running, time through it and requests so far.
fn show_progress(test: &LoadTest, progress: &Progress, done: &AtomicBool) {
    const WIDTH: usize = 30;
    let mut level_started = (u64::MAX, Instant::now());
    while !done.load(Ordering::Relaxed) {
        let level = progress.level.load(Ordering::Relaxed);
        if level != level_started.0 {
            level_started = (level, Instant::now());
        }
        let share =
            (level_started.1.elapsed().as_secs_f64() / test.duration.as_secs_f64()).min(1.0);
        let filled = (share * WIDTH as f64) as usize;
        let users = test.levels.get(level as usize).copied().unwrap_or(0);
        eprint!(
            "\r  level {}/{} ({users} users) [{}{}] {:>3.0}%  {} requests ",
            level + 1,
            test.levels.len(),
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            share * 100.0,
            progress.completed.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
        std::thread::sleep(Duration::from_millis(200));
    }
    eprint!("\r{}\r", " ".repeat(80));
}

fn rotate_admin_token(file: Option<&Path>) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            return ExitCode::from(2);
        }
    };
    match gatehouse::rotate_token(&loaded.config) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gatehouse admin-token rotate: {err}");
            ExitCode::FAILURE
        }
    }
}

fn policy(command: PolicyCommand) -> ExitCode {
    let result = match command {
        PolicyCommand::New { kind, name, dir } => tool::new_plugin(kind, &name, &dir).map(|dir| {
            println!("created {kind} plugin {}", dir.display());
            println!(
                "  cd {} && cargo test && gatehouse policy build",
                dir.display()
            );
            true
        }),
        PolicyCommand::Build { path } => tool::build(&path).map(|built| {
            println!(
                "built {} ({} KiB)",
                built.wasm.display(),
                built.size.div_ceil(1024)
            );
            describe(&built.inspection, &built.wasm);
            true
        }),
        PolicyCommand::Inspect { wasm } => tool::inspect(&wasm).map(|inspection| {
            describe(&inspection, &wasm);
            true
        }),
        PolicyCommand::Test { wasm, fixture } => tool::test(&wasm, &fixture).map(|outcomes| {
            for outcome in &outcomes {
                let verdict = if outcome.passed() { "ok  " } else { "FAIL" };
                let result = match &outcome.result {
                    Ok(value) => value.to_string(),
                    Err(why) => format!("error: {why}"),
                };
                println!("{verdict} {}  {result}", outcome.input);
                println!(
                    "       fuel {}, {:.1?} metered",
                    outcome.fuel, outcome.elapsed
                );
                if let (Some(expected), false) = (&outcome.expected, outcome.passed()) {
                    println!("       expected {expected}");
                }
            }
            let failed = outcomes.iter().filter(|o| !o.passed()).count();
            println!("{} calls, {failed} failed", outcomes.len());
            failed == 0
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("gatehouse policy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What a component is, and the config that loads it.
fn describe(inspection: &Inspection, wasm: &Path) {
    let kind = inspection.kind.map_or_else(
        || "none (exports no policy function)".into(),
        |k| k.to_string(),
    );
    let grants: Vec<String> = inspection
        .grants
        .iter()
        .map(|g| format!("{:?}", g.name()))
        .collect();
    println!("kind     {kind}");
    println!("grants   {}", grants.join(", "));
    println!("sha256   {}", inspection.sha256);
    if let Some(kind) = inspection.kind {
        let name = wasm.file_stem().map_or_else(
            || "plugin".into(),
            |s| s.to_string_lossy().replace('_', "-"),
        );
        let source = std::path::absolute(wasm).unwrap_or_else(|_| wasm.to_path_buf());
        println!("\nin gatehouse.toml:\n");
        println!(
            "[plugins.{name}]\nkind = \"{kind}\"\nsource = {:?}",
            source.display().to_string()
        );
        println!("grants = [{}]\nconfig = {{}}", grants.join(", "));
    }
}
