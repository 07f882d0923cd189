//! W3C trace context across hops: out of gRPC metadata (a client's call to
//! the gateway), and into and out of a plain map carried in a message (many
//! requests on one stream: gateway → batcher, batcher → worker).

use opentelemetry::{Context, propagation::Extractor, trace::TraceContextExt as _};
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

/// The span's context as a map, to travel inside a message.
pub fn to_map(span: &tracing::Span) -> HashMap<String, String> {
    let context = span.context();
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
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The span's trace id in hex, for logs and links; empty when it has none.
pub fn trace_id(span: &tracing::Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
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
