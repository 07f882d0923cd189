//! W3C trace context across hops: out of gRPC metadata (a client's call to
//! the gateway), and into and out of a plain map carried in a message (many
//! requests on one stream: gateway → batcher, batcher → worker).
//!
//! A span's context is its OpenTelemetry span's when traces are exported,
//! its [`span_ids`](crate::span_ids) otherwise; these functions serve both.

use crate::span_ids;
use opentelemetry::{
    Context,
    propagation::Extractor,
    trace::{SpanContext, TraceContextExt as _},
};
use std::collections::HashMap;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The context a caller sent in the request's metadata (`traceparent`), if
/// any: the parent of the span that serves it.
pub fn extract(metadata: &MetadataMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&MetadataReader(metadata))
    })
}

/// Makes `span` a child of the caller's span, when the caller sent one.
pub fn set_parent_from(span: &tracing::Span, metadata: &MetadataMap) {
    set_parent(span, extract(metadata));
}

/// The span's context: its ids, with no OpenTelemetry span behind them
/// when nothing is exported.
fn context(span: &tracing::Span) -> Context {
    match span_ids::get(span) {
        Some(ids) => Context::new().with_remote_span_context(ids),
        None => span.context(),
    }
}

/// The span's own span context (invalid when it has none).
fn span_context(span: &tracing::Span) -> SpanContext {
    span_ids::get(span).unwrap_or_else(|| span.context().span().span_context().clone())
}

/// The span's context as a map, to travel inside a message.
pub fn to_map(span: &tracing::Span) -> HashMap<String, String> {
    let context = context(span);
    let mut map = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut map)
    });
    map
}

/// The context carried in a message's map.
pub fn from_map(map: &HashMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(map))
}

/// Makes `span` a child of the span whose context a message carried, when
/// it carried one.
pub fn set_parent_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    set_parent(span, from_map(map));
}

/// Makes `parent` the parent of `span`, when it is a span's context.
fn set_parent(span: &tracing::Span, parent: Context) {
    let caller = parent.span().span_context().clone();
    if caller.is_valid() && !span_ids::adopt(span, &caller) {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to `to` (fan-in: a batch span to the requests it serves),
/// when `span` is exported.
pub fn link(span: &tracing::Span, to: &tracing::Span) {
    if span_ids::get(span).is_none() {
        span.add_link(span_context(to));
    }
}

/// The span's trace id in hex, for logs and links; empty when it has none.
pub fn trace_id(span: &tracing::Span) -> String {
    let span_context = span_context(span);
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

struct MetadataReader<'a>(&'a MetadataMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_ids::{self, SpanIds};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn spans_with_ids_only_carry_the_callers_trace_across_hops() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let subscriber = tracing_subscriber::registry().with(SpanIds::default());
        tracing::subscriber::with_default(subscriber, || {
            let mut metadata = MetadataMap::new();
            metadata.insert(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                    .parse()
                    .unwrap(),
            );
            let gateway = tracing::info_span!("infer");
            set_parent_from(&gateway, &metadata);
            assert_eq!(trace_id(&gateway), "0af7651916cd43dd8448eb211c80319c");

            let map = to_map(&gateway);
            let own = span_ids::get(&gateway).unwrap().span_id();
            assert_eq!(
                map["traceparent"],
                format!("00-0af7651916cd43dd8448eb211c80319c-{own}-01")
            );

            let batcher = tracing::info_span!("submit");
            set_parent_from_map(&batcher, &map);
            assert_eq!(trace_id(&batcher), "0af7651916cd43dd8448eb211c80319c");

            let fresh = tracing::info_span!("no caller");
            set_parent_from_map(&fresh, &HashMap::new());
            assert_eq!(trace_id(&fresh).len(), 32);
            assert_ne!(trace_id(&fresh), trace_id(&batcher));
        });
    }
}
