//! Named prepared statements in transaction mode. A client's statement may have been prepared
//! on a server it no longer holds, and drivers reuse names across connections (tokio-postgres
//! counts `s0, s1, ...` per process, pgbouncer#1067), so names are never sent as given:
//!
//! - each Parse is renamed to a pool-wide name derived from its text and parameter types, so
//!   equal statements share one server-side statement across clients;
//! - each client keeps a map from its names to those statements;
//! - each server keeps the set it has prepared (least recently used closed beyond
//!   `pool.max_prepared_statements`);
//! - a Bind or Describe of a statement the server lacks gets the Parse sent first, and the
//!   server's ParseComplete for it is dropped; a Parse the server already has becomes a no-op
//!   Close whose CloseComplete is turned into the ParseComplete the client waits for, so every
//!   reply stays in the order the client expects.
//!
//! Replies are matched to requests in order: ParseComplete only answers Parse and
//! CloseComplete only answers Close, and after an error the server skips everything up to
//! Sync, so expectations left when ReadyForQuery arrives are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{self, ProtocolError, cstr};

/// A no-op Close target: closing a statement that does not exist is not an error.
const NOOP_NAME: &str = "gatehouse_noop";

/// A statement as the servers know it.
#[derive(Debug)]
pub(crate) struct Statement {
    /// The pool-wide name.
    name: Arc<str>,
    /// The Parse message under that name, ready to send to any server.
    parse: Bytes,
    /// The query's shape, for the statistics.
    fingerprint: u64,
}

impl Statement {
    /// The shape and the Parse message to read the text from.
    pub(crate) fn shape(&self) -> (u64, Bytes) {
        (self.fingerprint, self.parse.clone())
    }
}

/// A client's statements by the names it gave them.
#[derive(Debug, Default)]
pub(crate) struct ClientStatements {
    by_name: HashMap<String, Arc<Statement>>,
}

/// The statements a server connection has prepared, least recently used first out.
#[derive(Debug)]
pub(crate) struct ServerStatements {
    last_used: HashMap<Arc<str>, u64>,
    clock: u64,
    capacity: usize,
}

impl ServerStatements {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            last_used: HashMap::new(),
            clock: 0,
            capacity,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last_used.len()
    }

    /// Whether `name` is prepared; marks it used.
    fn touch(&mut self, name: &Arc<str>) -> bool {
        self.clock += 1;
        match self.last_used.get_mut(name) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records `name`; returns the statement to close when over capacity.
    fn insert(&mut self, name: Arc<str>) -> Option<Arc<str>> {
        self.clock += 1;
        self.last_used.insert(name, self.clock);
        if self.last_used.len() <= self.capacity {
            return None;
        }
        let oldest = self
            .last_used
            .iter()
            .min_by_key(|(_, used)| **used)
            .map(|(name, _)| Arc::clone(name))?;
        self.last_used.remove(&oldest);
        Some(oldest)
    }

    fn remove(&mut self, name: &str) {
        self.last_used.remove(name);
    }

    pub(crate) fn clear(&mut self) {
        self.last_used.clear();
    }
}

/// What to do with a ParseComplete or CloseComplete when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The client asked for it.
    Pass,
    /// It answers something the pooler sent on its own.
    Drop,
    /// It answers a no-op Close standing in for a Parse the server already had.
    AsParseComplete,
}

#[derive(Debug)]
struct Expected {
    reply: Reply,
    /// The Sync group (count of Syncs sent before it).
    group: u64,
    /// A statement recorded as prepared when sent, forgotten if its group fails.
    prepares: Option<Arc<str>>,
}

/// Replies the pooler must intercept, in the order the server will send them.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    parses: VecDeque<Expected>,
    closes: VecDeque<Expected>,
    /// Syncs (and simple queries, function calls) sent.
    groups_sent: u64,
    /// Of those, answered by ReadyForQuery.
    groups_done: u64,
}

impl Expectations {
    /// A Sync, Query or FunctionCall went to the server.
    pub(crate) fn group_sent(&mut self) {
        self.groups_sent += 1;
    }

    fn push_parse(&mut self, reply: Reply, prepares: Option<Arc<str>>) {
        let group = self.groups_sent;
        self.parses.push_back(Expected {
            reply,
            group,
            prepares,
        });
    }

