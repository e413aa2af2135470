//! Who may connect to the pooler, and the server side of proving it: SCRAM-SHA-256 (RFC 5802 and
//! 7677, without channel binding) and MD5, checked against `pool.users` and a PgBouncer
//! `userlist.txt`. Passwords may be stored plain or as PostgreSQL stores them.
//!
//! An unknown user goes through the same exchange as a known one and fails at the same step,
//! so a client cannot probe which names exist.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::codec::{self, cstr};
use crate::config::{AuthType, PoolConfig};

/// A user's stored secret.
#[derive(Clone)]
enum Secret {
    /// Plain text: every method works, and it can log in to the server too.
    Plain(String),
    /// `md5` + hex(md5(password + user)): MD5 only.
    Md5(String),
    /// A SCRAM verifier: SCRAM only.
    Scram(ScramVerifier),
}

/// What a server keeps to check SCRAM proofs without knowing the password.
#[derive(Clone)]
struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// A user allowed in.
#[derive(Clone)]
pub(crate) struct User {
    secret: Secret,
    /// For a plain password: a verifier made from it once, at load.
    scram: Option<ScramVerifier>,
}

impl User {
    /// The plain password, when stored plain: what the pooler logs in to the server with
    /// unless the database names its own.
    pub(crate) fn plain_password(&self) -> Option<&str> {
        match &self.secret {
            Secret::Plain(password) => Some(password),
            _ => None,
        }
    }
}

/// The users from `pool.users` and `pool.auth_file` (the file's entries win).
#[derive(Default, Clone)]
pub(crate) struct Users {
    by_name: HashMap<String, User>,
}

/// Why the user list cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UsersError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {why}")]
    Line {
        path: String,
        line: usize,
        why: String,
    },
    #[error("user {user}: {why}")]
    Secret { user: String, why: String },
}

impl Users {
    pub(crate) fn load(config: &PoolConfig) -> Result<Self, UsersError> {
        let mut by_name = HashMap::new();
        for (name, user) in &config.users {
            let secret = parse_secret(&user.password).map_err(|why| UsersError::Secret {
                user: name.clone(),
                why,
            })?;
            by_name.insert(name.clone(), User::new(secret));
        }
        if let Some(path) = &config.auth_file {
            for (name, secret) in read_userlist(path)? {
                by_name.insert(name, User::new(secret));
            }
        }
        Ok(Self { by_name })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }
}

impl User {
    fn new(secret: Secret) -> Self {
        let scram = match &secret {
            Secret::Plain(password) if !password.is_empty() => {
                let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
                Some(parse_scram(&verifier).expect("postgres-protocol writes valid verifiers"))
            }
            Secret::Scram(verifier) => Some(verifier.clone()),
            _ => None,
        };
        Self { secret, scram }
    }
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    if text.starts_with("SCRAM-SHA-256$") {
        return parse_scram(text).map(Secret::Scram);
    }
    if let Some(hex) = text.strip_prefix("md5")
        && hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(Secret::Md5(text.to_ascii_lowercase()));
    }
    Ok(Secret::Plain(text.to_string()))
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as in `pg_authid`.
fn parse_scram(text: &str) -> Result<ScramVerifier, String> {
    let bad = || "not a SCRAM-SHA-256 verifier ($iterations:salt$StoredKey:ServerKey)".to_string();
    let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
    let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
    let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
    let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
    let key = |b64: &str| -> Result<[u8; 32], String> {
        BASE64
            .decode(b64)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)
    };
    Ok(ScramVerifier {
        iterations: iterations.parse().map_err(|_| bad())?,
        salt: BASE64.decode(salt).map_err(|_| bad())?,
        stored_key: key(stored)?,
        server_key: key(server)?,
    })
}

