//! A plugin's standard streams, without blocking.
//!
//! A Rust guest built for wasm32-wasip2 imports `wasi:io` and `wasi:cli`, and writes to stderr
//! when it panics. wasmtime-wasi's synchronous stream functions block on a Tokio runtime, which
//! panics on an actix worker thread (already inside one). Here the streams never wait: stdin is
//! empty, stdout and stderr go to a small buffer whose tail is attached to the plugin's trap
//! message (so "trapped" comes with the guest's own panic message), and every pollable is ready.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    Host as AsyncStreams, HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};
use wasmtime_wasi_io::poll::Pollable as PollableTrait;
use wasmtime_wasi_io::streams::OutputStream as OutputStreamTrait;

use super::host::PluginState;

/// Bytes of output kept per instance: enough for a panic message.
const KEEP: usize = 2048;

/// The last [`KEEP`] bytes a plugin wrote to stdout or stderr.
#[derive(Clone, Default)]
pub(crate) struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.extend_from_slice(bytes);
        if kept.len() > KEEP {
            let excess = kept.len() - KEEP;
            kept.drain(..excess);
        }
    }

    /// What was written since the last call, as text.
    pub(crate) fn take(&self) -> String {
        let kept = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        String::from_utf8_lossy(&kept).trim().to_string()
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn p2_stream(&self) -> Box<dyn OutputStreamTrait> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStreamTrait for Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(KEEP)
    }
}

#[wasmtime_wasi_io::async_trait]
impl PollableTrait for Output {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Output {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The streams and pollables of one store, answered without waiting.
pub(crate) struct Io<'a>(&'a mut ResourceTable);

struct IoData;

impl HasData for IoData {
    type Data<'a> = Io<'a>;
}

/// Links `wasi:io/poll` and `wasi:io/streams` (`wasi:io/error` comes from wasmtime-wasi-io).
pub(crate) fn link(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<_, Table>(linker, |s| s.table())?;
    poll::add_to_linker::<_, IoData>(linker, |s| Io(s.table()))?;
    streams::add_to_linker::<_, IoData>(linker, |s| Io(s.table()))?;
    Ok(())
}

struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

impl streams::Host for Io<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(match AsyncStreams::convert_stream_error(self.0, err)? {
            wasmtime_wasi_io::bindings::wasi::io::streams::StreamError::LastOperationFailed(e) => {
                streams::StreamError::LastOperationFailed(e)
            }
            wasmtime_wasi_io::bindings::wasi::io::streams::StreamError::Closed => {
                streams::StreamError::Closed
            }
        })
    }
}

impl streams::HostOutputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<streams::OutputStream>) -> wasmtime::Result<()> {
        self.0.delete(stream)?;
        Ok(())
    }

    fn check_write(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<u64> {
        AsyncOutput::check_write(self.0, stream)
    }

    fn write(
        &mut self,
        stream: Resource<streams::OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        AsyncOutput::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let stream = self.0.get_mut(&stream)?;
        stream.write(bytes.into())?;
        stream.flush()
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        self.blocking_write_and_flush(stream, vec![0; len.min(KEEP as u64) as usize])
    }

    fn subscribe(
        &mut self,
        stream: Resource<streams::OutputStream>,
    ) -> wasmtime::Result<Resource<poll::Pollable>> {
        AsyncOutput::subscribe(self.0, stream)
    }

    fn write_zeroes(
        &mut self,
        stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        self.blocking_write_zeroes_and_flush(stream, len)
    }

    fn flush(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<()> {
        self.0.get_mut(&stream)?.flush()
    }

    fn blocking_flush(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<()> {
        self.flush(stream)
    }

    fn splice(
        &mut self,
        _dst: Resource<streams::OutputStream>,
        _src: Resource<streams::InputStream>,
        _len: u64,
    ) -> StreamResult<u64> {
        // The only input is an empty stdin.
        Err(StreamError::Closed)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<streams::OutputStream>,
        src: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        self.splice(dst, src, len)
    }
}

impl streams::HostInputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<streams::InputStream>) -> wasmtime::Result<()> {
        self.0.delete(stream)?;
        Ok(())
    }

    fn read(
        &mut self,
        _stream: Resource<streams::InputStream>,
        _len: u64,
    ) -> StreamResult<Vec<u8>> {
        Err(StreamError::Closed)
    }

    fn blocking_read(
        &mut self,
        _stream: Resource<streams::InputStream>,
        _len: u64,
    ) -> StreamResult<Vec<u8>> {
        Err(StreamError::Closed)
    }

    fn skip(&mut self, _stream: Resource<streams::InputStream>, _len: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn blocking_skip(
        &mut self,
        _stream: Resource<streams::InputStream>,
        _len: u64,
    ) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn subscribe(
        &mut self,
        stream: Resource<streams::InputStream>,
    ) -> wasmtime::Result<Resource<poll::Pollable>> {
        AsyncInput::subscribe(self.0, stream)
    }
}

impl poll::Host for Io<'_> {
    /// Every stream here is always ready.
    fn poll(&mut self, pollables: Vec<Resource<poll::Pollable>>) -> wasmtime::Result<Vec<u32>> {
        Ok((0..pollables.len() as u32).collect())
    }
}

impl poll::HostPollable for Io<'_> {
    fn ready(&mut self, _pollable: Resource<poll::Pollable>) -> wasmtime::Result<bool> {
        Ok(true)
    }

    fn block(&mut self, _pollable: Resource<poll::Pollable>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn drop(&mut self, pollable: Resource<poll::Pollable>) -> wasmtime::Result<()> {
        self.0.delete(pollable)?;
        Ok(())
    }
}
