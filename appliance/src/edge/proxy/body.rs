//! The response body streamed from an upstream to the client, chunk by chunk. Only a response
//! the cache will store is also copied aside as it passes ([`Capture`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::upstream::InFlight;

/// Why a response body stopped early. The client sees a truncated response (actix closes the
/// connection), which is the only honest answer once the status line has gone out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("upstream body: {0}")]
    Upstream(#[from] PayloadError),
    #[error("upstream body stalled for longer than {0:?}")]
    Idle(Duration),
}

/// Streams `inner` with the upstream's length, an idle timeout between chunks, and the server's
/// in-flight count held until the last byte (least-connections counts whole responses).
pub(crate) struct ProxyBody<S> {
    inner: S,
    size: BodySize,
    idle_timeout: Duration,
    /// Created the first time the upstream makes us wait; most small bodies never need it.
    idle: Option<Pin<Box<Sleep>>>,
    /// Whether `idle` holds a deadline for the current wait.
    armed: bool,
    capture: Option<Capture>,
    _in_flight: InFlight,
}

/// A copy of the body as it streams past, handed to `complete` when the body has ended whole.
/// A body that fails, is cut short by the client, or grows past `limit` is never handed over.
pub(crate) struct Capture {
    copy: BytesMut,
    limit: usize,
    complete: Box<dyn FnOnce(Bytes)>,
}

impl Capture {
    /// Copies up to `limit` bytes, then calls `complete` with them.
    pub(crate) fn new(limit: usize, complete: Box<dyn FnOnce(Bytes)>) -> Self {
        Self {
            copy: BytesMut::new(),
            limit,
            complete,
        }
    }
}

impl<S> ProxyBody<S> {
    /// `size` is what the client is told: the upstream's length, none, or unknown.
    pub(crate) fn new(
        inner: S,
        size: BodySize,
        idle_timeout: Duration,
        in_flight: InFlight,
    ) -> Self {
        Self {
            inner,
            size,
            idle_timeout,
            idle: None,
            armed: false,
            capture: None,
            _in_flight: in_flight,
        }
    }

    /// The same body, copied aside by `capture` as it streams.
    pub(crate) fn captured(mut self, capture: Capture) -> Self {
        self.capture = Some(capture);
        self
    }
}

impl<S> MessageBody for ProxyBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Error = BodyError;

    fn size(&self) -> BodySize {
        self.size
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(chunk)) => {
                this.armed = false;
                let copied = match (&chunk, this.capture.as_mut()) {
                    (Ok(bytes), Some(capture))
                        if capture.copy.len() + bytes.len() <= capture.limit =>
                    {
                        capture.copy.extend_from_slice(bytes);
                        true
                    }
                    _ => false,
                };
                if !copied {
                    this.capture = None;
                }
                Poll::Ready(Some(chunk.map_err(BodyError::from)))
            }
            Poll::Ready(None) => {
                if let Some(capture) = this.capture.take() {
                    (capture.complete)(capture.copy.freeze());
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    idle.as_mut().reset(deadline);
                    this.armed = true;
                }
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.capture = None;
                        Poll::Ready(Some(Err(BodyError::Idle(this.idle_timeout))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