/// PgBouncer's format: `"name" "password"` per line, `""` for a quote inside; `;` comments.
fn read_userlist(path: &Path) -> Result<Vec<(String, Secret)>, UsersError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut users = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let fail = |why: String| UsersError::Line {
            path: path.display().to_string(),
            line: index + 1,
            why,
        };
        let (name, rest) =
            quoted(line).ok_or_else(|| fail("expected \"user\" \"password\"".into()))?;
        let (password, _) =
            quoted(rest.trim_start()).ok_or_else(|| fail("expected a quoted password".into()))?;
        users.push((name, parse_secret(&password).map_err(fail)?));
    }
    Ok(users)
}

/// A `"..."` string with `""` as an escaped quote, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices().peekable();
    let mut value = String::new();
    while let Some((at, c)) = chars.next() {
        if c != '"' {
            value.push(c);
        } else if chars.peek().map(|(_, c)| *c) == Some('"') {
            chars.next();
            value.push('"');
        } else {
            return Some((value, &text[at + 2..]));
        }
    }
    None
}

/// Why a login fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// The proof or password is wrong, or the user unknown.
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    /// The client broke the exchange.
    #[error("{0}")]
    Protocol(String),
    /// The connection ended.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The client connection as an authentication exchange sees it.
pub(crate) trait Exchange {
    /// Sends `out` and returns the body of the client's next message, which must be a
    /// password-type message.
    fn round_trip(
        &mut self,
        out: BytesMut,
    ) -> impl Future<Output = Result<BytesMut, AuthError>> + Send;

    /// Sends `out` and expects no answer.
    fn send_only(&mut self, out: BytesMut) -> impl Future<Output = Result<(), AuthError>> + Send;
}

