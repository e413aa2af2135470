//! Framing of the PostgreSQL v3 wire protocol as a pooler needs it: the startup packet, the
//! boundaries and tags of frontend messages (checked, so a broken client is refused before
//! anything reaches a server), and the few backend messages the pooler writes itself.
//!
//! Messages are never decoded further than the pooler must: data rows and everything else the
//! server sends travel as the bytes they arrived as.

use bytes::{BufMut, BytesMut};

/// Protocol version 3.0, the one spoken here.
const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// A startup packet longer than this is hostile (PostgreSQL allows 10000 bytes).
const MAX_STARTUP: usize = 10_000;

/// Why a client's bytes cannot be a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The length field is below its own size.
    #[error("invalid message length {0}")]
    BadLength(i32),
    /// The length exceeds `pool.max_message_size`.
    #[error("message of {0} bytes exceeds pool.max_message_size")]
    TooLong(usize),
    /// A tag no frontend message has.
    #[error("unknown message type {0:?}")]
    UnknownTag(char),
    /// The startup packet is malformed.
    #[error("invalid startup packet: {0}")]
    BadStartup(&'static str),
    /// A protocol version this side does not speak.
    #[error("unsupported protocol version {major}.{minor}")]
    Version {
        /// Major version.
        major: i32,
        /// Minor version.
        minor: i32,
    },
    /// A message body that does not parse.
    #[error("invalid {0} message")]
    BadBody(&'static str),
}

/// What a new connection opens with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Startup {
    /// A v3 session with its parameters (user, database, and the rest in order).
    Session {
        /// Parameters as sent.
        params: Vec<(String, String)>,
        /// The minor version asked for; above 0, the client is told we speak 3.0.
        minor: i32,
    },
    /// The client asks for TLS before its startup message.
    Ssl,
    /// GSSAPI encryption, never offered here.
    GssEnc,
    /// Cancel the query of the session with this key.
    Cancel(BackendKey),
}

/// The process id and secret a client is given, and quotes back to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BackendKey {
    /// Process id (on the pooler's side: the client's id).
    pub(crate) pid: i32,
    /// The secret.
    pub(crate) secret: i32,
}

/// Length of a complete startup packet at the front of `buf`, once its length field is there.
pub(crate) fn startup_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(len.try_into().expect("four bytes"));
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        return Err(ProtocolError::BadStartup("length out of range"));
    }
    Ok((buf.len() >= len as usize).then_some(len as usize))
}

/// Parses a complete startup packet (as sized by [`startup_len`]).
pub(crate) fn parse_startup(packet: &[u8]) -> Result<Startup, ProtocolError> {
    let code = i32::from_be_bytes(packet[4..8].try_into().expect("four bytes"));
    match code {
        SSL_REQUEST => Ok(Startup::Ssl),
        GSSENC_REQUEST => Ok(Startup::GssEnc),
        CANCEL_REQUEST => {
            let body = packet
                .get(8..16)
                .ok_or(ProtocolError::BadStartup("short cancel request"))?;
            Ok(Startup::Cancel(BackendKey {
                pid: i32::from_be_bytes(body[..4].try_into().expect("four bytes")),
                secret: i32::from_be_bytes(body[4..].try_into().expect("four bytes")),
            }))
        }
        _ if code >> 16 == 3 => {
            let params = parse_params(&packet[8..])?;
            if !params.iter().any(|(k, _)| k == "user") {
                return Err(ProtocolError::BadStartup("no user given"));
            }
            Ok(Startup::Session {
                params,
                minor: code & 0xffff,
            })
        }
        _ => Err(ProtocolError::Version {
            major: code >> 16,
            minor: code & 0xffff,
        }),
    }
}

/// `name\0value\0 ... \0`
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body).ok_or(ProtocolError::BadStartup("unterminated name"))?;
        if name.is_empty() {
            return Ok(params);
        }
        let (value, rest) = cstr(rest).ok_or(ProtocolError::BadStartup("unterminated value"))?;
        params.push((name.to_string(), value.to_string()));
        body = rest;
    }
}

/// A NUL-terminated UTF-8 string at the front of `buf`, and what follows it.
pub(crate) fn cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    Some((text, &buf[end + 1..]))
}

/// The SQL of a whole Query or Parse message; `None` when its body does not parse (or for any
/// other message).
pub(crate) fn sql_text(message: &[u8]) -> Option<&str> {
    let body = message.get(5..)?;
    let text = match message.first()? {
        b'Q' => cstr(body),
        b'P' => cstr(body).and_then(|(_, rest)| cstr(rest)),
        _ => None,
    };
    text.map(|(text, _)| text)
}

/// Tags of the messages a client may send after startup.
const FRONTEND_TAGS: &[u8] = b"BCdcfDEHFPpQSX";

