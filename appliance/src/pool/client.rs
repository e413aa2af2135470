//! A client connection from accept to a logged-in session: the startup packet (TLS when
//! configured, GSS encryption refused, cancel requests forwarded), the database and user
//! checks, authentication, and the ParameterStatus, BackendKeyData and ReadyForQuery a client
//! expects before its first query. Every refusal is an ErrorResponse with a SQLSTATE, then a
//! close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::Shared;
use super::auth::{self, AuthError, Exchange};
use super::codec::{self, ProtocolError, Startup};
use super::console;
use super::pools::{PoolKey, PoolSpec};
use super::session::Session;
use super::settings::Settings;
use crate::config::ADMIN_DATABASE;

/// Serves one accepted connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let active = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let config = shared.config();
    let max_message = config.max_message_size.as_u64().min(usize::MAX as u64) as usize;
    let mut conn = Conn::new(stream, max_message);
    if active > config.max_client_conn {
        conn.fatal(
            "53300",
            "too many client connections (pool.max_client_conn)",
        )
        .await;
    } else {
        drop(config);
        open(&shared, conn, peer).await;
    }
    shared.clients.fetch_sub(1, Ordering::Relaxed);
}

/// How a client opens: TLS first when it asks and we can, then its startup message.
async fn open(shared: &Arc<Shared>, mut plain: Conn<TcpStream>, peer: SocketAddr) {
    let tls = shared.tls.load_full();
    loop {
        let opening = match read_startup(&mut plain).await {
            Ok(opening) => opening,
            Err(refused) => return plain.refuse(refused).await,
        };
        match opening {
            Startup::Ssl if tls.is_some() => {
                // Bytes sent after the request but before the handshake could be injected by
                // someone in the middle (CVE-2021-23222): refuse them.
                if !plain.buf.is_empty() || plain.send(b"S").await.is_err() {
                    return;
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.expect("checked above"));
                // Boxed: the TLS session's state is then paid for by TLS clients only.
                return Box::pin(serve_tls(shared, acceptor, plain, peer)).await;
            }
            // Not offered: the client may go on in plain text, or leave.
            Startup::Ssl | Startup::GssEnc => {
                if plain.send(b"N").await.is_err() {
                    return;
                }
            }
            Startup::Cancel(key) => return shared.registry.cancel(key).await,
            Startup::Session { params, minor } => {
                let result = if shared.config().tls.as_ref().is_some_and(|t| t.require) {
                    Err(refusal(
                        "28000",
                        "TLS is required here (pool.tls.require): connect with sslmode=require",
                    ))
                } else {
                    serve_session(shared, &mut plain, peer, params, minor).await
                };
                return plain.refuse_if(result).await;
            }
        }
    }
}

/// A client that asked for TLS: the handshake, then its startup message inside TLS.
async fn serve_tls(
    shared: &Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    plain: Conn<TcpStream>,
    peer: SocketAddr,
) {
    let Ok(stream) = acceptor.accept(plain.stream).await else {
        return;
    };
    let mut conn = Conn::new(stream, plain.max_message);
    let result = match read_startup(&mut conn).await {
        Ok(Startup::Session { params, minor }) => {
            serve_session(shared, &mut conn, peer, params, minor).await
        }
        Ok(Startup::Cancel(key)) => {
            shared.registry.cancel(key).await;
            Ok(())
        }
        Ok(_) => Err(refusal("08P01", "unexpected request inside TLS")),
        Err(refused) => Err(refused),
    };
    conn.refuse_if(result).await;
}

/// The next startup-phase packet, whole.
async fn read_startup<S: AsyncRead + AsyncWrite + Unpin + Send>(
    conn: &mut Conn<S>,
) -> Result<Startup, Refusal> {
    let len = loop {
        match codec::startup_len(&conn.buf) {
            Ok(Some(len)) => break len,
            Ok(None) => {}
            Err(err) => return Err(refusal("08P01", err.to_string())),
        }
        if !conn.fill().await.map_err(gone)? {
            return Err(None);
        }
    };
    let packet = conn.buf.split_to(len);
    codec::parse_startup(&packet).map_err(|err| refusal("08P01", err.to_string()))
}

