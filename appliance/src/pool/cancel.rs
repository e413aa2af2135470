//! Cancel requests. Each client gets its own BackendKeyData (see `registry`); a cancel quoting
//! it is sent on to the server connection serving that client at that moment.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::codec::{self, BackendKey};

/// Asks the server at `addr` to cancel what its connection with `key` runs.
pub(crate) async fn cancel_server(addr: SocketAddr, key: BackendKey) {
    match TcpStream::connect(addr).await {
        Ok(mut stream) => {
            let _ = stream.write_all(&codec::cancel_request(key)).await;
        }
        Err(err) => debug!(%addr, error = %err, "cannot send a cancel request"),
    }
}
