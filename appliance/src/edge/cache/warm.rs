//! Cache warming: the configured pages are requested through the edge itself, at start and on
//! a schedule, so they are cached before visitors ask (and compressed in every coding, so no
//! visitor waits for a first compression either).
//!
//! The requests are real HTTP/1.1 requests (through the upstream client) to the edge's own plain
//! listener: they take the same route, policies and cache phase as a visitor's, and show in the
//! access log.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::RequestHead;
use actix_web::http::header::{ACCEPT_ENCODING, HOST, HeaderValue, USER_AGENT};
use actix_web::http::{Method, Uri};
use futures_util::StreamExt;
use tracing::{debug, warn};

use crate::config::UpstreamConfig;
use crate::edge::EdgeState;
use crate::edge::error::EdgeError;
use crate::upstream::client::{Answer, Outgoing, Pool};

/// One page to warm: the host to name (none: the listener's address) and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmTarget {
    host: Option<String>,
    path_and_query: String,
}

/// Longest one warming request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a warming request asks for: identity first (the fill), then each compressed coding
/// (each builds its variant from the entry once).
const CODINGS: [&str; 4] = ["identity", "gzip", "br", "zstd"];

impl WarmTarget {
    /// `/path?query` or `http(s)://host[:port]/path?query`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|err| format!("{text:?} is not a path or URL: {err}"))?;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        if !path_and_query.starts_with('/') {
            return Err(format!("{text:?} must be a path (/...) or an http(s) URL"));
        }
        match (uri.scheme_str(), uri.authority()) {
            (None, None) => Ok(Self {
                host: None,
                path_and_query,
            }),
            (Some("http" | "https"), Some(authority)) => Ok(Self {
                host: Some(authority.as_str().to_string()),
                path_and_query,
            }),
            _ => Err(format!("{text:?} must be a path (/...) or an http(s) URL")),
        }
    }
}

/// Warms the current warming list through the edge at `edge`, now and every interval, for as
/// long as gatehouse runs (the list and interval are read anew each round, so reloads apply).
pub(crate) async fn run(state: Arc<EdgeState>, edge: SocketAddr) {
    let pool = Rc::new(Pool::new(&UpstreamConfig::default()));
    loop {
        let (targets, interval) = {
            let runtime = state.runtime();
            (Arc::clone(&runtime.cache.warm), runtime.cache.warm_interval)
        };
        for target in targets.iter() {
            for coding in CODINGS {
                match tokio::time::timeout(REQUEST_TIMEOUT, fetch(&pool, edge, target, coding))
                    .await
                {
                    Ok(Ok(status)) => {
                        debug!(path = %target.path_and_query, coding, status, "cache warmed")
                    }
                    Ok(Err(err)) => {
                        warn!(path = %target.path_and_query, error = %err, "cache warming failed");
                        break;
                    }
                    Err(_) => {
                        warn!(path = %target.path_and_query, "cache warming timed out");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
    }
}

/// One GET of `target` in `coding` through the edge at `edge` (with the upstream client's
/// pool), read to its end: a fill is stored once its body has been sent whole. Its status.
async fn fetch(
    pool: &Rc<Pool>,
    edge: SocketAddr,
    target: &WarmTarget,
    coding: &'static str,
) -> Result<u16, EdgeError> {
    let mut head = RequestHead::default();
    head.method = Method::GET;
    head.uri = Uri::try_from(target.path_and_query.as_str()).map_err(|_| EdgeError::BadPath)?;
    let host = target.host.clone().unwrap_or_else(|| edge.to_string());
    let headers = &mut head.headers;
    headers.insert(
        HOST,
        HeaderValue::from_str(&host).map_err(|_| EdgeError::BadPath)?,
    );
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(coding));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static("gatehouse-cache-warmer"),
    );
    match pool
        .send(0, &edge.to_string(), head, Outgoing::empty())
        .await?
    {
        Answer::Response(head, mut body) => {
            while let Some(chunk) = body.next().await {
                chunk.map_err(|_| EdgeError::BadResponse)?;
            }
            Ok(head.status.as_u16())
        }
        Answer::Upgraded(..) => Err(EdgeError::BadResponse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_targets_other_things_are_not() {
        let path = WarmTarget::parse("/products?page=1").unwrap();
        assert_eq!(
            (path.host, path.path_and_query.as_str()),
            (None, "/products?page=1")
        );
        let url = WarmTarget::parse("http://shop.test:8080/").unwrap();
        assert_eq!(url.host.as_deref(), Some("shop.test:8080"));
        assert_eq!(url.path_and_query, "/");
        for bad in ["products", "ftp://shop.test/", "*", "http://"] {
            assert!(WarmTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
