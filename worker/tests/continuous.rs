//! Continuous batching over real gRPC: a worker on port 0 run with
//! `--batching continuous`, driven by tonic clients as batchers drive it.

mod common;

use horoscoper_proto::mesh::{
    Batch, BatchItem, Cancel, GenerateRequest, GenerateResponse, Room, generate_request::Command,
    generate_response::Event,
};
use horoscoper_runtime::args::BatchingMode;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Streaming};

/// A request's whole text by the determinism rule.
fn expected(prefix: &str) -> String {
    let corpus = horoscoper_worker::Corpus::built_in();
    horoscoper_worker::choose(&corpus, prefix).1.to_string()
}

struct Stream {
    down: mpsc::Sender<GenerateRequest>,
    up: Streaming<GenerateResponse>,
    /// Every Room the worker said, in order.
    rooms: Vec<Room>,
}

impl Stream {
    async fn send(&self, command: Command) {
        let request = GenerateRequest {
            command: Some(command),
        };
        self.down.send(request).await.unwrap();
    }

    /// The next event other than Room (which goes to `rooms`).
    async fn next(&mut self) -> Event {
        loop {
            match self.up.message().await.unwrap().unwrap().event.unwrap() {
                Event::Room(room) => self.rooms.push(room),
                event => return event,
            }
        }
    }

    /// Reads up to the next Room.
    async fn room(&mut self) -> Room {
        let seen = self.rooms.len();
        while self.rooms.len() == seen {
            match self.up.message().await.unwrap().unwrap().event.unwrap() {
                Event::Room(room) => self.rooms.push(room),
                other => panic!("expected Room, got {other:?}"),
            }
        }
        self.rooms[seen]
    }

    /// Joins `prefixes` as batch `batch_id`, request ids from `first`.
    async fn join(&self, batch_id: u64, first: u64, prefixes: &[&str]) {
        let items = prefixes
            .iter()
            .zip(first..)
            .map(|(prefix, request_id)| BatchItem {
                request_id,
                prefix: prefix.to_string(),
                ..Default::default()
            })
            .collect();
        self.send(Command::Batch(Batch { batch_id, items })).await;
    }
}

/// A continuous worker of 4 slots whose requests each take `delay_ms`
/// alone; its url.
async fn worker(delay_ms: u64, stop: &CancellationToken) -> String {
    worker_of(delay_ms, 4, stop).await
}

async fn worker_of(delay_ms: u64, slots: usize, stop: &CancellationToken) -> String {
    common::start("w-cont", delay_ms, BatchingMode::Continuous, slots, stop).await
}

/// A stream to the worker, past its Ready, which says it takes joins.
async fn open(url: &str) -> Stream {
    let (down, up) = common::connect(url).await;
    let mut stream = Stream {
        down,
        up,
        rooms: Vec::new(),
    };
    match stream.next().await {
        Event::Ready(ready) => {
            assert!(ready.joins, "continuous: a batch joins the steps");
            assert!(!ready.offers && !ready.busy_notices, "it makes no offers");
            assert!(ready.resumes);
        }
        other => panic!("expected Ready first, got {other:?}"),
    }
    stream
}

/// What came down a stream until `batches` BatchDones: each request's text
/// and the `shared` of its last token, and the order of events as
/// (batch id, done).
#[derive(Default)]
struct Seen {
    texts: HashMap<u64, String>,
    shared: HashMap<u64, u32>,
    order: Vec<(u64, bool)>,
}

