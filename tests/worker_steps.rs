//! How a worker's tokens leave it (`WorkerService.Generate`, over real
//! gRPC): a Step per word when each word has its own time, and the words
//! already due gathered into one Step, so that at zero delay a batch's whole
//! text crosses each hop in one message. Either way every request's tokens
//! come in order, its last marked, and BatchDone closes the batch.

mod common;

use common::{expected_text, loopback, worker};
use horoscoper_proto::mesh::{
    Batch, BatchItem, GenerateRequest, Step, generate_request::Command, generate_response::Event,
    worker_service_client::WorkerServiceClient,
};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const PREFIXES: [&str; 3] = ["Aries", "a prefix of its own", "Pisces"];

/// Runs one batch of `PREFIXES` on a worker with these delays; returns its
/// Steps.
async fn steps_of_one_batch(delay_ms: &str) -> Vec<Step> {
    let worker = worker(
        loopback().await,
        &["--min-delay-ms", delay_ms, "--max-delay-ms", delay_ms],
    )
    .await;
    let mut client = WorkerServiceClient::<Channel>::connect(worker.url())
        .await
        .unwrap();
    let (commands, sent) = mpsc::channel(4);
    let mut events = client
        .generate(ReceiverStream::new(sent))
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().unwrap().event;
    assert!(matches!(first, Some(Event::Ready(_))), "{first:?}");

    let items = PREFIXES
        .iter()
        .zip(1..)
        .map(|(prefix, request_id)| BatchItem {
            request_id,
            prefix: prefix.to_string(),
            log_id: format!("steps-{request_id}"),
            ..BatchItem::default()
        })
        .collect();
    commands
        .send(GenerateRequest {
            command: Some(Command::Batch(Batch { batch_id: 7, items })),
        })
        .await
        .unwrap();

    let mut steps = Vec::new();
    loop {
        match events.message().await.unwrap().unwrap().event {
            Some(Event::Step(step)) => {
                assert_eq!(step.batch_id, 7);
                steps.push(step);
            }
            Some(Event::Done(done)) => {
                assert_eq!(done.batch_id, 7);
                break;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    drop(commands);
    worker.stop().await;

    // Each request's tokens, in the order they came, make its text; the
    // last is marked, and nothing follows it.
    let mut texts: HashMap<u64, (String, bool)> = HashMap::new();
    for token in steps.iter().flat_map(|step| &step.tokens) {
        let (text, ended) = texts.entry(token.request_id).or_default();
        assert!(!*ended, "a token after request {}'s last", token.request_id);
        text.push_str(&token.text);
        *ended = token.last;
    }
    for (prefix, request_id) in PREFIXES.iter().zip(1..) {
        assert_eq!(
            texts.get(&request_id),
            Some(&(expected_text(prefix), true)),
            "{prefix}"
        );
    }
    steps
}

#[tokio::test]
async fn at_zero_delay_a_batch_comes_in_one_step() {
    let steps = steps_of_one_batch("0").await;
    assert_eq!(steps.len(), 1, "{steps:#?}");
}

#[tokio::test]
async fn words_with_times_of_their_own_come_a_step_each() {
    // 25 to 60 words in 600 ms: a word every 10 to 36 ms. A machine that
    // stalls may gather a few into one Step; most come alone.
    let steps = steps_of_one_batch("600").await;
    let longest = PREFIXES
        .iter()
        .map(|prefix| expected_text(prefix).split(' ').count())
        .max()
        .unwrap();
    assert!(
        steps.len() >= longest / 2,
        "{} steps for {longest} words",
        steps.len()
    );
}
