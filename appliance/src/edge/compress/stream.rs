//! Compression of a body as it streams: each upstream chunk goes into the encoder and whatever
//! compressed bytes are ready go out, so memory stays at the encoder's window whatever the body's
//! size. Like nginx's gzip filter, it does not flush per chunk (that would cost ratio).

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::{Bytes, BytesMut};

use super::gzip::{GzipStream, SMALL_BODY, gzip_small};
use super::{Coding, CompressionSettings};
use crate::monitor::metrics::CompressionCounters;

/// One compressed stream, writing into a buffer that is drained after every chunk.
pub(crate) enum Encoder {
    Gzip(GzipStream),
    /// A small body of known length, gathered and compressed whole at the end.
    GzipSmall {
        body: Vec<u8>,
        level: u32,
    },
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// An encoder for `coding` (not identity) at its configured level, for a body of `length`
    /// bytes when known.
    pub(crate) fn new(coding: Coding, settings: &CompressionSettings, length: Option<u64>) -> Self {
        match coding {
            Coding::Gzip if length.is_some_and(|length| length < SMALL_BODY) => Self::GzipSmall {
                body: Vec::with_capacity(length.unwrap_or(0) as usize),
                level: settings.gzip_level,
            },
            Coding::Brotli => Self::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                settings.brotli_level,
                22,
            ))),
            Coding::Zstd => Self::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), settings.zstd_level)
                    .expect("a valid zstd level (checked by config validation)"),
            ),
            Coding::Gzip | Coding::Identity => Self::Gzip(GzipStream::new(settings.gzip_level)),
        }
    }

    /// Feeds `chunk`; returns the compressed bytes ready so far (often none).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Bytes {
        // Writing into a Vec cannot fail.
        let out = match self {
            Self::Gzip(gzip) => {
                let mut out = Vec::new();
                gzip.push(chunk, &mut out);
                return out.into();
            }
            Self::GzipSmall { body, .. } => {
                body.extend_from_slice(chunk);
                return Bytes::new();
            }
            Self::Brotli(e) => e.write_all(chunk).map(|()| e.get_mut()),
            Self::Zstd(e) => e.write_all(chunk).map(|()| e.get_mut()),
        };
        out.map(|buffer| Bytes::from(std::mem::take(buffer)))
            .unwrap_or_default()
    }

    /// Ends the stream; returns the last compressed bytes.
    pub(crate) fn finish(self) -> Bytes {
        let out = match self {
            Self::Gzip(gzip) => {
                let mut out = Vec::new();
                gzip.finish(&mut out);
                out
            }
            Self::GzipSmall { body, level } => return gzip_small(body, level),
            Self::Brotli(e) => e.into_inner(),
            Self::Zstd(e) => e.finish().unwrap_or_default(),
        };
        Bytes::from(out)
    }
}

/// `inner`, compressed as it streams.
pub(crate) struct CompressBody<B> {
    inner: B,
    encoder: Option<Encoder>,
    /// Bytes in and out so far, counted when the stream ends.
    counted: (u64, u64),
    counters: CompressionCounters,
    /// Compressed bytes not sent yet: sent once there is a worthwhile chunk, so a small response
    /// goes out as one chunk (one write) instead of a 10-byte gzip header and then the rest.
    pending: BytesMut,
}

/// Compressed bytes gathered before a chunk is sent.
const CHUNK: usize = 8 * 1024;

impl<B> CompressBody<B> {
    pub(crate) fn new(inner: B, encoder: Encoder, counters: CompressionCounters) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
            counted: (0, 0),
            counters,
            pending: BytesMut::new(),
        }
    }
}

impl<B> MessageBody for CompressBody<B>
where
    B: MessageBody + Unpin,
{
    type Error = B::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let compressed = encoder.push(&chunk);
                    this.counted.0 += chunk.len() as u64;
                    this.counted.1 += compressed.len() as u64;
                    this.pending.extend_from_slice(&compressed);
                    if this.pending.len() >= CHUNK {
                        return Poll::Ready(Some(Ok(this.pending.split().freeze())));
                    }
                }
                Poll::Ready(None) => {
                    let last = this.encoder.take().map(Encoder::finish).unwrap_or_default();
                    this.counters.input.inc_by(this.counted.0);
                    this.counters
                        .output
                        .inc_by(this.counted.1 + last.len() as u64);
                    this.pending.extend_from_slice(&last);
                    return Poll::Ready(Some(Ok(this.pending.split().freeze())));
                }
                Poll::Ready(Some(Err(err))) => {
                    this.encoder = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::config::CompressionConfig;
    use crate::monitor::metrics::Metrics;

    #[actix_web::test]
    async fn a_streamed_body_compresses_to_what_decodes_back_whole() {
        let settings = CompressionSettings::new(&CompressionConfig::default(), &Metrics::default());
        let chunks: Vec<Bytes> = (0..50)
            .map(|i| Bytes::from(format!("<li>item {i} of a long list</li>\n").repeat(40)))
            .collect();
        let whole: Vec<u8> = chunks.concat();
        for coding in Coding::COMPRESSED {
            let source =
                futures_util::stream::iter(chunks.clone().into_iter().map(Ok::<_, std::io::Error>));
            let body = CompressBody::new(
                actix_web::body::BodyStream::new(source),
                Encoder::new(coding, &settings, None),
                CompressionCounters::default(),
            );
            let compressed = actix_web::body::to_bytes(body).await.unwrap();
            let mut decoded = Vec::new();
            match coding {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut decoded)
                }
                Coding::Brotli => {
                    brotli::Decompressor::new(&compressed[..], 4096).read_to_end(&mut decoded)
                }
                _ => zstd::stream::read::Decoder::new(&compressed[..])
                    .unwrap()
                    .read_to_end(&mut decoded),
            }
            .unwrap();
            assert_eq!(decoded, whole, "{coding:?}");
            assert!(compressed.len() < whole.len() / 5, "{coding:?}");
        }
    }
}
