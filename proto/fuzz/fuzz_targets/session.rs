//! A gateway's session with the batcher, driven through the batcher's own
//! session and admission code: the input is a sequence of length-delimited
//! `SessionRequest`s (submits with any ids, prefixes, trace context and
//! deadlines; departures, known or not), the queue has no worker, and the
//! clock is paused so that every request waits out its time at once. The
//! session must end, send replies only to requests it was given, end each
//! request at most once per submission, and end every request that was
//! neither withdrawn nor cut short by the session failing.
#![no_main]

use horoscoper_batcher::{BatchingArgs, fuzzing};
use horoscoper_proto::{
    mesh::{SessionRequest, reply::Outcome, session_request::Command},
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use std::collections::HashMap;

/// Enough commands to fill the batcher (`--max-requests 4`) and go past it.
const MAX_COMMANDS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let mut commands = Vec::new();
    while !input.is_empty() && commands.len() < MAX_COMMANDS {
        match SessionRequest::decode_length_delimited(&mut input) {
            Ok(command) => commands.push(command),
            Err(_) => break,
        }
    }
    // An id may be used again once its request has ended.
    let mut submitted: HashMap<u64, usize> = HashMap::new();
    for command in &commands {
        if let Some(Command::Submit(submit)) = &command.command {
            *submitted.entry(submit.id).or_default() += 1;
        }
    }
    // Requests that must end: submitted once, never withdrawn.
    let mut must_end: HashMap<u64, bool> = HashMap::new();
    for command in &commands {
        match &command.command {
            Some(Command::Submit(submit)) => {
                must_end
                    .entry(submit.id)
                    .and_modify(|once| *once = false)
                    .or_insert(true);
            }
            Some(Command::Leave(leave)) => {
                must_end.insert(leave.id, false);
            }
            None => {}
        }
    }
    let batching = BatchingArgs {
        batch_size: 2,
        batch_window_ms: 5,
        request_ttl_ms: 1_000,
        max_requests: 4,
        load_interval_ms: 5,
        batching: Default::default(),
    }
    .validate()
    .expect("valid batching");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let sent = runtime.block_on(fuzzing::session(batching, commands));

    let mut ended: HashMap<u64, usize> = HashMap::new();
    let mut failed = false;
    for message in sent {
        let Ok(response) = message else {
            failed = true;
            continue;
        };
        for reply in response.replies {
            assert!(
                submitted.contains_key(&reply.id),
                "a reply to {} it was never given",
                reply.id
            );
            let ends = match reply.outcome {
                Some(Outcome::Failure(_)) => true,
                Some(Outcome::Token(token)) => token.last,
                Some(Outcome::Tokens(tokens)) => tokens.tokens.iter().any(|t| t.last),
                None => false,
            };
            if ends {
                *ended.entry(reply.id).or_default() += 1;
            }
        }
    }
    for (id, count) in &ended {
        let times = submitted[id];
        assert!(*count <= times, "request {id} ended {count} times, submitted {times}");
    }
    if !failed {
        for (id, must) in must_end {
            if must {
                assert!(ended.contains_key(&id), "request {id} never ended");
            }
        }
    }
});
