//! A connection to PostgreSQL as the pool holds it: opened and authenticated the way the server
//! asks (SCRAM-SHA-256, MD5 or a plain password, through postgres-protocol), with what the
//! pooler tracks about it: its backend key, its parameters, the session settings applied, the
//! statements prepared, and where its reply stream stands.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, BackendKey};
use super::pools::PoolKey;
use super::prepared::{Expectations, ServerStatements};
use super::registry::{Registry, ServerEntry};

/// Where and as whom server connections of one pool log in.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    /// Prepared statements kept per connection.
    pub(crate) max_prepared: usize,
}

/// Why a server connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    #[error("cannot reach PostgreSQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("PostgreSQL connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused (authentication, missing database, shutting down, ...).
    #[error("PostgreSQL: {message}")]
    Refused {
        /// SQLSTATE.
        code: String,
        message: String,
    },
    #[error("PostgreSQL asks for a password and none is configured for user {0}")]
    NoPassword(String),
    #[error("PostgreSQL protocol: {0}")]
    Protocol(String),
}

impl ServerError {
    /// SQLSTATE for the client: the server's own when it gave one.
    pub(crate) fn code(&self) -> &str {
        match self {
            Self::Refused { code, .. } => code,
            Self::Connect { .. } | Self::Io(_) => "08006",
            Self::NoPassword(_) => "28000",
            Self::Protocol(_) => "08P01",
        }
    }
}

/// Server connection ids, unique for as long as the process runs.
static NEXT_SERVER: AtomicU64 = AtomicU64::new(1);

/// A request group (up to a Sync, a Query or a function call) awaiting its ReadyForQuery.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) started: Instant,
    /// The query's shape, and its message (Query or Parse) to read the text from once.
    pub(crate) shape: Option<(u64, bytes::Bytes)>,
}

/// A logged-in server connection.
pub(crate) struct ServerConn {
    /// Its entry in the registry (state, link, for the console).
    pub(crate) entry: Arc<ServerEntry>,
    registry: Arc<Registry>,
    pub(crate) stream: TcpStream,
    /// Bytes read from the server and not yet handled.
    pub(crate) buf: BytesMut,
    pub(crate) addr: SocketAddr,
    pub(crate) key: BackendKey,
    /// ParameterStatus values at login.
    pub(crate) params: Vec<(String, String)>,
    /// Fingerprint of the session settings applied (0: as logged in).
    pub(crate) settings: u64,
    pub(crate) statements: ServerStatements,
    pub(crate) expect: Expectations,
    /// Queries, Syncs and function calls sent and not yet answered by ReadyForQuery.
    pub(crate) outstanding: u32,
    /// Extended-protocol messages sent since the last Sync.
    pub(crate) unsynced: bool,
    /// Transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    pub(crate) status: u8,
    /// Bytes of the current reply message still to pass on (a long row arriving in pieces).
    pub(crate) passing: usize,
    /// Something went wrong on it: never reuse.
    pub(crate) broken: bool,
    pub(crate) created: Instant,
    /// Groups sent and not yet answered, oldest first.
    pub(crate) in_flight: VecDeque<InFlight>,
    /// Rows reported and whether an error came, in the oldest group so far.
    pub(crate) rows: u64,
    pub(crate) failed: bool,
    /// When the current transaction began, once one has.
    pub(crate) transaction_started: Option<Instant>,
}

impl ServerConn {
    /// Connects and logs in; returns once the server is ready for queries. The connection is
    /// in `registry` for as long as it lives.
    pub(crate) async fn connect(
        target: &Target,
        pool: &PoolKey,
        registry: &Arc<Registry>,
    ) -> Result<Self, ServerError> {
        let addr = format!("{}:{}", target.host, target.port);
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| ServerError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Replies are written whole; Nagle would only delay them.
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let local = stream.local_addr()?;
        let mut login = Login {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            key: BackendKey { pid: 0, secret: 0 },
            params: Vec::new(),
        };
        login.run(target).await?;
        let entry = registry.add_server(ServerEntry {
            id: NEXT_SERVER.fetch_add(1, Ordering::Relaxed),
            pool: pool.clone(),
            addr: peer,
            local,
            connected: SystemTime::now(),
            remote_pid: login.key.pid,
            link: Default::default(),
        });
        Ok(Self {
            entry,
            registry: Arc::clone(registry),
            stream: login.stream,
            buf: login.buf,
            addr: peer,
            key: login.key,
            params: login.params,
            settings: 0,
            statements: ServerStatements::new(target.max_prepared),
            expect: Expectations::default(),
            outstanding: 0,
            unsynced: false,
            status: b'I',
            passing: 0,
            broken: false,
            created: Instant::now(),
            in_flight: VecDeque::new(),
            rows: 0,
            failed: false,
            transaction_started: None,
        })
    }

