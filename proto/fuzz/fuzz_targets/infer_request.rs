//! The public request as the gateway gets it: decode, then validate.
#![no_main]

use horoscoper_proto::v1::InferRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = InferRequest::decode(data) {
        let _ = horoscoper_gateway::validate(&request);
        let _ = tonic::Status::from(horoscoper_gateway::Error::PrefixTooLong { chars: request.prefix.len() });
    }
});
