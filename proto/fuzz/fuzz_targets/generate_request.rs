//! The worker's command from the batcher: decode, then run a batch to its end
//! (the worker's own checks: empty batch, duplicate ids).
#![no_main]

use horoscoper_proto::mesh::{GenerateRequest, generate_request::Command};
use horoscoper_worker::{Corpus, Lockstep};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use std::sync::LazyLock;

static CORPUS: LazyLock<Corpus> = LazyLock::new(Corpus::built_in);

fuzz_target!(|data: &[u8]| {
    let Ok(request) = GenerateRequest::decode(data) else {
        return;
    };
    if let Some(Command::Batch(batch)) = request.command
        && let Ok(mut running) = Lockstep::start(batch, &CORPUS)
    {
        while !running.is_done() {
            running.step();
        }
    }
});
