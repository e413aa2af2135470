//! Static files from a directory, for routes with `root` instead of `upstream` (nginx's `root`
//! with `gzip_static` and `brotli_static`).
//!
//! - GET and HEAD only; conditional requests, ranges, `ETag` and `Last-Modified` come from
//!   actix-files.
//! - The path is percent-decoded segment by segment; `..`, encoded slashes, NUL and backslashes
//!   are refused, so nothing outside the root is ever named. A directory answers with its
//!   `index.html`.
//! - A precompressed sibling (`app.css.br`, `app.css.zst`, `app.css.gz`) is sent as it is, with
//!   the original's media type, to a client that accepts its coding; the edge's compression then
//!   leaves it alone. Files without siblings are compressed on the way out like any response.
//!
//! Opening and reading files runs on the blocking pool, never on a worker's event loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_files::NamedFile;
use actix_web::body::BoxBody;
use actix_web::http::header::{ACCEPT_ENCODING, ALLOW, ContentEncoding, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};

use super::compress::{self, Coding};

/// A directory served as a web root.
pub struct StaticRoot {
    dir: PathBuf,
}

/// Precompressed siblings, by the suffix added to the file's name.
const SIBLINGS: [(Coding, &str, ContentEncoding); 3] = [
    (Coding::Brotli, "br", ContentEncoding::Brotli),
    (Coding::Zstd, "zst", ContentEncoding::Zstd),
    (Coding::Gzip, "gz", ContentEncoding::Gzip),
];

impl StaticRoot {
    /// Serves the files under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The answer to `req` for `path` (the request path as the route maps it).
    pub(crate) async fn serve(self: &Arc<Self>, req: &HttpRequest, path: &str) -> HttpResponse {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut refused = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            refused
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return refused;
        }
        let Some(relative) = relative_path(path) else {
            return plain(StatusCode::BAD_REQUEST, "invalid path\n");
        };
        let (root, accept) = (
            Arc::clone(self),
            req.headers().get(ACCEPT_ENCODING).cloned(),
        );
        let opened = web::block(move || root.open(&relative, accept.as_ref())).await;
        match opened {
            Ok(Some((file, has_siblings))) => {
                let mut response = file.into_response(req);
                if has_siblings {
                    compress::mark_varying(response.headers_mut());
                }
                response
            }
            Ok(None) => plain(StatusCode::NOT_FOUND, "not found\n"),
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "file read failed\n"),
        }
    }

    /// The file for `relative` (a directory's `index.html`), or the sibling in the coding the
    /// client prefers; and whether it has siblings (its answer then varies by coding).
    fn open(&self, relative: &Path, accept: Option<&HeaderValue>) -> Option<(NamedFile, bool)> {
        let mut path = self.dir.join(relative);
        if path.is_dir() {
            path.push("index.html");
        }
        if !path.is_file() {
            return None;
        }
        let sibling = |suffix: &str| {
            let mut name = path.clone().into_os_string();
            name.push(".");
            name.push(suffix);
            PathBuf::from(name)
        };
        let present: Vec<Coding> = SIBLINGS
            .iter()
            .filter(|(_, suffix, _)| sibling(suffix).is_file())
            .map(|(coding, _, _)| *coding)
            .collect();
        let coding = compress::negotiate(accept, |coding| present.contains(&coding));
        let original = NamedFile::open(&path).ok()?;
        let file = match SIBLINGS.iter().find(|(c, _, _)| *c == coding) {
            Some((_, suffix, encoding)) => NamedFile::open(sibling(suffix))
                .ok()?
                .set_content_type(original.content_type().clone())
                .set_content_encoding(*encoding),
            None => original,
        };
        Some((file.disable_content_disposition(), !present.is_empty()))
    }
}

/// `path` as a relative file path: percent-decoded per segment, empty and `.` segments dropped;
/// `None` when a segment is `..` or decodes to something with a slash, backslash or NUL.
fn relative_path(path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for segment in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?;
        match decoded.as_ref() {
            "" | "." => {}
            ".." => return None,
            name if name.contains(['/', '\\', '\0']) => return None,
            name => relative.push(name),
        }
    }
    Some(relative)
}

fn plain(status: StatusCode, text: &'static str) -> HttpResponse<BoxBody> {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        assert_eq!(
            relative_path("/css/site%20v2.css").unwrap(),
            Path::new("css/site v2.css")
        );
        assert_eq!(relative_path("//a/./b/").unwrap(), Path::new("a/b"));
        for hostile in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/a%2fb",
            "/a%5cb",
            "/a%00",
            "/%ff",
        ] {
            assert!(relative_path(hostile).is_none(), "{hostile}");
        }
    }
}