    fn push_close(&mut self, reply: Reply) {
        let group = self.groups_sent;
        self.closes.push_back(Expected {
            reply,
            group,
            prepares: None,
        });
    }

    /// What to do with a ParseComplete, and the statement it prepared (if named).
    pub(crate) fn parse_complete(&mut self) -> (Reply, Option<Arc<str>>) {
        self.parses
            .pop_front()
            .map_or((Reply::Pass, None), |e| (e.reply, e.prepares))
    }

    /// What to do with a CloseComplete.
    pub(crate) fn close_complete(&mut self) -> Reply {
        self.closes.pop_front().map_or(Reply::Pass, |e| e.reply)
    }

    /// ReadyForQuery ended the oldest group: whatever it still expected was skipped after an
    /// error, and statements it would have prepared are not there.
    pub(crate) fn group_done(&mut self, statements: &mut ServerStatements) {
        self.groups_done += 1;
        let done = self.groups_done;
        for queue in [&mut self.parses, &mut self.closes] {
            while queue.front().is_some_and(|e| e.group < done) {
                let skipped = queue.pop_front().expect("front exists");
                if let Some(name) = skipped.prepares {
                    statements.remove(&name);
                }
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.parses.is_empty() && self.closes.is_empty()
    }
}

/// One server's side of the bookkeeping, borrowed for a rewrite.
pub(crate) struct ServerSide<'a> {
    pub(crate) statements: &'a mut ServerStatements,
    pub(crate) expect: &'a mut Expectations,
}

/// Appends the server-bound form of a Parse, Bind, Describe or Close (`msg`, whole) to `out`;
/// returns the named statement a Bind executes.
pub(crate) fn rewrite(
    msg: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerSide<'_>,
    out: &mut BytesMut,
) -> Result<Option<Arc<Statement>>, ProtocolError> {
    let body = &msg[5..];
    match msg[0] {
        b'P' => parse(body, msg, client, server, out).map(|()| None),
        b'B' => {
            let (portal, rest) = cstr(body).ok_or(ProtocolError::BadBody("Bind"))?;
            let (name, rest) = cstr(rest).ok_or(ProtocolError::BadBody("Bind"))?;
            let Some(statement) = lookup(client, name) else {
                // Unnamed, or unknown: the server answers as it would without us.
                out.put_slice(msg);
                return Ok(None);
            };
            ensure_prepared(&statement, server, out);
            codec::message(out, b'B', |out| {
                codec::put_cstr(out, portal);
                codec::put_cstr(out, &statement.name);
                out.put_slice(rest);
            });
            Ok(Some(statement))
        }
        b'D' | b'C' => {
            let (&kind, rest) = body
                .split_first()
                .ok_or(ProtocolError::BadBody("Describe"))?;
            let (name, _) = cstr(rest).ok_or(ProtocolError::BadBody("Describe"))?;
            let statement = if kind == b'S' {
                lookup(client, name)
            } else {
                None
            };
            let closing = msg[0] == b'C';
            match (statement, closing) {
                (Some(statement), false) => {
                    ensure_prepared(&statement, server, out);
                    codec::message(out, b'D', |out| {
                        out.put_u8(b'S');
                        codec::put_cstr(out, &statement.name);
                    });
                }
                // The statement stays on the server for other clients; the client forgets it.
                (Some(_), true) => {
                    client.by_name.remove(name);
                    noop_close(out);
                    server.expect.push_close(Reply::Pass);
                }
                (None, _) => {
                    out.put_slice(msg);
                    if closing {
                        server.expect.push_close(Reply::Pass);
                    }
                }
            }
            Ok(None)
        }
        _ => {
            out.put_slice(msg);
            Ok(None)
        }
    }
}

fn lookup(client: &ClientStatements, name: &str) -> Option<Arc<Statement>> {
    if name.is_empty() {
        return None;
    }
    client.by_name.get(name).cloned()
}

fn parse(
    body: &[u8],
    msg: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerSide<'_>,
    out: &mut BytesMut,
) -> Result<(), ProtocolError> {
    let Some(statement) = named_statement(body)? else {
        out.put_slice(msg);
        server.expect.push_parse(Reply::Pass, None);
        return Ok(());
    };
    let (name, _) = cstr(body).ok_or(ProtocolError::BadBody("Parse"))?;
    client
        .by_name
        .insert(name.to_string(), Arc::clone(&statement));
    if server.statements.touch(&statement.name) {
        noop_close(out);
        server.expect.push_close(Reply::AsParseComplete);
    } else {
        send_parse(&statement, Reply::Pass, server, out);
    }
    Ok(())
}

/// The pool-wide statement of a Parse body; `None` for the unnamed statement (never renamed).
fn named_statement(body: &[u8]) -> Result<Option<Arc<Statement>>, ProtocolError> {
    let (name, rest) = cstr(body).ok_or(ProtocolError::BadBody("Parse"))?;
    let (text, _) = cstr(rest).ok_or(ProtocolError::BadBody("Parse"))?;
    if name.is_empty() {
        return Ok(None);
    }
    // Text and parameter types make the identity; the name is derived from them.
    let digest = xxhash_rust::xxh3::xxh3_128(rest);
    let pool_name: Arc<str> = format!("gh_{digest:032x}").into();
    let mut parse = BytesMut::with_capacity(rest.len() + pool_name.len() + 6);
    codec::message(&mut parse, b'P', |out| {
        codec::put_cstr(out, &pool_name);
        out.put_slice(rest);
    });
    Ok(Some(Arc::new(Statement {
        name: pool_name,
        parse: parse.freeze(),
        fingerprint: super::sql::effects(text).fingerprint,
    })))
}

/// Answers a batch of Parse messages and a Sync without a server, when every statement has
/// already been prepared successfully somewhere in the pool (`known`): a client preparing a
/// statement others use gets its ParseComplete at once. Without this, a client that prepares
/// synchronously (libpq's `PQprepare`, as pgbench does) while another client of the same thread
/// holds the last server in a transaction would wait for a server that cannot come back.
/// Returns the bytes consumed from `buf` and appends the replies to `out`, or returns 0 and
/// leaves everything as it was.
pub(crate) fn answer_known_parses(
    buf: &[u8],
    max_message: usize,
    client: &mut ClientStatements,
    known: impl Fn(&str) -> bool,
    out: &mut BytesMut,
) -> usize {
    let mut at = 0;
    let mut parsed = Vec::new();
    loop {
        let Ok(Some((tag, len))) = codec::frontend_frame(&buf[at..], max_message) else {
            return 0;
        };
        let body = &buf[at + 5..at + len];
        at += len;
        match tag {
            b'P' => {
                let Ok(Some(statement)) = named_statement(body) else {
                    return 0;
                };
                if !known(&statement.name) {
                    return 0;
                }
                let name = cstr(body).map_or("", |(name, _)| name);
                parsed.push((name.to_string(), statement));
            }
            b'S' if !parsed.is_empty() => break,
            _ => return 0,
        }
    }
    for (name, statement) in parsed {
        client.by_name.insert(name, statement);
        out.put_slice(b"1\0\0\0\x04");
    }
    codec::ready_for_query(out, b'I');
    at
}

/// Prepares `statement` on the server first unless it is there.
fn ensure_prepared(statement: &Statement, server: &mut ServerSide<'_>, out: &mut BytesMut) {
    if !server.statements.touch(&statement.name) {
        send_parse(statement, Reply::Drop, server, out);
    }
}

fn send_parse(
    statement: &Statement,
    reply: Reply,
    server: &mut ServerSide<'_>,
    out: &mut BytesMut,
) {
    if let Some(evicted) = server.statements.insert(Arc::clone(&statement.name)) {
        codec::message(out, b'C', |out| {
            out.put_u8(b'S');
            codec::put_cstr(out, &evicted);
        });
        server.expect.push_close(Reply::Drop);
    }
    out.put_slice(&statement.parse);
    server
        .expect
        .push_parse(reply, Some(Arc::clone(&statement.name)));
}

fn noop_close(out: &mut BytesMut) {
    codec::message(out, b'C', |out| {
        out.put_u8(b'S');
        codec::put_cstr(out, NOOP_NAME);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend(tag: u8, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut out = BytesMut::new();
        codec::message(&mut out, tag, body);
        out
    }

    fn parse_msg(name: &str, sql: &str) -> BytesMut {
        frontend(b'P', |out| {
            codec::put_cstr(out, name);
            codec::put_cstr(out, sql);
            out.put_i16(0);
        })
    }

    fn bind_msg(statement: &str) -> BytesMut {
        frontend(b'B', |out| {
            codec::put_cstr(out, "");
            codec::put_cstr(out, statement);
            out.put_slice(&[0, 0, 0, 0, 0, 0]);
        })
    }

    /// Tags of the messages in `out`, and the statement names of Parse/Bind/Close.
    fn summary(out: &[u8]) -> Vec<String> {
        let mut items = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (tag, len) = codec::backend_header(&out[at..]).unwrap();
            let body = &out[at + 5..at + len];
            let name = match tag {
                b'P' => cstr(body).unwrap().0,
                b'B' => cstr(cstr(body).unwrap().1).unwrap().0,
                b'C' | b'D' => cstr(&body[1..]).unwrap().0,
                _ => "",
            };
            let short = if name.starts_with("gh_") { "gh" } else { name };
            items.push(format!("{}:{short}", tag as char));
            at += len;
        }
        items
    }

    struct Server {
        statements: ServerStatements,
        expect: Expectations,
    }

    impl Server {
        fn new(capacity: usize) -> Self {
            Self {
                statements: ServerStatements::new(capacity),
                expect: Expectations::default(),
            }
        }

        fn send(&mut self, client: &mut ClientStatements, msgs: &[BytesMut]) -> Vec<String> {
            let mut out = BytesMut::new();
            for msg in msgs {
                let mut side = ServerSide {
                    statements: &mut self.statements,
                    expect: &mut self.expect,
                };
                rewrite(msg, client, &mut side, &mut out).unwrap();
            }
            summary(&out)
        }
    }

    #[test]
    fn renames_and_reprepares_on_another_server() {
        let mut client = ClientStatements::default();
        let mut first = Server::new(10);
        let sent = first.send(&mut client, &[parse_msg("s0", "select 1"), bind_msg("s0")]);
        assert_eq!(sent, ["P:gh", "B:gh"]);
        assert_eq!(first.expect.parse_complete().0, Reply::Pass);

        // Another server: the Bind brings its Parse, whose reply the client never sees.
        let mut second = Server::new(10);
        let sent = second.send(&mut client, &[bind_msg("s0")]);
        assert_eq!(sent, ["P:gh", "B:gh"]);
        assert_eq!(second.expect.parse_complete().0, Reply::Drop);

        // A second client parsing the same text on the first server: no second Parse.
        let mut other = ClientStatements::default();
        let sent = first.send(&mut other, &[parse_msg("s0", "select 1")]);
        assert_eq!(sent, ["C:gatehouse_noop"]);
        assert_eq!(first.expect.close_complete(), Reply::AsParseComplete);
    }

    #[test]
    fn unknown_and_unnamed_statements_pass_unchanged() {
        let mut client = ClientStatements::default();
        let mut server = Server::new(10);
        let sent = server.send(
            &mut client,
            &[parse_msg("", "select 1"), bind_msg(""), bind_msg("nope")],
        );
        assert_eq!(sent, ["P:", "B:", "B:nope"]);
    }

    #[test]
    fn evicts_the_least_recently_used_beyond_capacity() {
        let mut client = ClientStatements::default();
        let mut server = Server::new(1);
        server.send(&mut client, &[parse_msg("a", "select 1")]);
        let sent = server.send(&mut client, &[parse_msg("b", "select 2")]);
        assert_eq!(sent, ["C:gh", "P:gh"]);
        assert_eq!(server.expect.close_complete(), Reply::Drop);
        assert_eq!(server.statements.len(), 1);
    }

    #[test]
    fn a_failed_group_forgets_what_it_would_have_prepared() {
        let mut client = ClientStatements::default();
        let mut server = Server::new(10);
        server.send(&mut client, &[parse_msg("a", "select nonsense(")]);
        server.expect.group_sent();
        // The server answered ErrorResponse, then ReadyForQuery: no ParseComplete came.
        server.expect.group_done(&mut server.statements);
        assert!(server.expect.is_empty());
        assert_eq!(server.statements.len(), 0);
    }
}
