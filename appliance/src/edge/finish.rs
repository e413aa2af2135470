//! The finish phase: runs when a response body has been sent or abandoned, so it knows the real
//! bytes sent and the whole duration. It counts the request in the metrics, writes the
//! access-log line and ends the request's place in the count of requests in flight, which a
//! graceful shutdown waits for. Refusals and upstream failures are counted by reason as soon as
//! the response is ready (the error rides in the response's extensions).

use std::fmt::Write as _;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{REFERER, USER_AGENT};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest};
use bytes::Bytes;
use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use tokio::sync::Notify;

use super::EdgeState;
use super::cache::CacheStatus;
use super::compress::Coding;
use super::error::{EdgeError, Source};
use super::proxy::UpstreamOutcome;
use super::spans::RequestSpan;
use super::validate;
use crate::config::AccessLogFormat;
use crate::monitor::metrics::{Answered, Metrics, method_label};
use crate::telemetry::{self, traces};

/// What the handler learned about a request, left in its extensions for this phase.
#[derive(Debug, Default)]
pub(crate) struct RequestNotes {
    pub(crate) route: Option<Arc<str>>,
    pub(crate) request_id: Option<String>,
    pub(crate) upstream: UpstreamOutcome,
}

/// Requests in flight on the edge: from the first byte of handling to the last byte of the body.
#[derive(Debug, Default)]
pub struct ActiveRequests {
    count: AtomicUsize,
    idle: Notify,
}

impl ActiveRequests {
    fn start(self: &Arc<Self>) -> ActiveRequest {
        self.count.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(Arc::clone(self))
    }

    /// Requests in flight now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        loop {
            // Created before the check, so a request ending in between still wakes us.
            let ended = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// One request in flight; dropping it ends the request.
struct ActiveRequest(Arc<ActiveRequests>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The middleware: wraps every response body so the phase runs at its end.
pub(crate) struct Finish {
    state: Arc<EdgeState>,
}

impl Finish {
    pub(crate) fn new(state: Arc<EdgeState>) -> Self {
        Self { state }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Finish
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<FinishBody<B>>;
    type Error = actix_web::Error;
    type Transform = FinishService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(FinishService {
            service: Rc::new(service),
            state: Arc::clone(&self.state),
        }))
    }
}

pub(crate) struct FinishService<S> {
    service: Rc<S>,
    state: Arc<EdgeState>,
}

impl<S, B> Service<ServiceRequest> for FinishService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<FinishBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let server_span = self.state.traces().map(|traces| {
            let name = method_label(req.method());
            let span = traces.server_span(req.headers(), name, || request_attributes(&req));
            req.extensions_mut().insert(RequestSpan(span.clone()));
            span
        });
        let active = self.state.active().start();
        let runtime = self.state.runtime();
        let (format, enabled) = (runtime.access_log, runtime.logs_access());
        let metrics = Arc::clone(self.state.metrics());
        let started = Instant::now();
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let notes = res
                .request()
                .extensions_mut()
                .remove::<RequestNotes>()
                .unwrap_or_default();
            if let Some(err) = res.response().extensions().get::<EdgeError>() {
                match err.source() {
                    Source::Downstream => metrics.rejected(err.reason(), res.status()),
                    Source::Upstream => metrics.upstream_failed(notes.route.as_ref(), err.reason()),
                }
            }
            let extensions = res.response().extensions();
            let tally = Tally {
                metrics,
                route: notes.route.clone(),
                method: res.request().method().clone(),
                status: res.status(),
                upstream_header_time: notes.upstream.header_time,
                cache: extensions.get::<CacheStatus>().map(|status| status.label()),
                coding: extensions.get::<Coding>().map(|coding| coding.token()),
                started,
                bytes: 0,
                server_span,
            };
            drop(extensions);
            let pending = enabled.then(|| {
                let status = res.status().as_u16();
                let trace_id = tally.server_span.as_ref().and_then(traces::trace_id);
                Entry::new(res.request(), status, notes, started, format, trace_id)
            });
            Ok(res.map_body(|_, body| FinishBody {
                body,
                tally,
                pending,
                _active: active,
            }))
        })
    }
}

pin_project! {
    /// A response body that runs the finish phase when it ends or is dropped.
    pub(crate) struct FinishBody<B> {
        #[pin]
        body: B,
        tally: Tally,
        pending: Option<Entry>,
        _active: ActiveRequest,
    }

    impl<B> PinnedDrop for FinishBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.tally.count();
            if let Some(entry) = this.pending.take() {
                telemetry::write_access_line(&entry.render(this.tally.bytes));
            }
        }
    }
}

impl<B: MessageBody> MessageBody for FinishBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            this.tally.bytes += chunk.len() as u64;
        }
        polled
    }
}

/// What the metrics learn of one request.
struct Tally {
    metrics: Arc<Metrics>,
    route: Option<Arc<str>>,
    method: Method,
    status: StatusCode,
    upstream_header_time: Option<Duration>,
    cache: Option<&'static str>,
    coding: Option<&'static str>,
    started: Instant,
    bytes: u64,
    /// The request's server span, ended with the response.
    server_span: Option<opentelemetry::Context>,
}

impl Tally {
    fn count(&self) {
        self.metrics.answered(&Answered {
            route: self.route.as_ref(),
            method: &self.method,
            status: self.status,
            duration: self.started.elapsed(),
            bytes: self.bytes,
            upstream_header_time: self.upstream_header_time,
            cache: self.cache,
            coding: self.coding,
        });
        if let Some(span) = &self.server_span {
            traces::end_server_span(span, self.status.as_u16(), self.bytes);
        }
    }
}