/// What a client's read buffer holds while it is idle: idle clients are most clients, so they
/// must cost little (a long message grows the buffer for as long as it is needed).
pub(crate) const IDLE_BUFFER: usize = 1024;

/// The room a read gets while a server is held and replies stream through.
pub(crate) const RELAY_BUFFER: usize = 8 * 1024;

/// Spare room for the next read (at least half of `room`): without it, a read would take a
/// few bytes at a time.
pub(crate) fn make_room(buf: &mut BytesMut, room: usize) {
    if buf.capacity() - buf.len() < room / 2 {
        buf.reserve(room);
    }
}

/// Gives back a buffer's memory once it is empty and has grown past `keep`.
pub(crate) fn shrink(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = BytesMut::new();
    }
}

/// A client connection and the bytes read from it.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    pub(crate) buf: BytesMut,
    pub(crate) max_message: usize,
}

/// A refusal to report (SQLSTATE, text), or `None` when the client is simply gone.
type Refusal = Option<(String, String)>;

fn refusal(code: &str, text: impl Into<String>) -> Refusal {
    Some((code.to_string(), text.into()))
}

/// The client is gone: nothing to tell it.
fn gone<E>(_: E) -> Refusal {
    None
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    fn new(stream: S, max_message: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(IDLE_BUFFER),
            max_message,
        }
    }

    /// The same connection, its stream borrowed, for a session that ends before it does.
    fn borrowed(&mut self) -> Conn<&mut S> {
        Conn {
            stream: &mut self.stream,
            buf: std::mem::take(&mut self.buf),
            max_message: self.max_message,
        }
    }

    /// Tells the client why it is refused (when it is still there to hear it).
    async fn refuse(&mut self, refused: Refusal) {
        if let Some((code, text)) = refused {
            self.fatal(&code, &text).await;
        }
    }

    async fn refuse_if(&mut self, result: Result<(), Refusal>) {
        if let Err(refused) = result {
            self.refuse(refused).await;
        }
    }

    /// Reads what the client sent next into `buf`; `Ok(false)` at end of stream.
    pub(crate) async fn fill(&mut self) -> std::io::Result<bool> {
        // Most clients wait here between transactions: a relay-sized buffer for each of
        // 10,000 idle clients would be 80 MiB.
        make_room(&mut self.buf, IDLE_BUFFER);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// The next frontend message, whole.
    pub(crate) async fn next_message(&mut self) -> Result<Option<BytesMut>, ProtocolError> {
        loop {
            if let Some((_, len)) = codec::frontend_frame(&self.buf, self.max_message)? {
                return Ok(Some(self.buf.split_to(len)));
            }
            match self.fill().await {
                Ok(true) => {}
                _ => return Ok(None),
            }
        }
    }

    async fn send(&mut self, out: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(out).await
    }

    pub(crate) async fn fatal(&mut self, code: &str, text: &str) {
        let mut out = BytesMut::new();
        codec::error_response(&mut out, "FATAL", code, text);
        let _ = self.send(&out).await;
        let _ = self.stream.shutdown().await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Exchange for Conn<S> {
    async fn round_trip(&mut self, out: BytesMut) -> Result<BytesMut, AuthError> {
        self.send(&out).await?;
        let mut message = self
            .next_message()
            .await
            .map_err(|err| AuthError::Protocol(err.to_string()))?
            .ok_or_else(|| AuthError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
        if message[0] != b'p' {
            return Err(AuthError::Protocol(format!(
                "expected a password message, got {:?}",
                message[0] as char
            )));
        }
        Ok(message.split_off(5))
    }

    async fn send_only(&mut self, out: BytesMut) -> Result<(), AuthError> {
        Ok(self.send(&out).await?)
    }
}

/// Logs the client in and serves its session to the end.
async fn serve_session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: &Arc<Shared>,
    conn: &mut Conn<S>,
    peer: SocketAddr,
    params: Vec<(String, String)>,
    minor: i32,
) -> Result<(), Refusal> {
    let Some(session) = Box::pin(login(shared, conn, peer, params, minor)).await? else {
        return Ok(());
    };
    let client = session.client_key();
    session.run(conn.borrowed()).await;
    shared.registry.forget_client(client);
    Ok(())
}

/// Checks and authenticates a client and greets it; the session to serve, or `None` when
/// there is none left to serve (an admin console session, served here).
///
/// Boxed by its caller, and over before the session starts: what logging in needs (the
/// startup parameters, the exchange, the greeting) is then neither inline in every client's
/// task nor kept while it idles (measured with 10,000 idle clients: 3.7 KB each, was 7.6 KB).
async fn login<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: &Arc<Shared>,
    conn: &mut Conn<S>,
    peer: SocketAddr,
    params: Vec<(String, String)>,
    minor: i32,
) -> Result<Option<Session>, Refusal> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let user = param("user").unwrap_or_default().to_string();
    let database = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_string();
    let unsupported: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        let mut out = BytesMut::new();
        codec::negotiate_protocol_version(&mut out, &unsupported);
        conn.send(&out).await.map_err(gone)?;
    }
    let config = shared.config();
    let admin = database == ADMIN_DATABASE;
    let db_config = config.databases.get(&database);
    if db_config.is_none() && !admin {
        return Err(refusal(
            "3D000",
            format!("database \"{database}\" does not exist"),
        ));
    }
    let users = shared.users.load();
    let known = users.get(&user);
    // Boxed: the exchange's state is needed only while logging in.
    match Box::pin(auth::authenticate(config.auth_type, &user, known, conn)).await {
        Ok(()) => {}
        Err(AuthError::Io(_)) => return Err(None),
        Err(AuthError::Failed(name)) => {
            debug!(user = %name, "pooler login refused");
            return Err(refusal(
                "28P01",
                format!("password authentication failed for user \"{name}\""),
            ));
        }
        Err(AuthError::Protocol(why)) => return Err(refusal("08P01", why)),
    }
    let Some(db_config) = db_config else {
        // Boxed, like the exchange above: few clients are admin sessions.
        Box::pin(console_session(shared, conn, &user, &config.admin_users)).await?;
        return Ok(None);
    };
    let password = known.and_then(|u| u.plain_password()).map(str::to_string);
    let key = PoolKey { database, user };
    let paused = shared.is_paused(&key.database);
    let spec = PoolSpec::new(db_config, &config, password);
    let pool = shared
        .pools
        .get_or_create(key.clone(), spec, &shared.registry, paused);
    let server_params = pool
        .params()
        .await
        .map_err(|err| refusal(err.code(), err.to_string()))?;
    let settings = Settings::from_startup(&params);
    let application_name = settings
        .startup_value("application_name")
        .unwrap_or_default();
    let client = shared
        .registry
        .add_client(key, peer, application_name.to_string());
    let mut out = BytesMut::new();
    codec::authentication(&mut out, 0, &[]);
    for (name, value) in &server_params {
        let value = settings.startup_value(name).unwrap_or(value);
        codec::parameter_status(&mut out, name, value);
    }
    codec::backend_key_data(&mut out, client.key);
    codec::ready_for_query(&mut out, b'I');
    if conn.send(&out).await.is_err() {
        shared.registry.forget_client(client.key);
        return Err(None);
    }
    Ok(Some(Session::new(shared, pool, settings, client)))
}

/// A logged-in user of the admin console's database.
async fn console_session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: &Arc<Shared>,
    conn: &mut Conn<S>,
    user: &str,
    admins: &[String],
) -> Result<(), Refusal> {
    if !admins.iter().any(|admin| admin == user) {
        return Err(refusal(
            "42501",
            format!("user \"{user}\" is not in pool.admin_users"),
        ));
    }
    let mut out = BytesMut::new();
    codec::authentication(&mut out, 0, &[]);
    codec::parameter_status(&mut out, "server_version", "16.0 (gatehouse)");
    codec::parameter_status(&mut out, "client_encoding", "UTF8");
    codec::parameter_status(&mut out, "server_encoding", "UTF8");
    codec::parameter_status(&mut out, "standard_conforming_strings", "on");
    codec::backend_key_data(&mut out, codec::BackendKey { pid: 0, secret: 0 });
    codec::ready_for_query(&mut out, b'I');
    conn.send(&out).await.map_err(gone)?;
    console::serve(shared, conn.borrowed()).await;
    Ok(())
}
