//! Content codings: which one a client gets (`Accept-Encoding` with q-values), whether a response
//! is worth compressing (type allowlist, minimum length, not already encoded, no `no-transform`),
//! and whole-body compression for the cache's variants.

mod gzip;
mod negotiate;
mod stream;

use std::io::Write;

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    HeaderMap, HeaderValue, VARY,
};
use actix_web::http::{Method, StatusCode};
use bytes::Bytes;

pub(crate) use self::negotiate::negotiate;
use self::stream::{CompressBody, Encoder};
use crate::config::CompressionConfig;
use crate::monitor::metrics::{CompressionCounters, Metrics};

/// A content coding gatehouse produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    Brotli,
    Zstd,
}

impl Coding {
    /// The compressed codings, in the order preferred when a client rates several equally:
    /// brotli is smallest, zstd decodes fastest, gzip everyone has.
    pub(crate) const COMPRESSED: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// Its `Content-Encoding` token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Its slot among the compressed variants (`None` for identity).
    pub(crate) fn slot(self) -> Option<usize> {
        Coding::COMPRESSED.iter().position(|c| *c == self)
    }
}

/// The compression rules and levels in force.
pub struct CompressionSettings {
    /// Bytes in and out, per compressed coding (in [`Coding::slot`] order).
    counters: [CompressionCounters; 3],
    enabled: bool,
    gzip_level: u32,
    brotli_level: u32,
    zstd_level: i32,
    min_length: u64,
    types: Vec<String>,
}

impl CompressionSettings {
    /// The settings in `config`, counting into `metrics`.
    pub fn new(config: &CompressionConfig, metrics: &Metrics) -> Self {
        Self {
            counters: Coding::COMPRESSED.map(|coding| metrics.compression(coding.token())),
            enabled: config.enabled,
            gzip_level: config.gzip_level,
            brotli_level: config.brotli_level,
            zstd_level: config.zstd_level,
            min_length: config.min_length.as_u64(),
            types: config
                .types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Bodies shorter than this go uncompressed.
    pub(crate) fn min_length(&self) -> u64 {
        self.min_length
    }

    /// Whether a response with these headers and this body length is worth compressing: an
    /// allowed type (or any `+json` / `+xml` type), at least `min_length` bytes, not already
    /// encoded, and not marked `no-transform`.
    pub(crate) fn compressible(&self, headers: &HeaderMap, length: u64) -> bool {
        self.enabled && self.worth_compressing(headers, length)
    }

    /// [`Self::compressible`], whether or not compression is turned on.
    fn worth_compressing(&self, headers: &HeaderMap, length: u64) -> bool {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &actix_web::http::header::HeaderValue| v.to_str().ok())
        };
        // Compared without case rather than lowercased: no copy per response.
        let media_type = text(CONTENT_TYPE)
            .and_then(|t| t.split(';').next())
            .map_or("", str::trim);
        let suffix = |s: &str| {
            let at = media_type.len().saturating_sub(s.len());
            media_type
                .get(at..)
                .is_some_and(|end| end.eq_ignore_ascii_case(s))
        };
        let allowed = self
            .types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(media_type))
            || suffix("+json")
            || suffix("+xml");
        let encoded = text(CONTENT_ENCODING).is_some_and(|e| !e.eq_ignore_ascii_case("identity"));
        let no_transform = headers
            .get_all(CACHE_CONTROL)
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("no-transform"));
        allowed && length >= self.min_length && !encoded && !no_transform
    }

    /// The response compressed as it streams, when it is worth it and the client accepts a
    /// coding: everything that is not a cache hit goes through here.
    pub(crate) fn apply<L>(
        &self,
        req: &HttpRequest,
        mut response: HttpResponse<EitherBody<L, BoxBody>>,
    ) -> HttpResponse<EitherBody<L, BoxBody>>
    where
        L: MessageBody + Unpin + 'static,
    {
        let status = response.status();
        let has_body = !(status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::PARTIAL_CONTENT
            || req.method() == Method::HEAD);
        let length = super::proxy::headers::content_length(response.headers()).unwrap_or(u64::MAX);
        if !has_body || !self.worth_compressing(response.headers(), length) {
            return response;
        }
        if !self.enabled {
            // Counted as sent uncompressed, so the recommendations can point at it.
            response.extensions_mut().insert(Coding::Identity);
            return response;
        }
        let coding = negotiate(req.headers().get(ACCEPT_ENCODING), |_| true);
        response.extensions_mut().insert(coding);
        mark_varying(response.headers_mut());
        if coding == Coding::Identity {
            return response;
        }
        mark_encoded(response.headers_mut(), coding);
        response.headers_mut().remove(CONTENT_LENGTH);
        let encoder = Encoder::new(coding, self, (length != u64::MAX).then_some(length));
        let counters = self.counters(coding).clone();
        response.map_body(|_, body| {
            EitherBody::right(BoxBody::new(CompressBody::new(body, encoder, counters)))
        })
    }

    fn counters(&self, coding: Coding) -> &CompressionCounters {
        &self.counters[coding.slot().unwrap_or(0)]
    }

    /// `body` compressed whole with `coding` at its configured level.
    pub(crate) fn compress(&self, body: &[u8], coding: Coding) -> Bytes {
        let compressed = self.compress_uncounted(body, coding);
        if coding != Coding::Identity {
            let counters = self.counters(coding);
            counters.input.inc_by(body.len() as u64);
            counters.output.inc_by(compressed.len() as u64);
        }
        compressed
    }

    fn compress_uncounted(&self, body: &[u8], coding: Coding) -> Bytes {
        let mut out = Vec::with_capacity(body.len() / 3);
        match coding {
            Coding::Identity => return Bytes::copy_from_slice(body),
            Coding::Gzip => {
                let mut gzip = gzip::GzipStream::new(self.gzip_level);
                gzip.push(body, &mut out);
                gzip.finish(&mut out);
            }
            Coding::Brotli => {
                let mut encoder =
                    brotli::CompressorWriter::new(&mut out, 64 * 1024, self.brotli_level, 22);
                encoder
                    .write_all(body)
                    .expect("writing to a Vec cannot fail");
                drop(encoder);
            }
            Coding::Zstd => {
                out =
                    zstd::bulk::compress(body, self.zstd_level).expect("zstd compresses any input");
            }
        }
        out.into()
    }
}

