//! Request traces over OTLP (`[traces]`): a server span per request, following the HTTP
//! semantic conventions, with child spans for the phases (validation, the rate-limit policy,
//! the cache, the upstream call, compression); W3C `traceparent` / `tracestate` taken from
//! clients and given to upstreams.
//!
//! Export never slows a request: finished spans go into a bounded queue that a thread of its
//! own drains in batches to the collector. When the queue is full (the collector is down or
//! slow) spans are dropped and counted. The tracer lives in the edge's state, not in a global,
//! so two gatehouses in one process (the tests) keep their traces apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use tracing::warn;

use super::collector_tls::CollectorTls;
use crate::config::{OtlpProtocol, TracesConfig};

/// Spans sent to the collector in one export, at most (2048 measured no faster).
const BATCH: usize = 512;
/// Longest a finished span waits for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// What the exporter has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Exports that failed (their spans are lost).
    pub failed_exports: AtomicU64,
    /// Whether the last export failed (for the health report).
    pub last_failed: AtomicBool,
}

/// The tracer of one gatehouse and its export pipeline.
pub struct Traces {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    counters: Arc<ExportCounters>,
}

impl Traces {
    /// The pipeline `config` describes; `None` when traces are off.
    pub fn start(config: &TracesConfig) -> Option<Arc<Self>> {
        if !config.enabled {
            return None;
        }
        let mut resource = Resource::builder().with_service_name(config.service_name.clone());
        resource = resource.with_attributes(
            config
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let counters = Arc::new(ExportCounters::default());
        let processor =
            QueueProcessor::start(config.clone(), resource.clone(), Arc::clone(&counters));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_span_processor(processor)
            .build();
        Some(Arc::new(Self {
            tracer: provider.tracer("gatehouse"),
            provider,
            propagator: TraceContextPropagator::new(),
            counters,
        }))
    }

    /// What the exporter has done.
    pub fn counters(&self) -> &ExportCounters {
        &self.counters
    }

    /// Starts the server span of a request with these `headers` (its parent, when the client
    /// sent `traceparent`), named `name`; `attributes` are made only when it is recorded, so
    /// an unsampled request pays for ids and nothing else.
    pub fn server_span(
        &self,
        headers: &HeaderMap,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        let parent = self.propagator.extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        let span = cx.span();
        if span.is_recording() {
            span.set_attributes(attributes());
        }
        cx
    }

    /// Starts a child span of `parent`; none when `parent` is not recorded (its children
    /// would not be either).
    pub fn child(&self, parent: &Context, name: &'static str, kind: SpanKind) -> Option<Context> {
        if !parent.span().is_recording() {
            return None;
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, parent);
        Some(parent.with_span(span))
    }

    /// Starts the span of one pooled transaction: a root, since the wire protocol carries no
    /// trace context; none when it is not sampled. `attributes` are made only when recorded.
    pub fn transaction_span(
        &self,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        let span = self
            .tracer
            .span_builder("pool.transaction")
            .with_kind(SpanKind::Server)
            .start(&self.tracer);
        span.is_recording().then(|| {
            let mut span = span;
            span.set_attributes(attributes());
            span
        })
    }

    /// Writes `cx`'s `traceparent` (and `tracestate`) into `headers`, for the upstream.
    pub fn inject(&self, cx: &Context, headers: &mut HeaderMap) {
        self.propagator.inject_context(cx, &mut HeadersMut(headers));
    }

    /// Exports what is queued and stops the export thread.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// Sets the final status of a server span (and the body bytes sent) and ends it.
pub fn end_server_span(cx: &Context, status: u16, bytes: u64) {
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    span.set_attribute(KeyValue::new("http.response.body.size", bytes as i64));
    if status >= 500 {
        span.set_status(Status::error(""));
    }
    span.end();
}

/// The trace id of `cx`'s span, for the access log; none when it has none.
pub fn trace_id(cx: &Context) -> Option<String> {
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// Reads W3C headers from actix's header map.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes W3C headers into actix's header map.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(key),
            HeaderValue::try_from(value.as_str()),
        ) {
            self.0.insert(name, value);
        }
    }
}

enum Message {
    Span(Box<SpanData>),
    Flush(SyncSender<()>),
}

/// Queues finished spans for the export thread; never blocks, and wakes the thread once per
/// [`BATCH`] spans rather than once per span (a wake-up is a syscall on the request path).
#[derive(Debug)]
struct QueueProcessor {
    queue: SyncSender<Message>,
    counters: Arc<ExportCounters>,
    /// Spans queued since the last export.
    pending: Arc<AtomicUsize>,
    exporter: Option<std::thread::Thread>,
}

impl QueueProcessor {
    fn start(config: TracesConfig, resource: Resource, counters: Arc<ExportCounters>) -> Self {
        let (queue, spans) = sync_channel(config.queue_size);
        let (thread_counters, pending) = (Arc::clone(&counters), Arc::new(AtomicUsize::new(0)));
        let exported = Arc::clone(&pending);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-traces".into())
            .spawn(move || export_loop(&config, &resource, &spans, &thread_counters, &exported));
        let exporter = match spawned {
            Ok(thread) => Some(thread.thread().clone()),
            Err(err) => {
                warn!(error = %err, "cannot start the trace exporter; spans will be dropped");
                None
            }
        };
        Self {
            queue,
            counters,
            pending,
            exporter,
        }
    }

