//! The spans of a request's phases, when traces are exported: children of the request's
//! server span (started by the finish phase), each ended when dropped.

use actix_web::{HttpMessage, HttpRequest};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt};

use super::EdgeState;

/// The server span of a request, in its extensions.
#[derive(Clone)]
pub(crate) struct RequestSpan(pub(crate) Context);

/// A child span `name` of `req`'s server span; none without traces.
pub(crate) fn phase(
    req: &HttpRequest,
    state: &EdgeState,
    name: &'static str,
    kind: SpanKind,
) -> Option<Context> {
    let traces = state.traces()?;
    let parent = req.extensions().get::<RequestSpan>()?.0.clone();
    traces.child(&parent, name, kind)
}

/// Writes the trace context the upstream continues under into `headers`: the upstream call's
/// span, or the request's own when that is not recorded.
pub(crate) fn propagate(
    req: &HttpRequest,
    state: &EdgeState,
    call: Option<&Context>,
    headers: &mut actix_web::http::header::HeaderMap,
) {
    let Some(traces) = state.traces() else {
        return;
    };
    match call {
        Some(cx) => traces.inject(cx, headers),
        None => {
            if let Some(server) = req.extensions().get::<RequestSpan>() {
                traces.inject(&server.0, headers);
            }
        }
    }
}

/// Sets `key` to `value` on `span`'s span, when there is one.
pub(crate) fn note(
    span: Option<&Context>,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    if let Some(cx) = span {
        cx.span()
            .set_attribute(opentelemetry::KeyValue::new(key, value));
    }
}