/// Adds `Vary: Accept-Encoding` (once) to a response whose coding depends on it.
pub(crate) fn mark_varying(headers: &mut HeaderMap) {
    let listed = headers
        .get_all(VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("accept-encoding") || name.trim() == "*");
    if !listed {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Sets `Content-Encoding` and weakens a strong `ETag`: the encoded bytes are another
/// representation, so they must not validate byte ranges of the original (as nginx does).
pub(crate) fn mark_encoded(headers: &mut HeaderMap, coding: Coding) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    if let Some(etag) = headers.get(ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let weak = [b"W/".as_slice(), etag.as_bytes()].concat();
        if let Ok(weak) = HeaderValue::from_maybe_shared(Bytes::from(weak)) {
            headers.insert(ETAG, weak);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use actix_web::http::header::HeaderValue;

    use super::*;

    fn settings() -> CompressionSettings {
        CompressionSettings::new(&CompressionConfig::default(), &Metrics::default())
    }

    fn headers(pairs: &[(actix_web::http::header::HeaderName, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn every_coding_decodes_back_to_the_same_bytes() {
        let page: Vec<u8> = (0..40_000)
            .map(|i| b"<p>hello gatehouse</p>\n"[i % 23])
            .collect();
        let settings = settings();
        let gzip = settings.compress(&page, Coding::Gzip);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, page);
        let br = settings.compress(&page, Coding::Brotli);
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, page);
        let zstd = settings.compress(&page, Coding::Zstd);
        assert_eq!(zstd::bulk::decompress(&zstd, page.len()).unwrap(), page);
        assert!(
            gzip.len() < page.len() / 10
                && br.len() < page.len() / 10
                && zstd.len() < page.len() / 10
        );
    }

    #[test]
    fn only_sizable_uncompressed_text_is_compressed() {
        let s = settings();
        let html = headers(&[(CONTENT_TYPE, "text/html; charset=utf-8")]);
        assert!(s.compressible(&html, 1000));
        assert!(!s.compressible(&html, 100), "below the minimum length");
        assert!(s.compressible(
            &headers(&[(CONTENT_TYPE, "application/vnd.api+json")]),
            1000
        ));
        assert!(!s.compressible(&headers(&[(CONTENT_TYPE, "image/png")]), 1000));
        // Media types are case-insensitive (RFC 9110 §8.3.1).
        for mixed in [
            "Text/HTML; charset=UTF-8",
            "application/Problem+JSON",
            " text/css ",
        ] {
            assert!(
                s.compressible(&headers(&[(CONTENT_TYPE, mixed)]), 1000),
                "{mixed}"
            );
        }
        assert!(
            !s.compressible(&HeaderMap::new(), 1000),
            "no type, no guess"
        );
        let gzipped = headers(&[(CONTENT_TYPE, "text/html"), (CONTENT_ENCODING, "gzip")]);
        assert!(!s.compressible(&gzipped, 1000));
        let untouchable = headers(&[
            (CONTENT_TYPE, "text/html"),
            (CACHE_CONTROL, "public, no-transform"),
        ]);
        assert!(!s.compressible(&untouchable, 1000));
    }
}
