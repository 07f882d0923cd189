//! Trace and span ids for spans that nothing exports.
//!
//! Without an OTLP endpoint, no span leaves the process, yet logs still
//! carry a request's trace id and the trace context still crosses every
//! hop. That needs only ids, not OpenTelemetry spans, which cost every
//! request their attributes, timestamps and SDK span, built for nobody.
//! [`SpanIds`] gives each span a W3C span context and nothing more:
//!
//! - a span whose parent has ids takes the parent's trace id and flags;
//! - a root span starts a trace of its own, sampled, as OpenTelemetry's
//!   default sampler would;
//! - [`adopt`] makes a span continue a caller's trace (its `traceparent`).
//!
//! [`trace_context`](crate::trace_context) reads a span's ids from here
//! when the span has them, and from OpenTelemetry otherwise.

use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::{
    Subscriber,
    span::{Attributes, Id},
};
use tracing_subscriber::{
    Registry,
    layer::{Context, Layer},
    registry::LookupSpan,
};

/// The layer that gives spans their ids.
#[derive(Debug, Default)]
pub struct SpanIds {
    ids: RandomIdGenerator,
}

/// A span's ids, kept in the span's extensions.
#[derive(Clone, Debug)]
struct Ids(SpanContext);

impl<S> Layer<S> for SpanIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Ids>().map(|ids| ids.0.clone()));
        let context = match parent {
            Some(parent) => SpanContext::new(
                parent.trace_id(),
                self.ids.new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            ),
            None => SpanContext::new(
                self.ids.new_trace_id(),
                self.ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
        };
        span.extensions_mut().insert(Ids(context));
    }
}

/// The span's ids, when [`SpanIds`] gave it some.
pub fn get(span: &tracing::Span) -> Option<SpanContext> {
    span.with_subscriber(|(id, dispatch)| {
        let data = dispatch.downcast_ref::<Registry>()?.span(id)?;
        let extensions = data.extensions();
        extensions.get::<Ids>().map(|ids| ids.0.clone())
    })
    .flatten()
}

/// Makes the span continue the trace of `caller` (a remote span context):
/// its trace id, flags and state, under a span id of its own. Returns false
/// when [`SpanIds`] gave the span no ids. Call before the span has children:
/// they took the trace id they found.
pub fn adopt(span: &tracing::Span, caller: &SpanContext) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let Some(data) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        else {
            return false;
        };
        let mut extensions = data.extensions_mut();
        let Some(Ids(own)) = extensions.get_mut::<Ids>() else {
            return false;
        };
        *own = SpanContext::new(
            caller.trace_id(),
            own.span_id(),
            caller.trace_flags(),
            false,
            caller.trace_state().clone(),
        );
        true
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};
    use tracing_subscriber::layer::SubscriberExt as _;

    fn with_ids(f: impl FnOnce()) {
        let subscriber = tracing_subscriber::registry().with(SpanIds::default());
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn a_root_span_starts_a_sampled_trace_of_its_own() {
        with_ids(|| {
            let a = get(&tracing::info_span!("a")).unwrap();
            let b = get(&tracing::info_span!("b")).unwrap();
            assert!(a.is_valid() && b.is_valid());
            assert!(a.is_sampled());
            assert_ne!(a.trace_id(), b.trace_id());
        });
    }

    #[test]
    fn a_child_continues_its_parents_trace_under_a_span_id_of_its_own() {
        with_ids(|| {
            let parent = tracing::info_span!("parent");
            let explicit = tracing::info_span!(parent: &parent, "explicit");
            let current = parent.in_scope(|| tracing::info_span!("current"));
            let root = parent.in_scope(|| tracing::info_span!(parent: None, "root"));
            let parent = get(&parent).unwrap();
            for child in [&explicit, &current] {
                let child = get(child).unwrap();
                assert_eq!(child.trace_id(), parent.trace_id());
                assert_ne!(child.span_id(), parent.span_id());
            }
            assert_ne!(get(&root).unwrap().trace_id(), parent.trace_id());
        });
    }

    #[test]
    fn an_adopted_callers_trace_reaches_the_spans_children() {
        with_ids(|| {
            let caller = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap(),
                TraceFlags::default(),
                true,
                TraceState::NONE,
            );
            let span = tracing::info_span!("served");
            let own = get(&span).unwrap().span_id();
            assert!(adopt(&span, &caller));
            let adopted = get(&span).unwrap();
            assert_eq!(adopted.trace_id(), caller.trace_id());
            assert_eq!(adopted.span_id(), own);
            assert!(!adopted.is_sampled(), "the caller's flags");
            let child = get(&tracing::info_span!(parent: &span, "child")).unwrap();
            assert_eq!(child.trace_id(), caller.trace_id());
        });
    }

    #[test]
    fn without_the_layer_spans_have_no_ids() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("a");
            assert!(get(&span).is_none());
            assert!(!adopt(&span, &SpanContext::NONE));
        });
    }
}
