//! The batcher's request from the gateway: decode.
#![no_main]

use horoscoper_proto::mesh::SubmitRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let _ = SubmitRequest::decode(data);
});
