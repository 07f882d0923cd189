//! The corpus loader (`--corpus`, the original's `;`-separated CSV), then a
//! choice from what it loaded.
#![no_main]

use horoscoper_worker::{Corpus, choose};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(corpus) = Corpus::parse(data, None) {
        let _ = choose(&corpus, "a prefix");
    }
});
