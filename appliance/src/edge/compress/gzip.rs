//! A gzip stream (RFC 1952) over a raw deflate compressor taken from a per-thread pool. A fresh
//! deflate state allocates and clears a few hundred KiB, which costs more than compressing a
//! small JSON answer; resetting a pooled one does not.
//!
//! A small body of known length is better still compressed whole ([`gzip_small`]) by
//! libdeflate, whose one-shot compressor is kept per thread and needs no stream state: zlib-rs
//! allocated and cleared a 128 KiB hash table for each call, which made gzip about a fifth of
//! a pass-through JSON answer's CPU. And an API that gives many clients the same bytes (a
//! list, a config, a status) is compressed once: the last few small bodies compressed on a
//! thread are kept with their gzip members, and the same bytes again get the same member.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use libdeflater::{CompressionLvl, Compressor};

/// Bodies shorter than this are compressed whole by [`gzip_small`]; longer ones stream.
pub(crate) const SMALL_BODY: u64 = 16 * 1024;

/// Small bodies remembered per thread with their gzip members (at most 16 KiB each, so well
/// under a MiB per worker).
const REMEMBERED: usize = 16;

/// A body compressed lately, and its gzip member.
struct Compressed {
    level: u32,
    body: Vec<u8>,
    gzip: Bytes,
}

thread_local! {
    /// One-shot compressors by level (a few hundred KiB each, so one per level in use).
    static ONE_SHOT: RefCell<Vec<(u32, Compressor)>> = const { RefCell::new(Vec::new()) };
    /// The last bodies compressed, most recent first.
    static RECENT: RefCell<VecDeque<Compressed>> = const { RefCell::new(VecDeque::new()) };
}

/// `body` as one gzip member at `level` (1-9, zlib's scale, which libdeflate shares): the
/// member made for the same bytes lately, or a new one.
pub(crate) fn gzip_small(body: Vec<u8>, level: u32) -> Bytes {
    let seen = RECENT.with_borrow_mut(|recent| {
        let at = recent
            .iter()
            .position(|kept| kept.level == level && kept.body == body)?;
        let kept = recent.remove(at)?;
        let gzip = kept.gzip.clone();
        recent.push_front(kept);
        Some(gzip)
    });
    if let Some(gzip) = seen {
        return gzip;
    }
    let gzip = Bytes::from(compress_whole(&body, level));
    RECENT.with_borrow_mut(|recent| {
        recent.truncate(REMEMBERED - 1);
        recent.push_front(Compressed {
            level,
            body,
            gzip: gzip.clone(),
        });
    });
    gzip
}

fn compress_whole(body: &[u8], level: u32) -> Vec<u8> {
    ONE_SHOT.with_borrow_mut(|compressors| {
        let at = match compressors.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                let lvl = CompressionLvl::new(level as i32).unwrap_or_default();
                compressors.push((level, Compressor::new(lvl)));
                compressors.len() - 1
            }
        };
        let compressor = &mut compressors[at].1;
        let mut out = vec![0; compressor.gzip_compress_bound(body.len())];
        let written = compressor
            .gzip_compress(body, &mut out)
            .expect("the bound fits any input");
        out.truncate(written);
        out
    })
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
            let gzip = gzip_small(body.to_vec(), 6);
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
    fn the_same_small_body_again_gets_the_member_made_for_it() {
        let body =
            |n: u8| -> Vec<u8> { format!("{{\"items\": [{n}, {n}, {n}]}}").repeat(20).into() };
        let first = gzip_small(body(1), 6);
        // Other bodies and another level in between, fewer than are remembered.
        for n in 2..8 {
            assert_eq!(gunzip(&gzip_small(body(n), 6)), body(n));
        }
        let other_level = gzip_small(body(1), 1);
        assert_eq!(gunzip(&other_level), body(1));
        let again = gzip_small(body(1), 6);
        assert_eq!(
            again.as_ptr(),
            first.as_ptr(),
            "the same member, not a new one"
        );
        // A body that differs in one byte is compressed for itself.
        let mut changed = body(1);
        changed[5] = b'9';
        assert_eq!(gunzip(&gzip_small(changed.clone(), 6)), changed);
        // Past the memory's size the oldest are forgotten.
        for n in 0..REMEMBERED as u8 {
            gzip_small(body(100 + n), 6);
        }
        assert_ne!(gzip_small(body(1), 6).as_ptr(), first.as_ptr());
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
