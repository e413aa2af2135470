//! Cache keys from the parts a cache-rules plugin names. Keys are readable (`GET
//! shop.test/products?a=1 [lang=fr]`) because operators purge by them and by their prefixes.

use std::fmt::Write;

use actix_web::HttpRequest;
use actix_web::http::header::COOKIE;

use crate::policy::cache_types::{KeyPart, QueryPart};

/// The key of `req` (to `host`) made of `parts`. A HEAD request gets the key of its GET, so
/// HEAD is answered from GET entries.
pub(crate) fn build(parts: &[KeyPart], req: &HttpRequest, host: &str) -> String {
    let mut key = String::with_capacity(64);
    for part in parts {
        match part {
            KeyPart::Method => {
                let method = if req.method() == actix_web::http::Method::HEAD {
                    "GET"
                } else {
                    req.method().as_str()
                };
                let _ = write!(key, "{method} ");
            }
            KeyPart::Host => key.push_str(host),
            KeyPart::Path => key.push_str(req.path()),
            KeyPart::Query(which) => {
                let query = query(req.query_string(), which);
                if !query.is_empty() {
                    let _ = write!(key, "?{query}");
                }
            }
            KeyPart::Header(name) => {
                let values: Vec<&str> = req
                    .headers()
                    .get_all(name.as_str())
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let _ = write!(key, " [{}={}]", name.to_ascii_lowercase(), values.join(","));
            }
            KeyPart::Cookie(name) => {
                let value = cookie(req, name).unwrap_or_default();
                let _ = write!(key, " [cookie {name}={value}]");
            }
            KeyPart::Literal(text) => {
                let _ = write!(key, " [{text}]");
            }
        }
    }
    key
}

/// The query as `which` keeps it. Sorting is stable, so a repeated parameter keeps the order of
/// its values (`tag=b&tag=a` differs from `tag=a&tag=b`, as it may for the application).
fn query(raw: &str, which: &QueryPart) -> String {
    let pairs = || raw.split('&').filter(|pair| !pair.is_empty());
    let name = |pair: &str| pair.split_once('=').map_or(pair, |(n, _)| n).to_string();
    let sorted = |mut kept: Vec<&str>| {
        kept.sort_by_key(|pair| name(pair));
        kept.join("&")
    };
    match which {
        QueryPart::AsReceived => raw.to_string(),
        QueryPart::Normalised => sorted(pairs().collect()),
        QueryPart::Only(names) => sorted(pairs().filter(|p| names.contains(&name(p))).collect()),
        QueryPart::Ignored => String::new(),
    }
}

/// The value of cookie `name` (HTTP/2 may split cookies over several headers).
pub(crate) fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn key(parts: &[KeyPart], request: TestRequest) -> String {
        build(parts, &request.to_http_request(), "shop.test")
    }

    #[test]
    fn keys_read_like_urls_and_head_shares_the_get_key() {
        let parts = [
            KeyPart::Method,
            KeyPart::Host,
            KeyPart::Path,
            KeyPart::Query(QueryPart::AsReceived),
        ];
        let get = key(&parts, TestRequest::get().uri("/p?b=2&a=1"));
        assert_eq!(get, "GET shop.test/p?b=2&a=1");
        assert_eq!(
            key(
                &parts,
                TestRequest::default()
                    .method(actix_web::http::Method::HEAD)
                    .uri("/p?b=2&a=1")
            ),
            get
        );
        assert_eq!(key(&parts, TestRequest::get().uri("/p")), "GET shop.test/p");
    }

    #[test]
    fn queries_are_normalised_filtered_or_ignored() {
        let with = |which: QueryPart| {
            key(
                &[KeyPart::Path, KeyPart::Query(which)],
                TestRequest::get().uri("/p?b=2&tag=y&a=1&tag=x&utm=z"),
            )
        };
        assert_eq!(with(QueryPart::Normalised), "/p?a=1&b=2&tag=y&tag=x&utm=z");
        assert_eq!(
            with(QueryPart::Only(vec!["tag".into(), "a".into()])),
            "/p?a=1&tag=y&tag=x"
        );
        assert_eq!(with(QueryPart::Ignored), "/p");
    }

    #[test]
    fn headers_cookies_and_literals_partition_keys() {
        let parts = [
            KeyPart::Path,
            KeyPart::Header("Accept-Language".into()),
            KeyPart::Cookie("lang".into()),
            KeyPart::Literal("v2".into()),
        ];
        let request = TestRequest::get()
            .uri("/p")
            .insert_header(("accept-language", "fr"))
            .insert_header(("cookie", "theme=dark; lang=de"));
        assert_eq!(
            key(&parts, request),
            "/p [accept-language=fr] [cookie lang=de] [v2]"
        );
        assert_eq!(
            key(&parts, TestRequest::get().uri("/p")),
            "/p [accept-language=] [cookie lang=] [v2]"
        );
    }
}
