//! W3C trace context as it travels: in a call's gRPC metadata (a client's
//! call to the gateway), and in a plain map inside a message (many requests
//! on one stream: gateway → batcher, batcher → worker). The process's
//! global propagator reads and writes it (W3C `traceparent`, `tracestate`).
//!
//! What travels in a message is bounded, whatever a caller sent: at most
//! [`MAX_TRACESTATE_CHARS`] of `tracestate`, trimmed as W3C trace context
//! lets a participant trim it (members over 128 characters first, then
//! members from the end).

use opentelemetry::{Context, propagation::Extractor};
use std::collections::HashMap;
use tonic::metadata::MetadataMap;

/// The context a caller sent in a call's metadata, if any.
pub fn from_metadata(metadata: &MetadataMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&MetadataReader(metadata))
    })
}

/// The context carried in a message's map, if any.
pub fn from_map(map: &HashMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(map))
}

/// Most characters of `tracestate` passed on in a message: what W3C trace
/// context asks every participant to propagate at least.
pub const MAX_TRACESTATE_CHARS: usize = 512;

/// Members of `tracestate` longer than this are the first dropped (W3C).
const LONG_MEMBER_CHARS: usize = 128;

/// `context` as a map, to travel inside a message; its `tracestate`
/// trimmed to [`MAX_TRACESTATE_CHARS`].
pub fn to_map(context: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut map)
    });
    if let Some(state) = map.remove(TRACESTATE) {
        let trimmed = trim_tracestate(&state);
        if !trimmed.is_empty() {
            map.insert(TRACESTATE.to_owned(), trimmed);
        }
    }
    map
}

const TRACESTATE: &str = "tracestate";

/// `tracestate` within [`MAX_TRACESTATE_CHARS`]: as it is if it fits;
/// otherwise without its members over 128 characters, then without members
/// from its end until it fits.
fn trim_tracestate(state: &str) -> String {
    if state.len() <= MAX_TRACESTATE_CHARS {
        return state.to_owned();
    }
    let mut members: Vec<&str> = state
        .split(',')
        .map(str::trim)
        .filter(|member| !member.is_empty() && member.len() <= LONG_MEMBER_CHARS)
        .collect();
    let joined_len = |members: &[&str]| {
        members.iter().map(|member| member.len()).sum::<usize>() + members.len().saturating_sub(1)
    };
    while joined_len(&members) > MAX_TRACESTATE_CHARS {
        members.pop();
    }
    members.join(",")
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

    fn member(key: usize, len: usize) -> String {
        let key = format!("k{key}");
        format!("{key}={}", "v".repeat(len - key.len() - 1))
    }

    #[test]
    fn a_tracestate_that_fits_is_kept_whole() {
        let state = (0..4).map(|i| member(i, 100)).collect::<Vec<_>>().join(",");
        assert_eq!(trim_tracestate(&state), state);
        assert_eq!(trim_tracestate(""), "");
    }

    #[test]
    fn long_members_go_first_then_members_from_the_end() {
        // 32 members near W3C's limits (keys and values of some 250
        // characters): some 16 KB, every member long.
        let huge = (0..32)
            .map(|i| member(i, 500))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(trim_tracestate(&huge), "");
        // Short members kept in order, the long one dropped first.
        let mixed = [
            member(0, 100),
            member(1, 300),
            member(2, 100),
            member(3, 100),
        ]
        .into_iter()
        .chain((4..10).map(|i| member(i, 100)))
        .collect::<Vec<_>>()
        .join(",");
        let trimmed = trim_tracestate(&mixed);
        assert!(trimmed.len() <= MAX_TRACESTATE_CHARS, "{}", trimmed.len());
        let kept: Vec<&str> = trimmed
            .split(',')
            .map(|m| m.split('=').next().unwrap())
            .collect();
        assert_eq!(kept, ["k0", "k2", "k3", "k4", "k5"]);
    }

    #[test]
    fn a_message_carries_a_bounded_trace_context() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let huge = (0..32)
            .map(|i| member(i, 100))
            .collect::<Vec<_>>()
            .join(",");
        let sent = HashMap::from([
            (
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            ),
            (TRACESTATE.to_owned(), huge),
        ]);
        let map = to_map(&from_map(&sent));
        assert_eq!(map["traceparent"], sent["traceparent"]);
        assert!(map[TRACESTATE].len() <= MAX_TRACESTATE_CHARS);
        assert!(sent[TRACESTATE].starts_with(&map[TRACESTATE]));
    }
}
