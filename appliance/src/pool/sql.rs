//! What a client's SQL does to its session, read from the statement text without a parser:
//! a light lexer (strings, quoted identifiers, dollar quotes and comments are skipped) and the
//! leading keywords of each statement.
//!
//! In transaction mode a server connection serves many clients, so session state is either
//! *tracked* or *pinned*:
//! - tracked: `SET`/`RESET` of settings (and the startup parameters) are remembered per client
//!   and replayed on whichever server the client gets next; protocol-level prepared statements
//!   are renamed and re-prepared (see `prepared`);
//! - pinned: `LISTEN`, SQL `PREPARE`, temporary tables, `WITH HOLD` cursors, session advisory
//!   locks, `LOAD` and session-level `set_config` keep the client on its server until it
//!   disconnects; the server is then reset with `DISCARD ALL` before anyone else gets it.

/// What one query string does to session state.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Effects {
    /// Setting changes, in order.
    pub(crate) settings: Vec<SettingChange>,
    /// Why the client must keep its server, if it must.
    pub(crate) pin: Option<&'static str>,
    /// `DISCARD ALL` or `DEALLOCATE`: the server's prepared statements are gone.
    pub(crate) drops_prepared: bool,
    /// The query's shape: equal for queries that differ only in literals and spacing.
    pub(crate) fingerprint: u64,
}