/// The tag and total length (tag included) of the frontend message at the front of `buf`, once
/// it is complete; `Ok(None)` while more bytes are needed.
pub(crate) fn frontend_frame(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(u8, usize)>, ProtocolError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    if !FRONTEND_TAGS.contains(&tag) {
        return Err(ProtocolError::UnknownTag(tag as char));
    }
    let len = i32::from_be_bytes(header[1..5].try_into().expect("four bytes"));
    if len < 4 {
        return Err(ProtocolError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > max_len {
        return Err(ProtocolError::TooLong(total));
    }
    Ok((buf.len() >= total).then_some((tag, total)))
}

/// The tag and total length of the backend message at the front of `buf`, once its header is
/// there (the body may still be arriving).
pub(crate) fn backend_header(buf: &[u8]) -> Option<(u8, usize)> {
    let header = buf.get(..5)?;
    let len = i32::from_be_bytes(header[1..5].try_into().expect("four bytes"));
    Some((header[0], (len.max(4) as usize) + 1))
}

/// Writes a message: tag, length, then whatever `body` puts.
pub(crate) fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends `text` and its NUL.
pub(crate) fn put_cstr(out: &mut BytesMut, text: &str) {
    out.put_slice(text.as_bytes());
    out.put_u8(0);
}

/// An ErrorResponse (severity `FATAL` ends the session, `ERROR` does not).
pub(crate) fn error_response(out: &mut BytesMut, severity: &str, code: &str, text: &str) {
    message(out, b'E', |out| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', text),
        ] {
            out.put_u8(field);
            put_cstr(out, value);
        }
        out.put_u8(0);
    });
}

/// `Authentication*`: 0 ok, 5 md5 (data: the salt), 10 SASL, 11 SASL continue, 12 SASL final.
pub(crate) fn authentication(out: &mut BytesMut, kind: i32, data: &[u8]) {
    message(out, b'R', |out| {
        out.put_i32(kind);
        out.put_slice(data);
    });
}

pub(crate) fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |out| {
        put_cstr(out, name);
        put_cstr(out, value);
    });
}

pub(crate) fn backend_key_data(out: &mut BytesMut, key: BackendKey) {
    message(out, b'K', |out| {
        out.put_i32(key.pid);
        out.put_i32(key.secret);
    });
}

pub(crate) fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |out| out.put_u8(status));
}

/// Tells a client asking for 3.x (x > 0) or `_pq_.` options that we speak 3.0 without them.
pub(crate) fn negotiate_protocol_version(out: &mut BytesMut, unsupported: &[&str]) {
    message(out, b'v', |out| {
        out.put_i32(PROTOCOL_3_0);
        out.put_i32(unsupported.len() as i32);
        for option in unsupported {
            put_cstr(out, option);
        }
    });
}

/// A simple-protocol Query message.
pub(crate) fn query(out: &mut BytesMut, sql: &str) {
    message(out, b'Q', |out| put_cstr(out, sql));
}

/// A CancelRequest packet for a server.
pub(crate) fn cancel_request(key: BackendKey) -> [u8; 16] {
    let mut packet = [0u8; 16];
    packet[..4].copy_from_slice(&16i32.to_be_bytes());
    packet[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    packet[8..12].copy_from_slice(&key.pid.to_be_bytes());
    packet[12..].copy_from_slice(&key.secret.to_be_bytes());
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)], code: i32) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend(body);
        packet
    }

    #[test]
    fn parses_a_startup_message() {
        let packet = startup(&[("user", "app"), ("database", "shop")], PROTOCOL_3_0);
        assert_eq!(startup_len(&packet[..3]), Ok(None));
        assert_eq!(startup_len(&packet), Ok(Some(packet.len())));
        assert_eq!(
            parse_startup(&packet),
            Ok(Startup::Session {
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "shop".into())
                ],
                minor: 0
            })
        );
    }

    #[test]
    fn refuses_startups_without_user_or_with_a_wrong_version() {
        let packet = startup(&[("database", "shop")], PROTOCOL_3_0);
        assert!(parse_startup(&packet).is_err());
        let packet = startup(&[("user", "app")], 2 << 16);
        assert_eq!(
            parse_startup(&packet),
            Err(ProtocolError::Version { major: 2, minor: 0 })
        );
        assert!(startup_len(&[0, 0, 0, 4]).is_err());
        assert!(startup_len(&[0, 1, 0, 0]).is_err());
    }

    #[test]
    fn reads_ssl_and_cancel_requests() {
        let mut ssl = 8i32.to_be_bytes().to_vec();
        ssl.extend(SSL_REQUEST.to_be_bytes());
        assert_eq!(parse_startup(&ssl), Ok(Startup::Ssl));
        let key = BackendKey { pid: 7, secret: -3 };
        assert_eq!(
            parse_startup(&cancel_request(key)),
            Ok(Startup::Cancel(key))
        );
    }

    #[test]
    fn frames_frontend_messages_and_refuses_broken_ones() {
        let mut out = BytesMut::new();
        query(&mut out, "select 1");
        assert_eq!(frontend_frame(&out, 1024), Ok(Some((b'Q', out.len()))));
        assert_eq!(frontend_frame(&out[..out.len() - 1], 1024), Ok(None));
        assert_eq!(
            frontend_frame(&out, 8),
            Err(ProtocolError::TooLong(out.len()))
        );
        assert_eq!(
            frontend_frame(b"Q\0\0\0\x02", 1024),
            Err(ProtocolError::BadLength(2))
        );
        assert_eq!(
            frontend_frame(b"z\0\0\0\x04", 1024),
            Err(ProtocolError::UnknownTag('z'))
        );
    }

    #[test]
    fn writes_errors_with_their_fields() {
        let mut out = BytesMut::new();
        error_response(&mut out, "FATAL", "28P01", "password authentication failed");
        assert_eq!(out[0], b'E');
        assert_eq!(backend_header(&out), Some((b'E', out.len())));
        let text = String::from_utf8_lossy(&out[5..]);
        assert!(text.contains("28P01") && text.contains("password authentication failed"));
    }
}