/// The server span's attributes known at the start (HTTP semantic conventions).
fn request_attributes(req: &ServiceRequest) -> Vec<KeyValue> {
    // From the connection and Host, not X-Forwarded-*: a client could write those.
    let scheme = if super::connections::over_tls(req.request()) {
        "https"
    } else {
        "http"
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method_label(req.method())),
        KeyValue::new("url.path", req.path().to_string()),
        KeyValue::new("url.scheme", scheme),
        KeyValue::new("network.protocol.version", version_name(req.version())),
    ];
    if let Some(host) = validate::authority(req.request()) {
        attributes.push(KeyValue::new(
            "server.address",
            validate::host_name(host).to_string(),
        ));
    }
    if let Some(peer) = req.peer_addr() {
        attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
    }
    if let Some(agent) = req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()) {
        attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
    }
    attributes
}

/// One request, ready to be written.
struct Entry {
    format: AccessLogFormat,
    started: Instant,
    client: String,
    method: String,
    target: String,
    version: &'static str,
    status: u16,
    referer: String,
    user_agent: String,
    notes: RequestNotes,
    trace_id: Option<String>,
}

impl Entry {
    fn new(
        req: &HttpRequest,
        status: u16,
        notes: RequestNotes,
        started: Instant,
        format: AccessLogFormat,
        trace_id: Option<String>,
    ) -> Self {
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Self {
            format,
            started,
            client: req
                .peer_addr()
                .map_or_else(|| "-".into(), |a| a.ip().to_string()),
            method: req.method().to_string(),
            target: req.uri().to_string(),
            version: version_name(req.version()),
            status,
            referer: header(REFERER).unwrap_or_default(),
            user_agent: header(USER_AGENT).unwrap_or_default(),
            notes,
            trace_id,
        }
    }

    /// The line, with `bytes` of body sent.
    fn render(&self, bytes: u64) -> String {
        let total = self.started.elapsed();
        match self.format {
            AccessLogFormat::Json => self.json(total, bytes),
            _ => self.combined(total, bytes),
        }
    }

    /// nginx's combined format, then gatehouse's fields as key=value.
    fn combined(&self, total: Duration, bytes: u64) -> String {
        let notes = &self.notes;
        let mut line = String::with_capacity(256);
        let _ = writeln!(
            line,
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rid={} route={} upstream={} attempts={} rt={:.3} urt={} trace={}",
            self.client,
            chrono::Local::now().format("%d/%b/%Y:%H:%M:%S %z"),
            escape(&self.method),
            escape(&self.target),
            self.version,
            self.status,
            bytes,
            escape(or_dash(&self.referer)),
            escape(or_dash(&self.user_agent)),
            notes.request_id.as_deref().unwrap_or("-"),
            notes.route.as_deref().unwrap_or("-"),
            notes.upstream.server.as_deref().unwrap_or("-"),
            notes.upstream.attempts,
            total.as_secs_f64(),
            notes
                .upstream
                .header_time
                .map_or_else(|| "-".into(), |t| format!("{:.3}", t.as_secs_f64())),
            self.trace_id.as_deref().unwrap_or("-"),
        );
        line
    }

    fn json(&self, total: Duration, bytes: u64) -> String {
        let notes = &self.notes;
        let mut line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "client": self.client,
            "method": self.method,
            "target": self.target,
            "version": self.version,
            "status": self.status,
            "bytes": bytes,
            "referer": self.referer,
            "user_agent": self.user_agent,
            "request_id": notes.request_id,
            "route": notes.route.as_deref(),
            "upstream": notes.upstream.server,
            "attempts": notes.upstream.attempts,
            "duration_ms": total.as_secs_f64() * 1000.0,
            "upstream_header_ms": notes.upstream.header_time.map(|t| t.as_secs_f64() * 1000.0),
            "trace_id": self.trace_id,
        })
        .to_string();
        line.push('\n');
        line
    }
}

fn version_name(version: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/3.0",
    }
}

fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

/// As nginx does: quotes, backslashes and bytes outside printable ASCII become `\xHH`, so a
/// client cannot forge log lines.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && byte != b'"' && byte != b'\\' || byte == b' ' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_line_is_nginx_combined_plus_gatehouse_fields() {
        let req = actix_web::test::TestRequest::get()
            .uri("/page?x=1")
            .peer_addr("203.0.113.7:5555".parse().unwrap())
            .insert_header((REFERER, "https://ref.test/"))
            .insert_header((USER_AGENT, "curl/8 \"evil\""))
            .to_http_request();
        let notes = RequestNotes {
            route: Some("site".into()),
            request_id: Some("abc-1".into()),
            upstream: UpstreamOutcome {
                server: Some("127.0.0.1:3000".into()),
                header_time: Some(Duration::from_millis(12)),
                attempts: 1,
            },
        };
        let entry = Entry::new(
            &req,
            200,
            notes,
            Instant::now(),
            AccessLogFormat::Combined,
            Some("0af7651916cd43dd8448eb211c80319c".into()),
        );
        let line = entry.render(512);
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "203.0.113.7 - -");
        let after_time = tail.split_once("] ").unwrap().1;
        assert!(
            after_time.starts_with(
                "\"GET /page?x=1 HTTP/1.1\" 200 512 \"https://ref.test/\" \"curl/8 \\x22evil\\x22\" rid=abc-1 route=site upstream=127.0.0.1:3000 attempts=1 rt="
            ),
            "{line}"
        );
        assert!(
            line.ends_with(" urt=0.012 trace=0af7651916cd43dd8448eb211c80319c\n"),
            "{line}"
        );
    }

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(escape("GET /a\"b\n"), "GET /a\\x22b\\x0A");
        assert_eq!(escape("naïve"), "na\\xC3\\xAFve");
    }
}
