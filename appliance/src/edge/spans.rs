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
    Some(traces.child(&parent, name, kind))
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
