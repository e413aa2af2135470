//! Static files through the real edge: a route with `root`, precompressed siblings sent as they
//! are, conditional and range requests, index files, compression of files without siblings,
//! and paths that try to leave the root.

use std::io::{Read, Write};
use std::path::Path;

use crate::support::{Gatehouse, client, raw_exchange, status_of};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn text(n: usize) -> Vec<u8> {
    b"body { color: #333; margin: 0 auto; }\n"
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

#[tokio::test]
async fn a_root_serves_files_and_their_precompressed_siblings() {
    let www = tempfile::tempdir().unwrap();
    let css = text(4000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&css).unwrap();
    let gz = gz.finish().unwrap();
    let mut br = Vec::new();
    brotli::BrotliCompress(&mut &css[..], &mut br, &Default::default()).unwrap();
    write(www.path(), "css/site.css", &css);
    write(www.path(), "css/site.css.gz", &gz);
    write(www.path(), "css/site.css.br", &br);
    write(www.path(), "app.js", &text(3000));
    write(
        www.path(),
        "index.html",
        b"<!doctype html><title>home</title>",
    );
    let gatehouse = Gatehouse::start(&format!(
        "[[routes]]\npath = \"/\"\nroot = \"{}\"\n",
        www.path().display()
    ));
    let http = client(None);
    let get = |path: &str, coding: &str| {
        http.get(gatehouse.url(path))
            .header("accept-encoding", coding)
            .send()
    };

    let brotli = get("/css/site.css", "gzip, br").await.unwrap();
    assert_eq!(brotli.headers()["content-encoding"], "br");
    assert_eq!(brotli.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(brotli.headers()["vary"], "Accept-Encoding");
    assert_eq!(
        brotli.headers()["cache-control"],
        "public, max-age=31536000, immutable",
        "browser caching applies to files too"
    );
    assert_eq!(brotli.bytes().await.unwrap(), br, "the sibling as it is");
    let gzip = get("/css/site.css", "gzip").await.unwrap();
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    assert_eq!(gzip.bytes().await.unwrap(), gz);
    let plain = get("/css/site.css", "identity").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let etag = plain.headers()["etag"].clone();
    assert_eq!(plain.bytes().await.unwrap(), css);

    let not_modified = http
        .get(gatehouse.url("/css/site.css"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let range = http
        .get(gatehouse.url("/css/site.css"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap(), css[..10]);

    let compressed = get("/app.js", "gzip").await.unwrap();
    assert_eq!(
        compressed.headers()["content-encoding"],
        "gzip",
        "no sibling: compressed on the way out"
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&compressed.bytes().await.unwrap()[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, text(3000));

    let index = get("/", "identity").await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(
        index.text().await.unwrap(),
        "<!doctype html><title>home</title>"
    );
    assert_eq!(get("/missing.css", "identity").await.unwrap().status(), 404);
    let post = http.post(gatehouse.url("/app.js")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    for hostile in [
        "/%2e%2e/%2e%2e/etc/passwd",
        "/css%2f..%2f..%2fetc/passwd",
        "/a%00",
    ] {
        let request = format!("GET {hostile} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(
            gatehouse.edge_addr(),
            request.as_bytes(),
            std::time::Duration::from_secs(2),
        )
        .await;
        assert_eq!(status_of(&answer), 400, "{hostile}: {answer}");
    }
}