/// A session-level setting change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SettingChange {
    /// `SET name ...`: the statement replays it.
    Set {
        /// Lowercase setting name (`timezone` for `SET TIME ZONE`).
        name: String,
        /// The statement as written.
        statement: String,
    },
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL` or `DISCARD ALL`.
    ResetAll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    /// A `"quoted identifier"`, quotes included.
    Quoted(&'a str),
    /// A string, number, parameter or other literal.
    Literal,
    Punct(u8),
}

/// Reads `sql` once; cheap enough for every query.
pub(crate) fn effects(sql: &str) -> Effects {
    let mut effects = Effects::default();
    let mut tokens = Vec::with_capacity(32);
    let mut start = 0;
    let mut shape = ShapeHasher::new();
    lex(sql, |token, at| {
        shape.token(token);
        match token {
            Token::Punct(b';') => {
                statement(&sql[start..at], &tokens, &mut effects);
                tokens.clear();
                start = at + 1;
            }
            token => tokens.push(token),
        }
    });
    statement(&sql[start..], &tokens, &mut effects);
    effects.fingerprint = shape.digest();
    effects
}

/// The shape hash of a query: its tokens (words lowercased, literals as `?`, each ended by a
/// NUL) written to a buffer on the stack and hashed in one call, cheaper than two streaming
/// updates per token. A query too long for the buffer streams it out as it fills; both give
/// the same digest for the same bytes. (With [`continues_word`]: 10 % fewer instructions per
/// query read, as callgrind counts them over pgbench's statements and an ORM's query.)
struct ShapeHasher {
    buf: [u8; 512],
    len: usize,
    stream: Option<Box<xxhash_rust::xxh3::Xxh3Default>>,
}

impl ShapeHasher {
    fn new() -> Self {
        Self {
            buf: [0; 512],
            len: 0,
            stream: None,
        }
    }

    fn token(&mut self, token: Token<'_>) {
        match token {
            Token::Word(word) => self.write(word.as_bytes(), true),
            Token::Quoted(text) => self.write(text.as_bytes(), false),
            Token::Literal => self.push(b'?'),
            Token::Punct(b) => self.push(b),
        }
        self.push(0);
    }

    fn write(&mut self, mut bytes: &[u8], lowercase: bool) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.spill();
            }
            let n = bytes.len().min(self.buf.len() - self.len);
            let to = &mut self.buf[self.len..self.len + n];
            for (to, &from) in to.iter_mut().zip(&bytes[..n]) {
                *to = if lowercase {
                    from.to_ascii_lowercase()
                } else {
                    from
                };
            }
            self.len += n;
            bytes = &bytes[n..];
        }
    }

    fn push(&mut self, byte: u8) {
        if self.len == self.buf.len() {
            self.spill();
        }
        self.buf[self.len] = byte;
        self.len += 1;
    }

    /// The buffer is full: its bytes go to the streaming hasher.
    #[cold]
    fn spill(&mut self) {
        self.stream
            .get_or_insert_with(Default::default)
            .update(&self.buf);
        self.len = 0;
    }

    fn digest(self) -> u64 {
        let tail = &self.buf[..self.len];
        match self.stream {
            None => xxhash_rust::xxh3::xxh3_64(tail),
            Some(mut stream) => {
                stream.update(tail);
                stream.digest()
            }
        }
    }
}

/// The query with literals replaced by `?` and spacing made regular, for people to read.
pub(crate) fn normalize(sql: &str) -> String {
    let mut text = String::with_capacity(sql.len().min(256));
    let mut glue_next = false;
    let mut previous_word: Option<&str> = None;
    lex(sql, |token, _| {
        let piece = match token {
            Token::Word(word) | Token::Quoted(word) => word,
            Token::Literal => "?",
            Token::Punct(b) => match b {
                b'(' => "(",
                b')' => ")",
                b',' => ",",
                b'.' => ".",
                b':' => ":",
                b';' => ";",
                b'=' => "=",
                b'*' => "*",
                b'<' => "<",
                b'>' => ">",
                b'+' => "+",
                b'-' => "-",
                b'/' => "/",
                b'[' => "[",
                b']' => "]",
                _ => "~",
            },
        };
        let glue_before = match token {
            Token::Punct(b',' | b')' | b'.' | b':' | b';' | b'[' | b']') => true,
            // A call's parenthesis sticks to its name, a keyword's does not.
            Token::Punct(b'(') => previous_word.is_some_and(|w| {
                !SPACED_BEFORE_PARENTHESIS
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(w))
            }),
            _ => false,
        };
        if !glue_next && !glue_before && !text.is_empty() {
            text.push(' ');
        }
        text.push_str(piece);
        glue_next = matches!(token, Token::Punct(b'(' | b'.' | b':' | b'['));
        previous_word = match token {
            Token::Word(word) => Some(word),
            _ => None,
        };
    });
    text
}

/// Keywords written with a space before a parenthesis: `IN (`, `VALUES (`.
const SPACED_BEFORE_PARENTHESIS: &[&str] = &[
    "in",
    "values",
    "and",
    "or",
    "not",
    "exists",
    "as",
    "from",
    "where",
    "on",
    "using",
    "select",
    "join",
    "returning",
    "set",
    "any",
    "all",
];

fn statement(text: &str, tokens: &[Token<'_>], effects: &mut Effects) {
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => Some(*w),
        _ => None,
    };
    let is = |i: usize, kw: &str| word(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
    if is(0, "set") {
        let at = if is(1, "session") && !is(2, "authorization") && !is(2, "characteristics") {
            2
        } else {
            1
        };
        if is(at, "local") || is(at, "transaction") || is(at, "constraints") {
            return;
        }
        let name = if is(at, "time") && is(at + 1, "zone") {
            "timezone".to_string()
        } else if is(1, "session") && (is(2, "authorization") || is(2, "characteristics")) {
            format!(
                "session_{}",
                word(2).unwrap_or_default().to_ascii_lowercase()
            )
        } else {
            match setting_name(&tokens[at.min(tokens.len())..]) {
                Some(name) => name,
                None => return,
            }
        };
        effects.settings.push(SettingChange::Set {
            name,
            statement: text.trim().to_string(),
        });
    } else if is(0, "reset") {
        let change = if is(1, "all") {
            SettingChange::ResetAll
        } else if is(1, "time") && is(2, "zone") {
            SettingChange::Reset("timezone".into())
        } else if is(1, "session") && is(2, "authorization") {
            SettingChange::Reset("session_authorization".into())
        } else {
            match setting_name(&tokens[1.min(tokens.len())..]) {
                Some(name) => SettingChange::Reset(name),
                None => return,
            }
        };
        effects.settings.push(change);
    } else if is(0, "discard") && is(1, "all") {
        effects.settings.push(SettingChange::ResetAll);
        effects.drops_prepared = true;
    } else if is(0, "deallocate") {
        effects.drops_prepared = true;
    } else if is(0, "listen") {
        effects.pin = Some("LISTEN");
    } else if is(0, "prepare") && !is(1, "transaction") {
        effects.pin = Some("PREPARE");
    } else if is(0, "load") {
        effects.pin = Some("LOAD");
    } else if is(0, "create") && creates_temporary(tokens) {
        effects.pin = Some("a temporary table");
    } else if is(0, "declare") && holds(tokens) {
        effects.pin = Some("a WITH HOLD cursor");
    }
    if let Some(reason) = session_function(tokens) {
        effects.pin = Some(reason);
    }
}

/// `name` or `a.b` at the front of `tokens` (before `TO`, `=` or the end), lowercased.
fn setting_name(tokens: &[Token<'_>]) -> Option<String> {
    let mut name = String::new();
    for token in tokens {
        match token {
            Token::Word(w) if w.eq_ignore_ascii_case("to") && !name.is_empty() => break,
            Token::Word(w) => name.push_str(&w.to_ascii_lowercase()),
            Token::Punct(b'.') => name.push('.'),
            _ => break,
        }
    }
    (!name.is_empty()).then_some(name)
}

/// `CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY ...`
fn creates_temporary(tokens: &[Token<'_>]) -> bool {
    tokens.iter().take(4).any(|t| {
        matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("temp") || w.eq_ignore_ascii_case("temporary"))
    })
}

/// `DECLARE name ... WITH HOLD ... FOR`
fn holds(tokens: &[Token<'_>]) -> bool {
    tokens.windows(2).any(|pair| {
        matches!(pair, [Token::Word(a), Token::Word(b)] if a.eq_ignore_ascii_case("with") && b.eq_ignore_ascii_case("hold"))
    })
}

/// Calls that change the session: advisory locks held past the transaction, and
/// `set_config(name, value, false)`.
fn session_function(tokens: &[Token<'_>]) -> Option<&'static str> {
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        if tokens.get(i + 1) != Some(&Token::Punct(b'(')) {
            continue;
        }
        let lower = word.to_ascii_lowercase();
        if lower.starts_with("pg_") && lower.contains("advisory") && !lower.contains("xact") {
            if !lower.contains("unlock") {
                return Some("a session advisory lock");
            }
        } else if lower == "set_config" && !last_argument_is_true(&tokens[i + 2..]) {
            return Some("set_config(..., false)");
        }
    }
    None
}

/// Whether the argument list opened before `tokens` ends with the keyword `true`.
fn last_argument_is_true(tokens: &[Token<'_>]) -> bool {
    let mut depth = 0;
    let mut last = None;
    for token in tokens {
        match token {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') if depth == 0 => break,
            Token::Punct(b')') => depth -= 1,
            Token::Punct(b',') if depth == 0 => last = None,
            other => last = Some(*other),
        }
    }
    matches!(last, Some(Token::Word(w)) if w.eq_ignore_ascii_case("true"))
}

/// Calls `emit` with each token and its byte offset; literals and comments are skipped over
/// as whole tokens.
fn lex<'a>(sql: &'a str, mut emit: impl FnMut(Token<'a>, usize)) {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = memchr_from(bytes, i, b'\n').map_or(bytes.len(), |n| n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = block_comment_end(bytes, i + 2),
            b'\'' => {
                i = quoted_end(bytes, i + 1, b'\'', false);
                emit(Token::Literal, i);
            }
            b'"' => {
                let start = i;
                i = quoted_end(bytes, i + 1, b'"', false);
                emit(Token::Quoted(&sql[start..i]), start);
            }
            b'$' => match dollar_tag(bytes, i) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = find(bytes, body, tag).map_or(bytes.len(), |end| end + tag.len());
                    emit(Token::Literal, i);
                }
                None => i += 1,
            },
            b'0'..=b'9' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                emit(Token::Literal, i);
            }
            _ if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                let start = i;
                i += bytes[i..]
                    .iter()
                    .position(|&b| !continues_word(b))
                    .unwrap_or(bytes.len() - i);
                // E'...' strings take backslash escapes.
                if i - start == 1 && bytes.get(i) == Some(&b'\'') && matches!(b, b'e' | b'E') {
                    i = quoted_end(bytes, i + 1, b'\'', true);
                    emit(Token::Literal, i);
                    continue;
                }
                emit(Token::Word(&sql[start..i]), start);
            }
            _ if b.is_ascii_whitespace() => i += 1,
            _ => {
                emit(Token::Punct(b), i);
                i += 1;
            }
        }
    }
}

/// Whether `b` may continue a word: letters, digits, `_`, `$` and any byte of a non-ASCII
/// character. A table: most of a query's bytes are words, and this is asked for each.
fn continues_word(b: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
            b += 1;
        }
        table
    };
    TABLE[b as usize]
}

fn memchr_from(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == needle)
        .map(|n| n + from)
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| n + from)
}

/// After the closing quote (doubled quotes, and backslash escapes in `E''`, stay inside).
fn quoted_end(bytes: &[u8], mut i: usize, quote: u8, backslashes: bool) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslashes => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Block comments nest in PostgreSQL.
fn block_comment_end(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 1;
    while i < bytes.len() {
        if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// `$tag$` or `$$` at `i` (a `$1` parameter is not a tag).
fn dollar_tag(bytes: &[u8], i: usize) -> Option<&[u8]> {
    let end = memchr_from(bytes, i + 1, b'$')?;
    let tag = &bytes[i + 1..end];
    let valid = tag
        .iter()
        .enumerate()
        .all(|(n, b)| b.is_ascii_alphabetic() || *b == b'_' || (n > 0 && b.is_ascii_digit()));
    valid.then_some(&bytes[i..=end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, statement: &str) -> SettingChange {
        SettingChange::Set {
            name: name.into(),
            statement: statement.into(),
        }
    }

    #[test]
    fn tracks_session_settings_but_not_local_ones() {
        let e = effects("SET search_path TO app, public; set local work_mem = '1MB'");
        assert_eq!(
            e.settings,
            [set("search_path", "SET search_path TO app, public")]
        );
        assert_eq!(e.pin, None);
        let e = effects("SET SESSION TIME ZONE 'UTC'; SET myapp.user_id = 7; RESET ALL");
        assert_eq!(
            e.settings,
            [
                set("timezone", "SET SESSION TIME ZONE 'UTC'"),
                set("myapp.user_id", "SET myapp.user_id = 7"),
                SettingChange::ResetAll
            ]
        );
        assert_eq!(
            effects("RESET statement_timeout").settings,
            [SettingChange::Reset("statement_timeout".into())]
        );
        assert_eq!(
            effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").settings,
            []
        );
    }

    #[test]
    fn pins_what_cannot_be_tracked() {
        assert_eq!(effects("LISTEN jobs").pin, Some("LISTEN"));
        assert_eq!(effects("prepare q as select 1").pin, Some("PREPARE"));
        assert_eq!(
            effects("CREATE TEMP TABLE t (x int)").pin,
            Some("a temporary table")
        );
        assert_eq!(
            effects("select pg_advisory_lock(1)").pin,
            Some("a session advisory lock")
        );
        assert_eq!(effects("select pg_advisory_xact_lock(1)").pin, None);
        assert_eq!(
            effects("select set_config('a.b', 'x', false)").pin,
            Some("set_config(..., false)")
        );
        assert_eq!(effects("select set_config('a.b', f(1, 2), true)").pin, None);
        assert_eq!(
            effects("DECLARE c CURSOR WITH HOLD FOR select 1").pin,
            Some("a WITH HOLD cursor")
        );
        assert!(effects("DISCARD ALL").drops_prepared);
    }

    #[test]
    fn queries_differing_in_literals_share_a_shape() {
        let a = effects("SELECT abalance FROM pgbench_accounts WHERE aid = 42");
        let b = effects("select abalance  from pgbench_accounts where aid = 7");
        let c = effects("select abalance from pgbench_accounts where bid = 7");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(
            normalize("SELECT a.x, count(*) FROM t a WHERE s = 'it''s' AND n IN ($1, 2.5)::int[]"),
            "SELECT a.x, count(*) FROM t a WHERE s = ? AND n IN (?, ?)::int[]"
        );
    }

    #[test]
    fn long_queries_are_shaped_whole_and_short_ones_keep_their_fingerprint() {
        // Past the hasher's buffer: the part streamed out and the tail both count.
        let columns = |case: fn(&str) -> String| {
            (0..120)
                .map(|i| case(&format!("Column_{i}")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let upper = format!(
            "SELECT {} FROM t WHERE id = 1",
            columns(|c| c.to_uppercase())
        );
        let lower = format!(
            "select {} from t where id = 99",
            columns(|c| c.to_lowercase())
        );
        let other = format!(
            "select {} from t where key = 1",
            columns(|c| c.to_lowercase())
        );
        assert!(upper.len() > 2 * 512);
        assert_eq!(effects(&upper).fingerprint, effects(&lower).fingerprint);
        assert_ne!(effects(&lower).fingerprint, effects(&other).fingerprint);
        // Hashed whole when short: the xxh3 of its tokens, each ended by a NUL.
        assert_eq!(
            effects("SELECT x FROM t WHERE id = 42").fingerprint,
            xxhash_rust::xxh3::xxh3_64(b"select\0x\0from\0t\0where\0id\0=\0?\0")
        );
    }

    #[test]
    fn ignores_keywords_inside_literals_and_comments() {
        for sql in [
            "select 'LISTEN x; SET a = 1'",
            "select $$; listen x$$",
            "select $body$ ; set x = 1 $body$",
            "select E'it\\'s; listen x'",
            "-- listen x\nselect 1",
            "/* set a /* nested */ = 1; listen x */ select 1",
            "select \"set\" from t",
            "insert into t values ($1, $2)",
        ] {
            let e = effects(sql);
            assert_eq!(
                (e.settings.len(), e.pin, e.drops_prepared),
                (0, None, false),
                "{sql}"
            );
        }
    }
}