async fn until_done(stream: &mut Stream, batches: usize) -> Seen {
    let mut seen = Seen::default();
    let mut done = 0;
    while done < batches {
        match stream.next().await {
            Event::Step(step) => {
                seen.order.push((step.batch_id, false));
                for token in step.tokens {
                    seen.texts
                        .entry(token.request_id)
                        .or_default()
                        .push_str(&token.text);
                    if token.last {
                        seen.shared.insert(token.request_id, token.shared);
                    }
                }
            }
            Event::Done(end) => {
                seen.order.push((end.batch_id, true));
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn a_batch_joins_the_steps_under_way_and_each_ends_whole_with_its_own_done() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let url = worker(3000, &stop).await;
    let mut stream = open(&url).await;
    stream.join(1, 1, &["aries", "hello"]).await;
    // Once the first batch has stepped, a second joins it.
    let Event::Step(first) = stream.next().await else {
        panic!("a step first");
    };
    assert_eq!(first.batch_id, 1);
    stream.join(2, 3, &["taurus"]).await;
    let seen = until_done(&mut stream, 2).await;
    let mut texts = seen.texts;
    for token in first.tokens {
        let text = texts.remove(&token.request_id).unwrap_or_default();
        texts.insert(token.request_id, token.text + &text);
    }
    for (request_id, prefix) in [(1, "aries"), (2, "hello"), (3, "taurus")] {
        assert_eq!(texts[&request_id], expected(prefix), "request {request_id}");
    }
    let first_of_2 = seen.order.iter().position(|(b, _)| *b == 2).unwrap();
    let done_1 = seen.order.iter().position(|e| *e == (1, true)).unwrap();
    assert!(first_of_2 < done_1, "batch 2 generated while batch 1 did");
    assert_eq!(seen.shared[&3], 3, "three requests shared its steps");
}

#[tokio::test]
async fn a_cancelled_request_stops_at_once_and_a_stream_that_ends_leaves_others_whole() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let url = worker(2000, &stop).await;
    let mut a = open(&url).await;
    let b = open(&url).await;
    a.join(1, 1, &["aries", "virgo"]).await;
    b.join(1, 1, &["leo"]).await;
    let Event::Step(_) = a.next().await else {
        panic!("a step first");
    };
    // Another batcher's stream ends mid-generation: its request leaves.
    drop(b);
    a.send(Command::Cancel(Cancel {
        batch_id: 1,
        request_id: 2,
    }))
    .await;
    let seen = until_done(&mut a, 1).await;
    assert!(
        seen.texts.get(&2).is_none_or(|t| *t != expected("virgo")),
        "a cancelled request does not run to its end"
    );
    assert!(expected("aries").ends_with(&seen.texts[&1]));
    assert_eq!(seen.order.last(), Some(&(1, true)));
}

#[tokio::test]
async fn a_batch_id_still_generating_is_refused() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let url = worker(2000, &stop).await;
    let mut stream = open(&url).await;
    stream.join(1, 1, &["aries"]).await;
    stream.join(1, 2, &["leo"]).await;
    let status = loop {
        match stream.up.message().await {
            Ok(Some(_)) => continue,
            Err(status) => break status,
            Ok(None) => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("batch 1"), "{}", status.message());
}

#[tokio::test]
async fn every_stream_shares_the_slots_and_a_batch_beyond_them_waits_its_turn() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let url = worker_of(300, 2, &stop).await;
    let mut a = open(&url).await;
    assert_eq!(a.room().await, Room { free: 2, taken: 0 });
    a.join(1, 1, &["aries", "hello"]).await;
    assert_eq!(a.room().await, Room { free: 0, taken: 2 });
    let mut b = open(&url).await;
    assert_eq!(
        b.room().await,
        Room { free: 0, taken: 0 },
        "another's requests fill it"
    );
    // B sends anyway, as a batcher whose Room crossed A's batch would.
    b.join(1, 1, &["leo"]).await;
    let seen_b = until_done(&mut b, 1).await;
    let seen_a = until_done(&mut a, 1).await;
    // It took the slot of A's shorter request once that ended: never three
    // at once.
    assert_eq!((seen_a.shared[&1], seen_a.shared[&2]), (2, 2));
    assert_eq!(seen_b.texts[&1], expected("leo"));
    assert_eq!(seen_b.shared[&1], 2, "it waited for a free slot");
    assert!(
        b.rooms.contains(&Room { free: 0, taken: 1 }),
        "its batch holds the slot it waits for: {:?}",
        b.rooms
    );
    // Once every request has ended, every slot is free again.
    while b.rooms.last() != Some(&Room { free: 2, taken: 1 }) {
        b.room().await;
    }
}