    /// Runs the pooler's own simple query (settings, reset, rollback) and reads every reply up
    /// to ReadyForQuery; an error from the server is returned after that.
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        codec::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let mut failure = None;
        loop {
            match next_message(&mut self.stream, &mut self.buf).await? {
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    return failure.map_or(Ok(()), Err);
                }
                Message::ErrorResponse(body) => failure = Some(refused(&body)),
                _ => {}
            }
        }
    }

    /// Whether the server has neither closed the idle connection nor sent anything on it
    /// (a FATAL before closing, say): both make it unusable.
    pub(crate) fn is_open(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.try_read(&mut byte), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Whether the connection is between transactions with nothing in flight: the point where
    /// transaction mode gives it back.
    pub(crate) fn is_idle(&self) -> bool {
        self.outstanding == 0
            && !self.unsynced
            && self.status == b'I'
            && self.passing == 0
            && self.buf.is_empty()
    }
}

/// A connection being logged in.
struct Login {
    stream: TcpStream,
    buf: BytesMut,
    key: BackendKey,
    params: Vec<(String, String)>,
}

impl Login {
    async fn run(&mut self, target: &Target) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", target.user.as_str()),
                ("database", target.dbname.as_str()),
                ("application_name", "gatehouse"),
            ],
            &mut out,
        )?;
        self.stream.write_all(&out).await?;
        let password = || {
            target
                .password
                .as_deref()
                .ok_or_else(|| ServerError::NoPassword(target.user.clone()))
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let message = next_message(&mut self.stream, &mut self.buf).await?;
            out.clear();
            match message {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        target.user.as_bytes(),
                        password()?.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = false;
                    while let Some(mechanism) = mechanisms.next()? {
                        offered |= mechanism == "SCRAM-SHA-256";
                    }
                    if !offered {
                        return Err(ServerError::Protocol(
                            "the server offers no SASL mechanism we speak".into(),
                        ));
                    }
                    let state =
                        ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", state.message(), &mut out)?;
                    scram = Some(state);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram.as_mut().ok_or_else(|| unexpected("SASL continue"))?;
                    state.update(body.data())?;
                    frontend::sasl_response(state.message(), &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram.as_mut().ok_or_else(|| unexpected("SASL final"))?;
                    state.finish(body.data())?;
                }
                Message::ParameterStatus(body) => {
                    self.params
                        .push((body.name()?.to_string(), body.value()?.to_string()));
                }
                Message::BackendKeyData(body) => {
                    self.key = BackendKey {
                        pid: body.process_id(),
                        secret: body.secret_key(),
                    };
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(refused(&body)),
                Message::NoticeResponse(_) => {}
                _ => return Err(unexpected("message during login")),
            }
            if !out.is_empty() {
                self.stream.write_all(&out).await?;
            }
        }
    }
}

/// Reads the next whole message (login and the pooler's own queries only; relayed replies are
/// never parsed this way).
async fn next_message(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Message, ServerError> {
    loop {
        if let Some(message) = Message::parse(buf)? {
            return Ok(message);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

fn unexpected(what: &str) -> ServerError {
    ServerError::Protocol(format!("unexpected {what}"))
}

fn refused(body: &ErrorResponseBody) -> ServerError {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    ServerError::Refused { code, message }
}

impl Drop for ServerConn {
    /// Says goodbye (Terminate) so the server does not log an unexpected end of file; a broken
    /// connection just fails the write.
    fn drop(&mut self) {
        let _ = self.stream.try_write(b"X\0\0\0\x04");
        self.registry.forget_server(self.entry.id);
    }
}
