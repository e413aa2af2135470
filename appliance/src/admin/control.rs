//! The control socket: `STATE_DIR/control.sock`, a Unix socket that only its owner (the service
//! user, and root) may open. It carries what must reach a running gatehouse from its own machine
//! without the admin token, because it replaces the token: `gatehouse admin-token rotate`.
//!
//! The protocol is one line each way: the command, then `ok VALUE` or `error WHY`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{info, warn};

use super::token::{self, AdminAuth, RotateError};
use crate::config::Config;
use crate::store::SledStore;

const ROTATE: &str = "rotate-admin-token";

/// Longest a command line may be.
const MAX_LINE: u64 = 256;

fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Answers commands on the control socket in `state_dir` until the task is dropped. A socket
/// that cannot be created is logged: gatehouse serves without it.
pub(crate) async fn serve(state_dir: PathBuf, auth: Arc<AdminAuth>) {
    let path = socket_path(&state_dir);
    // A socket file left by a gatehouse that died; the state dir's lock says none runs now.
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path).and_then(|listener| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }) {
        Ok(listener) => listener,
        Err(err) => {
            warn!(path = %path.display(), error = %err, "no control socket; rotating the admin token needs gatehouse stopped");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let auth = Arc::clone(&auth);
        tokio::task::spawn_local(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_LINE));
            let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line));
            let answer = match read.await {
                Ok(Ok(_)) => answer(line.trim(), &auth),
                _ => "error no command\n".to_string(),
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}

fn answer(command: &str, auth: &AdminAuth) -> String {
    if command != ROTATE {
        return format!("error unknown command {command:?}\n");
    }
    match auth.rotate() {
        Ok(token) => {
            info!("admin token rotated through the control socket");
            format!("ok {token}\n")
        }
        Err(err) => format!("error {err}\n"),
    }
}

/// Why `gatehouse admin-token rotate` failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateFailure {
    /// The running gatehouse or the store refused.
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// The running gatehouse answered with an error.
    #[error("the running gatehouse refused: {0}")]
    Refused(String),
    /// The socket failed mid-way.
    #[error("control socket {}: {source}", path.display())]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Replaces the admin token of the gatehouse configured by `config`: through the control socket
/// when it runs, in its state store when it does not. Returns the new token.
pub fn rotate_token(config: &Config) -> Result<String, RotateFailure> {
    if config.admin.token.is_some() {
        return Err(RotateError::Configured.into());
    }
    let path = socket_path(&config.state.dir);
    let Ok(stream) = std::os::unix::net::UnixStream::connect(&path) else {
        // Nobody listens: open the store (which fails, naming the holder, if one runs anyway).
        let state = &config.state;
        let store = SledStore::open(
            &state.dir,
            state.cache_capacity.as_u64(),
            state.flush_interval,
        )
        .map_err(RotateError::from)?;
        return Ok(token::rotate_stored(&store).map_err(RotateError::from)?);
    };
    ask(stream, ROTATE)
        .map_err(|source| RotateFailure::Socket { path, source })?
        .map_err(RotateFailure::Refused)
}

/// Sends `command`; the `ok` value, or the `error` text.
fn ask(
    mut stream: std::os::unix::net::UnixStream,
    command: &str,
) -> std::io::Result<Result<String, String>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let line = line.trim_end();
    Ok(match line.split_once(' ') {
        Some(("ok", value)) => Ok(value.to_string()),
        Some(("error", why)) => Err(why.to_string()),
        _ => Err(format!("unexpected answer {line:?}")),
    })
}