    fn wake(&self) {
        if let Some(exporter) = &self.exporter {
            exporter.unpark();
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {
                if self.pending.fetch_add(1, Ordering::Relaxed) + 1 == BATCH {
                    self.wake();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, flushed) = sync_channel(1);
        // A full queue is flushed by the thread as it drains; no need to wait for room.
        if self.queue.try_send(Message::Flush(done)).is_ok() {
            self.wake();
            let _ = flushed.recv_timeout(Duration::from_secs(10));
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

/// The export thread: a runtime of its own (the exporters are async), batches of up to
/// [`BATCH`] spans, sent about [`BATCH_DELAY`] after the first of them was taken. It sleeps
/// between looks at the queue (woken early by a full batch or a flush), so queueing a span
/// never wakes it.
fn export_loop(
    config: &TracesConfig,
    resource: &Resource,
    spans: &Receiver<Message>,
    counters: &ExportCounters,
    pending: &AtomicUsize,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            warn!(error = %err, "cannot start the trace exporter's runtime");
            return;
        }
    };
    let exporter = runtime.block_on(async { exporter(config) });
    let mut exporter = match exporter {
        Ok(exporter) => exporter,
        Err(err) => {
            warn!(error = %err, endpoint = %config.endpoint, "cannot build the OTLP exporter; spans will be dropped");
            return;
        }
    };
    exporter.set_resource(resource);
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    // When the oldest span of the batch finished.
    let mut oldest: Option<Instant> = None;
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let mut closed = false;
        while batch.len() < BATCH {
            match spans.try_recv() {
                Ok(Message::Span(span)) => {
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(*span);
                }
                Ok(Message::Flush(done)) => flushes.push(done),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let waited = oldest.is_some_and(|at| at.elapsed() >= BATCH_DELAY);
        let full = batch.len() >= BATCH;
        if !batch.is_empty() && (full || waited || !flushes.is_empty() || closed) {
            oldest = None;
            pending.fetch_sub(batch.len(), Ordering::Relaxed);
            let sent = batch.len() as u64;
            let export = exporter.export(std::mem::take(&mut batch));
            let outcome = runtime
                .block_on(async { tokio::time::timeout(config.export_timeout, export).await });
            match outcome {
                Ok(Ok(())) => {
                    counters.exported.fetch_add(sent, Ordering::Relaxed);
                    counters.last_failed.store(false, Ordering::Relaxed);
                }
                failed => {
                    counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                    counters.last_failed.store(true, Ordering::Relaxed);
                    // One warning a minute: a collector that is down would otherwise flood the log.
                    if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        let why = match failed {
                            Ok(Err(err)) => err.to_string(),
                            _ => "timed out".into(),
                        };
                        warn!(endpoint = %config.endpoint, spans = sent, why, "trace export failed; those spans are lost");
                    }
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if closed {
            let _ = exporter.shutdown();
            return;
        }
        if !full {
            let due = oldest.map_or(BATCH_DELAY, |at| BATCH_DELAY.saturating_sub(at.elapsed()));
            std::thread::park_timeout(due);
        }
    }
}

fn exporter(config: &TracesConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let https = config.endpoint.starts_with("https://");
    // Checked at start; read again here, so a file that went bad since fails this exporter only.
    let tls = CollectorTls::load(config).map_err(|err| format!("{}: {err}", err.key))?;
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &config.headers {
                let name = tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                    name.as_bytes(),
                )
                .map_err(|err| format!("traces.headers.{name}: {err}"))?;
                let value = value
                    .parse()
                    .map_err(|_| format!("traces.headers: {value:?} is not a header value"))?;
                metadata.insert(name, value);
            }
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.export_timeout)
                .with_metadata(metadata);
            match https {
                true => builder.with_tls_config(tonic_tls(&tls)).build(),
                false => builder.build(),
            }
        }
        OtlpProtocol::Http => {
            let headers: HashMap<String, String> = config.headers.clone().into_iter().collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.export_timeout)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_headers(headers)
                .with_http_client(http_client(&tls)?)
                .build()
        }
    };
    built.map_err(|err| err.to_string())
}

/// The gRPC channel's TLS: the system's roots, the extra CAs and the client certificate.
fn tonic_tls(tls: &CollectorTls) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = &tls.ca {
        config = config.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    config
}

/// The HTTP exporter's client, trusting the extra CAs and showing the client certificate.
fn http_client(tls: &CollectorTls) -> Result<reqwest::Client, String> {
    let mut client = reqwest::Client::builder();
    if let Some(ca) = &tls.ca {
        let roots = reqwest::Certificate::from_pem_bundle(ca).map_err(|err| err.to_string())?;
        client = client.tls_certs_merge(roots);
    }
    if let Some((cert, key)) = &tls.identity {
        let pem = [cert.as_slice(), b"\n", key.as_slice()].concat();
        let identity = reqwest::Identity::from_pem(&pem).map_err(|err| err.to_string())?;
        client = client.identity(identity);
    }
    client.build().map_err(|err| err.to_string())
}
