//! A gzip stream (RFC 1952) over a raw deflate compressor taken from a per-thread pool. A fresh
//! deflate state allocates and clears a few hundred KiB, which costs more than compressing a
//! small JSON answer; resetting a pooled one does not.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

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
