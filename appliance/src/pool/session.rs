//! A logged-in client: it gets a server connection when it sends something, keeps it for the
//! transaction (transaction mode) or the session (session mode, or a pinned client), and gives
//! it back clean.
//!
//! While a server is held, bytes flow both ways at once. Client messages are framed and checked
//! (and in transaction mode, statement names rewritten and session changes noted); the
//! server's replies are scanned only for their boundaries and the few tags that matter
//! (ReadyForQuery, ParseComplete, CloseComplete) and otherwise passed on as they came.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::Shared;
use super::cancel::cancel_server;
use super::client::{Conn, IDLE_BUFFER, RELAY_BUFFER, make_room, shrink};
use super::codec::{self, ProtocolError};
use super::pools::{Server, ServerPool};
use super::prepared::{self, ClientStatements, Reply, ServerSide};
use super::registry::{ClientEntry, State};
use super::server::{InFlight, ServerConn};
use super::settings::Settings;
use super::sql;
use super::stats::{Finished, PoolTotals, rows_of_tag};
use crate::config::PoolMode;

/// The settings fingerprint of a server whose session state nobody tracked: whoever gets it
/// next has theirs applied in full.
const UNKNOWN_SETTINGS: u64 = u64::MAX;

/// Relay buffers larger than this are given back between transactions.
const KEPT_BUFFER: usize = 16 * 1024;

/// How long the pooler's own clean-up queries (rollback, reset) may take before the
/// connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Ends a transaction's span, as failed with the SQLSTATE the client was sent, if any.
fn end_span(span: Option<opentelemetry_sdk::trace::Span>, failure: Option<&str>) {
    let Some(mut span) = span else {
        return;
    };
    if let Some(code) = failure {
        span.set_attribute(KeyValue::new("db.response.status_code", code.to_string()));
        span.set_status(Status::error(""));
    }
    span.end();
}

