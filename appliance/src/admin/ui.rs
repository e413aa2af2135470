//! The web UI's files, embedded in the binary (`web-ui/`). The page is served at `/ui/` with
//! `no-cache`; everything it loads lives under `/ui/assets/<hash>/`, where the hash covers
//! every file, so assets can be cached for a year and a new build is never mixed with an old
//! one. Relative imports between the modules keep working under that directory. No inline
//! script or style is needed, so the UI runs under a strict CSP.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};

#[derive(RustEmbed)]
#[folder = "../web-ui/"]
struct Files;

/// Where `index.html` names the hashed asset directory.
const ASSETS_PLACEHOLDER: &str = "{{ASSETS}}";

/// The UI's own policy: its scripts and styles only, talking to this listener only, in no
/// frame.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

/// Routes of the UI's files.
pub(super) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(to_page))
        .route("/ui", web::get().to(to_page))
        .route("/ui/", web::get().to(page))
        .route("/ui/assets/{hash}/{path:.*}", web::get().to(asset));
}

async fn to_page() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// The page, naming this build's asset directory.
async fn page() -> HttpResponse {
    let page = PAGE.get_or_init(|| {
        let html = Files::get("index.html").expect("web-ui/index.html is embedded");
        String::from_utf8_lossy(&html.data)
            .replace(ASSETS_PLACEHOLDER, &format!("/ui/assets/{}", bundle_hash()))
            .into()
    });
    guarded(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(page.clone())
}

/// The page, made once: each answer shares its bytes.
static PAGE: OnceLock<actix_web::web::Bytes> = OnceLock::new();

/// One asset of this build; 304 when the browser has it.
async fn asset(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (hash, path) = path.into_inner();
    let file = (hash == bundle_hash())
        .then(|| Files::get(&format!("assets/{path}")))
        .flatten();
    let Some(file) = file else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such asset in this build\n");
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let cached = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|given| given.as_bytes() == etag.as_bytes());
    let answer = if cached {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    guarded(answer)
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .content_type(file.metadata.mimetype())
        .body(if cached {
            Vec::new()
        } else {
            file.data.into_owned()
        })
}

/// Headers every UI answer carries.
fn guarded(mut answer: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    answer
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    answer
}

/// The first 8 bytes of a digest over every embedded file, in hex.
fn bundle_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut all = Sha256::new();
        for name in Files::iter() {
            let file = Files::get(&name).expect("listed files exist");
            all.update(name.as_bytes());
            all.update(file.metadata.sha256_hash());
        }
        hex(&all.finalize()[..8])
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_assets_from_the_hashed_directory() {
        let html = Files::get("index.html").expect("embedded");
        let html = String::from_utf8_lossy(&html.data);
        assert!(html.contains(ASSETS_PLACEHOLDER));
        assert!(!html.contains("<script>"), "no inline script under the CSP");
        assert!(!html.contains("style="), "no inline style under the CSP");
        assert_eq!(bundle_hash().len(), 16);
        assert!(Files::get("assets/app.js").is_some());
    }
}
