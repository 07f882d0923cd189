//! W3C trace context as it travels: in a call's gRPC metadata (a client's
//! call to the gateway), and in a plain map inside a message (many requests
//! on one stream: gateway → batcher, batcher → worker). The process's
//! global propagator reads and writes it (W3C `traceparent`, `tracestate`).

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

/// `context` as a map, to travel inside a message.
pub fn to_map(context: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut map)
    });
    map
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
