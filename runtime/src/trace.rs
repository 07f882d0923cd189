//! A span's place in its trace, across hops: a span made the child of the
//! caller's (from metadata or a message's map), a span's context put into a
//! message, fan-in links, trace ids for logs. The encoding itself is
//! [`horoscoper_proto::trace_context`].
//!
//! A span's context is its OpenTelemetry span's when traces are exported,
//! its [`span_ids`](crate::span_ids) otherwise; these functions serve both.

use crate::span_ids;
use horoscoper_proto::trace_context;
use opentelemetry::{
    Context,
    trace::{SpanContext, TraceContextExt as _},
};
use std::collections::HashMap;
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span` a child of the caller's span, when the caller sent one.
pub fn set_parent_from(span: &tracing::Span, metadata: &MetadataMap) {
    set_parent(span, trace_context::from_metadata(metadata));
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
    trace_context::to_map(&context(span))
}

/// Makes `span` a child of the span whose context a message carried, when
/// it carried one.
pub fn set_parent_from_map(span: &tracing::Span, map: &HashMap<String, String>) {
    set_parent(span, trace_context::from_map(map));
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
