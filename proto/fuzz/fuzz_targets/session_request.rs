//! The batcher's commands from the gateway (requests and departures): decode.
#![no_main]

use horoscoper_proto::mesh::SessionRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let _ = SessionRequest::decode(data);
});
