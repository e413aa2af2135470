//! The `gatehouse` command: parse, load config, hand over to [`gatehouse::App`].

// The library keeps stdout for the access log; the CLI's own answers belong there.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::{App, AppError, config, telemetry};

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
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    // Two rustls providers linked into one binary would make rustls refuse to pick: choose ours.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config.as_deref()),
        Command::Check { config } => check(&config),
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

fn check(file: &Path) -> Result<(), AppError> {
    let loaded = config::load(Some(file))?;
    App::new(loaded).check()?;
    println!("{}: ok", file.display());
    Ok(())
}
