//! Entries as the persistent tier stores them. A value is a magic number, a checksum of the
//! rest, the entry's description and its body, so a torn, truncated or otherwise corrupt value
//! is recognised and dropped, never served:
//!
//! ```text
//! "GHC1" | xxh3-64 of the rest (LE) | description length (u32 LE) | description (postcard) | body
//! ```

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::entry::{Entry, Freshness};

const MAGIC: &[u8; 4] = b"GHC1";
/// Magic, checksum and description length.
const PREFIX: usize = 4 + 8 + 4;

/// Everything of an entry but its body and its compressed variants (rebuilt on demand).
#[derive(Serialize, Deserialize)]
struct Description {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    stored_at_ms: u64,
    fresh: Freshness,
    host: String,
    vary: Vec<(String, Option<Vec<u8>>)>,
    compressible: bool,
}

/// Why a stored value cannot be an entry.
#[derive(Debug, thiserror::Error)]
#[error("corrupt cache entry: {0}")]
pub(crate) struct Corrupt(&'static str);

/// `entry` as stored.
pub(crate) fn encode(entry: &Entry) -> Vec<u8> {
    let description = Description {
        status: entry.status.as_u16(),
        headers: entry
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        stored_at_ms: entry.stored_at_ms,
        fresh: entry.fresh.clone(),
        host: entry.host.clone(),
        vary: entry
            .vary
            .iter()
            .map(|(name, value)| {
                let value = value.as_ref().map(|v| v.as_bytes().to_vec());
                (name.as_str().to_owned(), value)
            })
            .collect(),
        compressible: entry.compressible,
    };
    let description = postcard::to_stdvec(&description).expect("a Vec sink never fails");
    let mut out = Vec::with_capacity(PREFIX + description.len() + entry.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(description.len() as u32).to_le_bytes());
    out.extend_from_slice(&description);
    out.extend_from_slice(&entry.body);
    let checksum = xxh3_64(&out[12..]);
    out[4..12].copy_from_slice(&checksum.to_le_bytes());
    out
}

/// The entry stored as `value`; its body shares `value`'s memory.
pub(crate) fn decode(value: &Bytes) -> Result<Entry, Corrupt> {
    if value.len() < PREFIX || &value[..4] != MAGIC {
        return Err(Corrupt("not a cache entry"));
    }
    let checksum = u64::from_le_bytes(value[4..12].try_into().expect("8 bytes"));
    if xxh3_64(&value[12..]) != checksum {
        return Err(Corrupt("checksum mismatch"));
    }
    let length = u32::from_le_bytes(value[12..16].try_into().expect("4 bytes")) as usize;
    let body_at = PREFIX
        .checked_add(length)
        .filter(|&end| end <= value.len())
        .ok_or(Corrupt("description overruns the value"))?;
    let description: Description = postcard::from_bytes(&value[PREFIX..body_at])
        .map_err(|_| Corrupt("unreadable description"))?;
    let bad_header = || Corrupt("invalid header");
    let name = |name: &str| HeaderName::try_from(name).map_err(|_| bad_header());
    let value_of = |bytes: &[u8]| HeaderValue::from_bytes(bytes).map_err(|_| bad_header());
    let mut headers = HeaderMap::with_capacity(description.headers.len());
    for (n, v) in &description.headers {
        headers.append(name(n)?, value_of(v)?);
    }
    let vary = description
        .vary
        .iter()
        .map(|(n, v)| Ok((name(n)?, v.as_deref().map(value_of).transpose()?)))
        .collect::<Result<_, Corrupt>>()?;
    Ok(Entry {
        status: StatusCode::from_u16(description.status).map_err(|_| Corrupt("invalid status"))?,
        headers,
        body: value.slice(body_at..),
        stored_at_ms: description.stored_at_ms,
        fresh: description.fresh,
        host: description.host,
        vary,
        compressible: description.compressible,
        variants: Default::default(),
        hits: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{ACCEPT_LANGUAGE, ETAG};

    use super::*;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        headers.append(
            HeaderName::from_static("x-raw"),
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        Entry {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"the body"),
            stored_at_ms: 1_000,
            fresh: Freshness {
                ttl_ms: 2_000,
                stale_while_revalidate_ms: 3_000,
                stale_if_error_ms: 4_000,
                tags: vec!["products".into()],
            },
            host: "shop.test".into(),
            vary: vec![
                (ACCEPT_LANGUAGE, Some(HeaderValue::from_static("fr"))),
                (HeaderName::from_static("x-none"), None),
            ],
            compressible: true,
            variants: Default::default(),
            hits: Default::default(),
        }
    }

    #[test]
    fn an_entry_survives_the_round_trip() {
        let original = entry();
        let back = decode(&encode(&original).into()).unwrap();
        assert_eq!(back.status, original.status);
        let pairs = |headers: &HeaderMap| {
            let mut pairs: Vec<_> = headers
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            pairs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            pairs
        };
        assert_eq!(pairs(&back.headers), pairs(&original.headers));
        assert_eq!(back.body, original.body);
        assert_eq!(back.vary, original.vary);
        assert_eq!(back.stored_at_ms, 1_000);
        assert_eq!(back.fresh, original.fresh);
        assert_eq!((back.host.as_str(), back.compressible), ("shop.test", true));
    }

    #[test]
    fn any_damage_is_refused() {
        let good = encode(&entry());
        for at in [0, 5, 14, 20, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad.into()).is_err(), "a flipped byte at {at}");
        }
        for length in [0, 3, 15, good.len() - 1] {
            assert!(
                decode(&Bytes::copy_from_slice(&good[..length])).is_err(),
                "truncated to {length}"
            );
        }
    }
}