/// Runs the configured method for `name`; on success the caller sends AuthenticationOk.
pub(crate) async fn authenticate(
    method: AuthType,
    name: &str,
    user: Option<&User>,
    exchange: &mut impl Exchange,
) -> Result<(), AuthError> {
    match method {
        AuthType::Trust => Ok(()),
        AuthType::ScramSha256 => {
            // A user stored with MD5 cannot do SCRAM: refused like a wrong password.
            let verifier = user.and_then(|u| u.scram.clone());
            let known = verifier.is_some();
            let verifier = verifier.unwrap_or_else(decoy_verifier);
            let ok = scram(&verifier, exchange).await?;
            if ok && known {
                Ok(())
            } else {
                Err(AuthError::Failed(name.to_string()))
            }
        }
        AuthType::Md5 => match user.map(|u| &u.secret) {
            // PostgreSQL's md5 method also uses SCRAM for users stored with SCRAM.
            Some(Secret::Scram(verifier)) => match scram(verifier, exchange).await? {
                true => Ok(()),
                false => Err(AuthError::Failed(name.to_string())),
            },
            secret => {
                let stored = match secret {
                    Some(Secret::Plain(password)) => {
                        Some(postgres_protocol::password::md5(password.as_bytes(), name))
                    }
                    Some(Secret::Md5(hash)) => Some(hash.clone()),
                    _ => None,
                };
                match md5_challenge(stored.as_deref(), exchange).await? {
                    true => Ok(()),
                    false => Err(AuthError::Failed(name.to_string())),
                }
            }
        },
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
}

/// A verifier no password matches, for unknown users.
fn decoy_verifier() -> ScramVerifier {
    ScramVerifier {
        iterations: 4096,
        salt: random::<16>().to_vec(),
        stored_key: random(),
        server_key: random(),
    }
}

/// MD5: the client answers `md5` + hex(md5(stored_hex + salt)).
async fn md5_challenge(
    stored: Option<&str>,
    exchange: &mut impl Exchange,
) -> Result<bool, AuthError> {
    let salt: [u8; 4] = random();
    let mut out = BytesMut::new();
    codec::authentication(&mut out, 5, &salt);
    let answer = exchange.round_trip(out).await?;
    let (answer, _) =
        cstr(&answer).ok_or(AuthError::Protocol("invalid password message".into()))?;
    let Some(stored) = stored else {
        return Ok(false);
    };
    let mut hash = Md5::new();
    hash.update(&stored.as_bytes()[3..]);
    hash.update(salt);
    let expected = format!("md5{}", hex(&hash.finalize()));
    Ok(bool::from(expected.as_bytes().ct_eq(answer.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The server side of SCRAM-SHA-256; `Ok(false)` when the proof is wrong.
async fn scram(verifier: &ScramVerifier, exchange: &mut impl Exchange) -> Result<bool, AuthError> {
    let protocol = |why: &str| AuthError::Protocol(format!("SCRAM: {why}"));
    let mut out = BytesMut::new();
    codec::authentication(&mut out, 10, b"SCRAM-SHA-256\0\0");
    let initial = exchange.round_trip(out).await?;
    let (mechanism, rest) = cstr(&initial).ok_or_else(|| protocol("invalid initial response"))?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(protocol("only SCRAM-SHA-256 is offered"));
    }
    let client_first = rest
        .get(4..)
        .and_then(|data| std::str::from_utf8(data).ok())
        .ok_or_else(|| protocol("invalid client-first-message"))?;
    // gs2 header: "n,," (no channel binding) or "y,," (client could, server does not).
    let (gs2, bare) = match client_first.get(..3) {
        Some("n,," | "y,,") => client_first.split_at(3),
        _ if client_first.starts_with("p=") => {
            return Err(protocol("channel binding is not supported"));
        }
        _ => return Err(protocol("invalid gs2 header")),
    };
    let client_nonce = bare
        .split(',')
        .find_map(|attr| attr.strip_prefix("r="))
        .ok_or_else(|| protocol("no client nonce"))?;
    let nonce = format!("{client_nonce}{}", BASE64.encode(random::<18>()));
    let server_first = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(&verifier.salt),
        verifier.iterations
    );
    let mut out = BytesMut::new();
    codec::authentication(&mut out, 11, server_first.as_bytes());
    let final_message = exchange.round_trip(out).await?;
    let client_final = std::str::from_utf8(&final_message)
        .map_err(|_| protocol("invalid client-final-message"))?;
    let (without_proof, proof) = client_final
        .rsplit_once(",p=")
        .ok_or_else(|| protocol("no proof"))?;
    let mut attrs = without_proof.split(',');
    if attrs.next() != Some(format!("c={}", BASE64.encode(gs2)).as_str()) {
        return Err(protocol("channel binding data does not match"));
    }
    if attrs.next() != Some(format!("r={nonce}").as_str()) {
        return Err(protocol("nonce does not match"));
    }
    let proof: [u8; 32] = BASE64
        .decode(proof)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| protocol("invalid proof"))?;
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    let stored_key = Sha256::digest(&client_key);
    if !bool::from(stored_key[..].ct_eq(&verifier.stored_key[..])) {
        return Ok(false);
    }
    let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
    let mut out = BytesMut::new();
    let final_data = format!("v={}", BASE64.encode(server_signature));
    codec::authentication(&mut out, 12, final_data.as_bytes());
    exchange.send_only(out).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pgbouncer_userlist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userlist.txt");
        let scram = postgres_protocol::password::scram_sha_256(b"s3cret");
        std::fs::write(
            &path,
            format!(
                "; comment\n\"app\" \"pa\"\"ss\"\n\"old\" \"md5{}\"\n\"new\" \"{scram}\"\n",
                "0123456789abcdef0123456789abcdef"
            ),
        )
        .unwrap();
        let users = read_userlist(&path).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users[0].0, "app");
        assert!(matches!(&users[0].1, Secret::Plain(p) if p == "pa\"ss"));
        assert!(matches!(&users[1].1, Secret::Md5(_)));
        assert!(matches!(&users[2].1, Secret::Scram(v) if v.iterations == 4096));
    }

    #[test]
    fn names_the_line_of_a_broken_userlist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userlist.txt");
        std::fs::write(&path, "\"app\" \"ok\"\napp nopass\n").unwrap();
        let err = read_userlist(&path).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn refuses_a_malformed_verifier() {
        assert!(parse_secret("SCRAM-SHA-256$4096:abc").is_err());
    }
}