/// How holding a server ended.
enum Held {
    /// Transaction over: the server goes back.
    Done,
    /// The client left (or was sent away); the server may need cleaning.
    ClientGone,
    /// The client broke the protocol: it is told, then closed.
    ClientBroke(ProtocolError),
    /// The server connection failed.
    ServerLost(std::io::Error),
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    pool: Arc<ServerPool>,
    settings: Settings,
    statements: ClientStatements,
    client: Arc<ClientEntry>,
    /// Why this client keeps its server until it leaves (transaction mode).
    pinned: Option<&'static str>,
    /// The shape of the request group being sent (from its Query, Parse or Bind).
    group_shape: Option<(u64, bytes::Bytes)>,
    /// Bytes for the server, for the client: reused buffers.
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Session {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        pool: Arc<ServerPool>,
        settings: Settings,
        client: Arc<ClientEntry>,
    ) -> Self {
        Self {
            shared: Arc::clone(shared),
            pool,
            settings,
            statements: ClientStatements::default(),
            client,
            pinned: None,
            group_shape: None,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    /// The key its client was given (and is registered under).
    pub(crate) fn client_key(&self) -> codec::BackendKey {
        self.client.key
    }

    fn transaction_mode(&self) -> bool {
        self.pool.mode == PoolMode::Transaction
    }

    pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(mut self, mut conn: Conn<S>) {
        loop {
            // Between transactions: no server until the client sends a whole message.
            let first = loop {
                match codec::frontend_frame(&conn.buf, conn.max_message) {
                    Ok(Some((tag, _))) => break tag,
                    Ok(None) => {}
                    Err(err) => return conn.fatal("08P01", &err.to_string()).await,
                }
                match conn.fill().await {
                    Ok(true) => {}
                    _ => return,
                }
            };
            if first == b'X' {
                return;
            }
            if first == b'P' && self.transaction_mode() && self.answer_known_parses(&mut conn).await
            {
                continue;
            }
            // Boxed: an idle client's task then holds only this loop's state, not the
            // relay's (measured with 10,000 idle clients).
            if !Box::pin(self.transaction(&mut conn)).await {
                return;
            }
        }
    }

    /// Gets a server, relays until it can go back, and gives it back; `false` when the
    /// client's connection ends.
    async fn transaction<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> bool {
        let mut span = self.start_span();
        // acquire() times the wait for the pool's totals too; a second clock read is only
        // worth it for a span.
        let waiting = span.as_ref().map(|_| Instant::now());
        let mut server = match self.acquire().await {
            Ok(server) => server,
            Err(err) => {
                end_span(span, Some(err.code()));
                conn.fatal(err.code(), &err.to_string()).await;
                return false;
            }
        };
        if let (Some(span), Some(waiting)) = (&mut span, waiting) {
            span.set_attribute(KeyValue::new("server.address", server.addr.to_string()));
            let wait = waiting.elapsed().as_secs_f64();
            span.set_attribute(KeyValue::new("gatehouse.pool.wait", wait));
        }
        if let Err(err) = self.attach(&mut server).await {
            end_span(span, Some(err.code()));
            self.detach(&server);
            self.pool.release(server);
            conn.fatal(err.code(), &err.to_string()).await;
            return false;
        }
        let held = self.hold(conn, &mut server).await;
        self.detach(&server);
        let failure = match &held {
            Held::Done | Held::ClientGone => None,
            Held::ClientBroke(_) => Some("08P01"),
            Held::ServerLost(_) => Some("08006"),
        };
        end_span(span, failure);
        match held {
            Held::Done => {
                self.pool.release(server);
                // Between transactions the client holds only small buffers.
                shrink(&mut conn.buf, IDLE_BUFFER);
                shrink(&mut self.to_server, KEPT_BUFFER);
                shrink(&mut self.to_client, KEPT_BUFFER);
                true
            }
            Held::ClientGone => {
                self.give_back(server).await;
                false
            }
            Held::ClientBroke(err) => {
                self.give_back(server).await;
                conn.fatal("08P01", &err.to_string()).await;
                false
            }
            Held::ServerLost(err) => {
                server.broken = true;
                self.pool.release(server);
                warn!(error = %err, "server connection lost while serving a client");
                let text = format!("server connection lost: {err}");
                conn.fatal("08006", &text).await;
                false
            }
        }
    }

    /// The span of a transaction starting now, when transactions are traced and this one is
    /// sampled.
    fn start_span(&self) -> Option<opentelemetry_sdk::trace::Span> {
        let traces = self.shared.traces.as_ref()?;
        traces.transaction_span(|| {
            vec![
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.namespace", self.pool.key.database.clone()),
                KeyValue::new("db.user", self.pool.key.user.clone()),
                KeyValue::new("client.address", self.client.addr.ip().to_string()),
            ]
        })
    }

    /// See [`prepared::answer_known_parses`]; `true` when answered.
    async fn answer_known_parses<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> bool {
        let pool = Arc::clone(&self.pool);
        let used = prepared::answer_known_parses(
            &conn.buf,
            conn.max_message,
            &mut self.statements,
            |name| pool.knows_statement(name),
            &mut self.to_client,
        );
        if used == 0 {
            return false;
        }
        conn.buf.advance(used);
        let sent = conn.stream.write_all(&self.to_client).await.is_ok();
        self.to_client.clear();
        sent
    }

    /// Waits (while the pool is paused, then for a server), counting the wait.
    async fn acquire(&self) -> Result<Server, super::pools::AcquireError> {
        self.client.link.set(State::Waiting, 0);
        let started = Instant::now();
        self.pool.wait_unpaused().await;
        let acquired = self.pool.acquire().await;
        let totals = &self.pool.totals;
        totals.waited(started.elapsed());
        match &acquired {
            Ok(server) => {
                self.client.link.set(State::Active, server.entry.id);
                server
                    .entry
                    .link
                    .set(State::Active, self.client.key.pid as u64);
            }
            Err(_) => PoolTotals::add(&totals.acquire_errors, 1),
        }
        acquired
    }

    /// Unlinks client and server (the server is about to go back or be closed).
    fn detach(&self, server: &ServerConn) {
        self.client.set_cancel_target(None);
        self.client.link.set(State::Idle, 0);
        server.entry.link.set(State::Idle, 0);
    }

    /// Makes `server` carry this client's session settings.
    async fn attach(&mut self, server: &mut Server) -> Result<(), super::server::ServerError> {
        self.client
            .set_cancel_target(Some((server.addr, server.key)));
        let fingerprint = self.settings.fingerprint();
        if server.settings != fingerprint {
            server.execute(&self.settings.sql()).await?;
            server.settings = fingerprint;
        }
        Ok(())
    }

    /// Relays until the server can go back (transaction mode) or either side ends.
    async fn hold<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        server: &mut ServerConn,
    ) -> Held {
        let (idle_timeout, query_timeout) = {
            let config = self.shared.config();
            (config.idle_transaction_timeout, config.query_timeout)
        };
        let mut busy_since: Option<Instant> = None;
        let mut idle_since = Instant::now();
        let mut cancelled = false;
        loop {
            match self.forward_client_messages(conn, server) {
                Ok(true) => {}
                Ok(false) => return Held::ClientGone,
                Err(err) => return Held::ClientBroke(err),
            }
            if !self.to_server.is_empty() {
                if let Err(err) = server.stream.write_all(&self.to_server).await {
                    return Held::ServerLost(err);
                }
                PoolTotals::add(&self.pool.totals.received, self.to_server.len() as u64);
                self.to_server.clear();
            }
            if server.is_idle() && self.transaction_mode() && self.pinned.is_none() {
                return Held::Done;
            }
            // The clocks of query_timeout and idle_transaction_timeout.
            if server.outstanding > 0 {
                busy_since.get_or_insert_with(Instant::now);
            } else {
                if busy_since.take().is_some() {
                    idle_since = Instant::now();
                }
                cancelled = false;
            }
            let deadline = match busy_since {
                Some(since) if !query_timeout.is_zero() && !cancelled => {
                    Some(since + query_timeout)
                }
                None if !idle_timeout.is_zero() && server.status != b'I' => {
                    Some(idle_since + idle_timeout)
                }
                _ => None,
            };
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            make_room(&mut conn.buf, RELAY_BUFFER);
            make_room(&mut server.buf, RELAY_BUFFER);
            tokio::select! {
                // The server's replies first: they are what a held connection waits for.
                biased;
                read = server.stream.read_buf(&mut server.buf) => match read {
                    Ok(n) if n > 0 => {
                        relay_replies(server, &mut self.to_client, &self.pool);
                        if let Err(_gone) = conn.stream.write_all(&self.to_client).await {
                            self.to_client.clear();
                            return Held::ClientGone;
                        }
                        PoolTotals::add(&self.pool.totals.sent, self.to_client.len() as u64);
                        self.to_client.clear();
                    }
                    Ok(_) => return Held::ServerLost(std::io::ErrorKind::UnexpectedEof.into()),
                    Err(err) => return Held::ServerLost(err),
                },
                read = conn.stream.read_buf(&mut conn.buf) => match read {
                    Ok(n) if n > 0 => {}
                    _ => return Held::ClientGone,
                },

                () = expired => {
                    if busy_since.is_some() {
                        debug!("query_timeout: cancelling the running query");
                        cancelled = true;
                        cancel_server(server.addr, server.key).await;
                    } else {
                        conn.fatal("25P03", "terminating connection due to idle-in-transaction timeout (pool.idle_transaction_timeout)").await;
                        return Held::ClientGone;
                    }
                }
            }
        }
    }

    /// Moves every whole client message into `to_server`; `Ok(false)` when the client said
    /// goodbye (Terminate).
    fn forward_client_messages<S>(
        &mut self,
        conn: &mut Conn<S>,
        server: &mut ServerConn,
    ) -> Result<bool, ProtocolError> {
        let transaction_mode = self.transaction_mode();
        while let Some((tag, len)) = codec::frontend_frame(&conn.buf, conn.max_message)? {
            let msg = conn.buf.split_to(len).freeze();
            match tag {
                b'X' => return Ok(false),
                b'Q' | b'S' | b'F' => {
                    if tag == b'Q' {
                        let text = codec::sql_text(&msg).ok_or(ProtocolError::BadBody("Query"))?;
                        let fingerprint = self.note_effects(text, server);
                        self.group_shape = Some((fingerprint, msg.clone()));
                    }
                    if server.in_flight.is_empty() && server.transaction_started.is_none() {
                        server.transaction_started = Some(Instant::now());
                    }
                    server.in_flight.push_back(InFlight {
                        started: Instant::now(),
                        shape: self.group_shape.take(),
                    });
                    server.outstanding += 1;
                    server.unsynced = false;
                    server.expect.group_sent();
                    self.to_server.put_slice(&msg);
                }
                b'P' | b'B' | b'D' | b'C' if transaction_mode => {
                    if tag == b'P' {
                        let text = codec::sql_text(&msg).ok_or(ProtocolError::BadBody("Parse"))?;
                        let fingerprint = self.note_effects(text, server);
                        self.group_shape = Some((fingerprint, msg.clone()));
                    }
                    let mut side = ServerSide {
                        statements: &mut server.statements,
                        expect: &mut server.expect,
                    };
                    let bound = prepared::rewrite(
                        &msg,
                        &mut self.statements,
                        &mut side,
                        &mut self.to_server,
                    )?;
                    if let Some(statement) = bound {
                        self.group_shape = Some(statement.shape());
                    }
                    server.unsynced = true;
                }
                b'P' => {
                    let text = codec::sql_text(&msg).ok_or(ProtocolError::BadBody("Parse"))?;
                    self.group_shape = Some((sql::effects(text).fingerprint, msg.clone()));
                    server.unsynced = true;
                    self.to_server.put_slice(&msg);
                }
                _ => {
                    // Copy data and its end do not open an extended-protocol batch.
                    server.unsynced |= !matches!(tag, b'd' | b'c' | b'f');
                    self.to_server.put_slice(&msg);
                }
            }
        }
        Ok(true)
    }

    /// Records what `sql` does to the session (in transaction mode; session mode keeps its
    /// server, so nothing needs tracking); returns the query's shape.
    fn note_effects(&mut self, sql: &str, server: &mut ServerConn) -> u64 {
        let effects = sql::effects(sql);
        if !self.transaction_mode() {
            return effects.fingerprint;
        }
        if !effects.settings.is_empty() {
            for change in effects.settings {
                self.settings.apply(change);
            }
            server.settings = self.settings.fingerprint();
        }
        if effects.drops_prepared {
            server.statements.clear();
        }
        if let Some(reason) = effects.pin
            && self.pinned.is_none()
        {
            debug!(
                reason,
                "client pinned to its server connection until it disconnects"
            );
            self.pinned = Some(reason);
        }
        effects.fingerprint
    }

    /// The client is gone: the server is rolled back and reset, or closed when that is not
    /// possible quickly.
    async fn give_back(&mut self, mut server: Server) {
        let mid_reply = server.outstanding > 0
            || server.unsynced
            || server.passing > 0
            || !server.buf.is_empty();
        if mid_reply || server.broken {
            server.broken = true;
            return self.pool.release(server);
        }
        // A pinned client's state cannot be left behind; a session's may, when the operator
        // turned reset_on_return off (and then its settings are unknown to the next client).
        let reset = self.pinned.is_some()
            || (!self.transaction_mode() && self.shared.config().reset_on_return);
        let cleaned = tokio::time::timeout(RESET_TIMEOUT, async {
            if server.status != b'I' {
                server.execute("ROLLBACK").await?;
            }
            if reset {
                server.execute("DISCARD ALL").await?;
                server.statements.clear();
                server.settings = 0;
            } else if !self.transaction_mode() {
                server.settings = UNKNOWN_SETTINGS;
            }
            Ok::<_, super::server::ServerError>(())
        })
        .await;
        if !matches!(cleaned, Ok(Ok(()))) {
            server.broken = true;
        }
        self.pool.release(server);
    }
}

/// Moves the server's complete replies (and the available part of a long one) from its buffer
/// to `out`, intercepting what the pooler asked for itself and counting into `pool`.
fn relay_replies(server: &mut ServerConn, out: &mut BytesMut, pool: &ServerPool) {
    // Out of `server` while it is read, so the bookkeeping below may borrow the rest.
    let mut buf = std::mem::take(&mut server.buf);
    let mut at = 0;
    loop {
        if server.passing > 0 {
            let n = server.passing.min(buf.len() - at);
            out.put_slice(&buf[at..at + n]);
            at += n;
            server.passing -= n;
            if server.passing > 0 {
                break;
            }
        }
        let Some((tag, len)) = codec::backend_header(&buf[at..]) else {
            break;
        };
        if !matches!(tag, b'Z' | b'1' | b'3' | b'C' | b'E') {
            let n = len.min(buf.len() - at);
            out.put_slice(&buf[at..at + n]);
            server.passing = len - n;
            at += n;
            continue;
        }
        // The tags acted on are tiny: wait for them whole.
        if buf.len() - at < len {
            break;
        }
        let whole = &buf[at..at + len];
        match tag {
            b'Z' => {
                server.status = whole.get(5).copied().unwrap_or(b'I');
                server.outstanding = server.outstanding.saturating_sub(1);
                server.expect.group_done(&mut server.statements);
                group_answered(server, pool);
                out.put_slice(whole);
            }
            b'C' => {
                server.rows += rows_of_tag(&whole[5..]);
                out.put_slice(whole);
            }
            b'E' => {
                server.failed = true;
                out.put_slice(whole);
            }
            b'1' => {
                let (reply, prepared) = server.expect.parse_complete();
                if let Some(name) = prepared {
                    pool.learn_statement(name);
                }
                if reply != Reply::Drop {
                    out.put_slice(whole);
                }
            }
            _ => match server.expect.close_complete() {
                Reply::Pass => out.put_slice(whole),
                Reply::Drop => {}
                Reply::AsParseComplete => out.put_slice(b"1\0\0\0\x04"),
            },
        }
        at += len;
    }
    buf.advance(at);
    server.buf = buf;
}

/// A ReadyForQuery ended the oldest group in flight: its time, rows and shape are counted, and
/// the transaction's when it ended too.
fn group_answered(server: &mut ServerConn, pool: &ServerPool) {
    let now = Instant::now();
    let totals = &pool.totals;
    if let Some(group) = server.in_flight.pop_front() {
        let took = now.duration_since(group.started);
        PoolTotals::add(&totals.queries, 1);
        PoolTotals::add(&totals.query_micros, took.as_micros() as u64);
        if let Some((fingerprint, message)) = group.shape {
            let finished = Finished {
                fingerprint,
                took,
                rows: server.rows,
                failed: server.failed,
            };
            pool.queries.record(finished, || {
                sql::normalize(codec::sql_text(&message).unwrap_or_default())
            });
        }
    }
    server.rows = 0;
    server.failed = false;
    if server.status == b'I'
        && let Some(started) = server.transaction_started.take()
    {
        PoolTotals::add(&totals.transactions, 1);
        PoolTotals::add(
            &totals.transaction_micros,
            now.duration_since(started).as_micros() as u64,
        );
    }
}
