//! The edge's HTTP server: every plain and TLS listener on one actix-server, each connection
//! served by actix-http with the edge's App.
//!
//! Put together here rather than by actix-web's `HttpServer` so that a TLS connection can wait,
//! before its handshake, while a certificate for its name is obtained on demand: the
//! ClientHello is peeked at (left in the socket for rustls), and the handshake starts once the
//! certificate is in the resolver, or at once for any name that is not to get one.

use std::any::Any;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, TlsAcceptorConfig};
use actix_server::{GracefulShutdownSignal, Server};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_tls::accept::TlsError;
use actix_web::dev::{AppConfig, Extensions};
use actix_web::{App, web};
use rustls::ServerConfig;
use tokio::net::TcpStream;

use super::EdgeState;
use super::finish::Finish;
use crate::acme::ACME_TLS_ALPN;

/// HTTP/2 flow-control windows: wide enough that uploads are not throttled by round trips, and
/// that clients which hold one byte of window back before sending END_STREAM (hyper#4003) are
/// not left waiting for an update; the connection window caps what one client can make us
/// buffer.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// How long a closing connection may take to shut down cleanly (actix-web's default).
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for a client's ClientHello before its handshake starts anyway (rustls then
/// applies its own handshake timeout).
const HELLO_WAIT: Duration = Duration::from_secs(3);

/// How the edge's connections are served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) workers: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) request_head_timeout: Duration,
    /// Seconds the drain waits for requests in flight.
    pub(crate) drain: u64,
}

/// The edge's HTTP service (App, connection counting, timeouts) for one connection type, plain
/// or TLS. A macro rather than a function: actix writes the service's type only through the
/// App's, which has no name to return it by.
macro_rules! edge_http {
    ($state:expr, $settings:expr, $shutdown:expr) => {{
        let (state, shutdown): (&Arc<EdgeState>, &GracefulShutdownSignal) = ($state, $shutdown);
        let (counted, shutdown) = (Arc::clone(state), shutdown.clone());
        // actix-web's HttpServer passes the same signal: on shutdown, idle keep-alive
        // connections close and HTTP/2 ones are told to go away.
        HttpService::build()
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive($settings.keep_alive)
            .client_request_timeout($settings.request_head_timeout)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .h2_initial_window_size(H2_STREAM_WINDOW)
            .h2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .on_connect_ext(move |io: &_, extensions: &mut Extensions| {
                counted.on_connect(io as &dyn Any, extensions)
            })
            .finish(map_config(
                App::new()
                    .app_data(web::Data::from(Arc::clone(state)))
                    .wrap(Finish::new(Arc::clone(state)))
                    .default_service(web::to(super::handle))
                    .into_factory()
                    .map_err(|err| err.error_response()),
                // Whether a request came over TLS is the connection's to say
                // (`connections::over_tls`), not a listener setting.
                |_| AppConfig::default(),
            ))
    }};
}

/// The edge server over `plain` listeners and, with `tls`, TLS listeners.
pub(crate) fn build(
    state: &Arc<EdgeState>,
    settings: Settings,
    plain: Vec<TcpListener>,
    tls: Option<(Vec<TcpListener>, ServerConfig)>,
) -> std::io::Result<Server> {
    let mut builder = Server::build()
        .workers(settings.workers)
        .shutdown_timeout(settings.drain)
        .disable_signals();
    let shutdown = builder.graceful_shutdown_signal();
    for listener in plain {
        let addr = listener.local_addr()?;
        let (state, shutdown) = (Arc::clone(state), shutdown.clone());
        builder = builder.listen(format!("edge-{addr}"), listener, move || {
            edge_http!(&state, settings, &shutdown).tcp()
        })?;
    }
    let Some((listeners, config)) = tls else {
        return Ok(builder.run());
    };
    for listener in listeners {
        let addr = listener.local_addr()?;
        let (state, shutdown, config) = (Arc::clone(state), shutdown.clone(), config.clone());
        builder = builder.listen(format!("edge-tls-{addr}"), listener, move || {
            let waiting = Arc::clone(&state);
            let hello = fn_service(move |stream: TcpStream| {
                let state = Arc::clone(&waiting);
                async move {
                    certificate_for_hello(&stream, &state).await;
                    Ok::<_, TlsError<std::io::Error, DispatchError>>(stream)
                }
            });
            let tls = TlsAcceptorConfig::default();
            hello.and_then(
                edge_http!(&state, settings, &shutdown)
                    .rustls_0_23_with_config(config.clone(), tls),
            )
        })?;
    }
    Ok(builder.run())
}

/// Before a TLS handshake: when its name may get a certificate on demand and has none yet,
/// waits while one is obtained.
async fn certificate_for_hello(stream: &TcpStream, state: &EdgeState) {
    let Some(acme) = state.acme().filter(|acme| acme.on_demand()) else {
        return;
    };
    let Some(hello) = peek_hello(stream).await else {
        return;
    };
    // The CA's own TLS-ALPN-01 validation of an order under way must not wait for it.
    if !hello.validation
        && let Some(name) = hello.name
    {
        acme.certificate_on_demand(&name).await;
    }
}

/// What a ClientHello asks for.
struct Hello {
    name: Option<String>,
    /// It offers `acme-tls/1` only a CA validating a challenge does.
    validation: bool,
}

/// Reads the ClientHello without taking it from the socket; none when the client sends
/// something else, closes, or takes too long (the handshake proper then says what is wrong).
async fn peek_hello(stream: &TcpStream) -> Option<Hello> {
    let deadline = tokio::time::Instant::now() + HELLO_WAIT;
    // A TLS record is at most 16 KiB and its header.
    let mut buf = vec![0u8; 16 * 1024 + 5];
    let mut seen = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf));
        let n = peeked.await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            acceptor.read_tls(&mut rest).ok()?;
            if let Some(accepted) = acceptor.accept().ok()? {
                let hello = accepted.client_hello();
                return Some(Hello {
                    name: hello.server_name().map(str::to_string),
                    validation: hello
                        .alpn()
                        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN)),
                });
            }
        }
        if n == buf.len() {
            return None;
        }
        // Part of the hello is still on its way: peek again once more has come.
        if n == seen {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A client connection to a fresh loopback listener, and the accepted end.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn a_peeked_hello_names_the_host_and_stays_in_the_socket() {
        let (client, server) = pair().await;
        let config = rustls::ClientConfig::builder_with_provider(crate::edge::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from("shop.example.com").unwrap();
        let handshake = tokio::spawn(async move { connector.connect(name, client).await });

        let hello = peek_hello(&server).await.expect("a ClientHello");
        assert_eq!(hello.name.as_deref(), Some("shop.example.com"));
        assert!(!hello.validation);
        let mut first = [0u8; 1];
        server.peek(&mut first).await.unwrap();
        assert_eq!(first[0], 0x16, "the handshake record is still unread");
        drop(server);
        assert!(handshake.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn plain_http_on_a_tls_port_is_no_hello() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(peek_hello(&server).await.is_none());
        let mut request = [0u8; 3];
        server.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"GET", "left for the handshake to refuse");
    }
}
