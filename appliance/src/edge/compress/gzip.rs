//! A gzip stream (RFC 1952) over a raw deflate compressor taken from a per-thread pool. A fresh
//! deflate state allocates and clears a few hundred KiB, which costs more than compressing a
//! small JSON answer; resetting a pooled one does not.
//!
//! A small body of known length is better still compressed whole ([`gzip_small`]) with a window
//! and buffers sized to it, as nginx does (measured: pass-through of a 524-byte JSON went from
//! 0.61 to 0.64-0.67 of nginx). zlib-rs keeps its 64 Ki-entry hash table whatever the memory
//! level, so clearing that table is still most of the cost of a small body.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Bodies shorter than this are worth [`gzip_small`]: the largest window that still shrinks.
pub(crate) const SMALL_BODY: u64 = (1 << 14) - 262;

/// `body` as one gzip member at `level`, with the smallest window (and memory level, in step
/// with it) that still reaches back over the whole body (nginx's `ngx_http_gzip_filter` rule).
pub(crate) fn gzip_small(body: &[u8], level: u32) -> Vec<u8> {
    let (mut window_bits, mut mem_level) = (15, 8);
    while window_bits > 9 && body.len() < (1 << (window_bits - 1)) - 262 {
        window_bits -= 1;
        mem_level -= 1;
    }
    let config = zlib_rs::DeflateConfig {
        level: level as i32,
        method: zlib_rs::Method::Deflated,
        // 16 more: a gzip wrapper (header, CRC-32 and length) instead of zlib's.
        window_bits: window_bits + 16,
        mem_level,
        strategy: zlib_rs::Strategy::Default,
    };
    // The bound is for zlib's 6-byte wrapper; gzip's is 18.
    let mut out = vec![0; zlib_rs::compress_bound(body.len()) + 12];
    let (written, code) = zlib_rs::compress_slice(&mut out, body, config);
    assert_eq!(code, zlib_rs::ReturnCode::Ok, "the bound fits any input");
    let length = written.len();
    out.truncate(length);
    out
}

/// Compressors kept per thread, per level; more than this are dropped when returned.
const POOLED: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<(u32, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// One gzip member being written.
pub(crate) struct GzipStream {
    deflate: Option<Compress>,
    level: u32,
    crc: Crc,
    header_sent: bool,
}

impl GzipStream {
    pub(crate) fn new(level: u32) -> Self {
        let pooled = POOL.with_borrow_mut(|pool| {
            let at = pool.iter().rposition(|(l, _)| *l == level)?;
            Some(pool.swap_remove(at).1)
        });
        Self {
            deflate: Some(pooled.unwrap_or_else(|| Compress::new(Compression::new(level), false))),
            level,
            crc: Crc::new(),
            header_sent: false,
        }
    }

    /// Compresses `input`, appending what is ready to `out`.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.header(out);
        self.crc.update(input);
        self.run(input, out, FlushCompress::None);
    }

    /// Ends the member: the rest of the deflate stream, then CRC-32 and length.
    pub(crate) fn finish(mut self, out: &mut Vec<u8>) {
        self.header(out);
        self.run(&[], out, FlushCompress::Finish);
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        if !self.header_sent {
            // Magic, deflate, no flags, no mtime, no extra flags, OS unknown.
            out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
            self.header_sent = true;
        }
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
        let deflate = self.deflate.as_mut().expect("present until dropped");
        loop {
            out.reserve(input.len() / 2 + 1024);
            let before = deflate.total_in();
            let status = deflate
                .compress_vec(input, out, flush)
                .expect("deflate accepts any input");
            input = &input[(deflate.total_in() - before) as usize..];
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                _ => input.is_empty() && out.len() < out.capacity(),
            };
            if done {
                return;
            }
        }
    }
}

impl Drop for GzipStream {
    fn drop(&mut self) {
        if let Some(mut deflate) = self.deflate.take() {
            deflate.reset();
            POOL.with_borrow_mut(|pool| {
                if pool.len() < POOLED {
                    pool.push((self.level, deflate));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(gzip: &[u8]) -> Vec<u8> {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(gzip)
            .read_to_end(&mut decoded)
            .unwrap();
        decoded
    }

    #[test]
    fn small_bodies_compress_whole_at_every_size() {
        let text: Vec<u8> = b"{\"id\": 1, \"name\": \"open\", \"score\": 7}, "
            .iter()
            .copied()
            .cycle()
            .take(SMALL_BODY as usize)
            .collect();
        for size in [
            0,
            1,
            8,
            100,
            250,
            251,
            524,
            1000,
            4000,
            16_000,
            SMALL_BODY as usize - 1,
        ] {
            let body = &text[..size];
            let gzip = gzip_small(body, 6);
            assert_eq!(gunzip(&gzip), body, "{size} bytes");
            if size >= 524 {
                assert!(
                    gzip.len() < size / 2,
                    "{size} bytes compress: {}",
                    gzip.len()
                );
            }
        }
    }

    #[test]
    fn pooled_streams_write_valid_gzip_again_and_again() {
        let page: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for _ in 0..3 {
            let mut gzip = GzipStream::new(6);
            let mut out = Vec::new();
            for chunk in page.chunks(7_000) {
                gzip.push(chunk, &mut out);
            }
            gzip.finish(&mut out);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert!(decoded == page);
        }
        assert!(
            POOL.with_borrow(|pool| pool.len()) >= 1,
            "returned to the pool"
        );
    }
}
