//! `WorkerService.Generate` over real gRPC: a worker on port 0, driven by a
//! tonic client as the batcher drives it.

mod common;

use horoscoper_proto::mesh::{
    Batch, BatchItem, Cancel, Demand, GenerateRequest, GenerateResponse, Pass,
    generate_request::Command, generate_response::Event,
};
use horoscoper_runtime::args::BatchingMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Streaming};

struct Session {
    url: String,
    down: mpsc::Sender<GenerateRequest>,
    up: Streaming<GenerateResponse>,
    /// Cancelled, the worker begins its drain.
    stop: CancellationToken,
    _stop: tokio_util::sync::DropGuard,
}

impl Session {
    async fn send(&self, command: Command) {
        self.down
            .send(GenerateRequest {
                command: Some(command),
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Event {
        self.up.message().await.unwrap().unwrap().event.unwrap()
    }
}

/// A worker whose batches take exactly `delay_ms`, and an open stream to it.
async fn session(delay_ms: u64) -> Session {
    let stop = CancellationToken::new();
    let url = common::start("w-test", delay_ms, BatchingMode::Static, 4, &stop).await;
    open(url, stop).await
}

/// A stream to the worker at `url`, past its Ready.
async fn open(url: String, stop: CancellationToken) -> Session {
    let (down, up) = common::connect(&url).await;
    let mut session = Session {
        url,
        down,
        up,
        stop: stop.clone(),
        _stop: stop.drop_guard(),
    };
    match session.next().await {
        Event::Ready(ready) => {
            assert_eq!(ready.worker_id, "w-test");
            assert!(ready.resumes, "it skips what a re-run's client has");
            assert!(ready.offers, "it is shared by offers");
            assert!(ready.busy_notices, "it answers a call it cannot take");
        }
        other => panic!("expected Ready first, got {other:?}"),
    }
    session
}

impl Session {
    /// A second stream to the same worker, as from another batcher.
    async fn another(&self) -> Session {
        open(self.url.clone(), self.stop.clone()).await
    }
}

/// A batcher's demand, sent to every worker as it changes.
fn demand(waiting: u32, ready: bool) -> Command {
    Command::Demand(Demand {
        waiting,
        ready,
        calls: false,
    })
}

/// A batcher's demand, sent to this worker alone: a call.
fn call(waiting: u32, ready: bool) -> Command {
    Command::Demand(Demand {
        waiting,
        ready,
        calls: true,
    })
}

fn batch(batch_id: u64, prefixes: &[&str]) -> Command {
    Command::Batch(Batch {
        batch_id,
        items: prefixes
            .iter()
            .enumerate()
            .map(|(i, prefix)| BatchItem {
                request_id: i as u64 + 1,
                prefix: prefix.to_string(),
                ..Default::default()
            })
            .collect(),
    })
}

fn cancel(batch_id: u64, request_id: u64) -> Command {
    Command::Cancel(Cancel {
        batch_id,
        request_id,
    })
}

fn expected(prefix: &str) -> String {
    let corpus = horoscoper_worker::Corpus::built_in();
    horoscoper_worker::choose(&corpus, prefix).1.to_string()
}

/// Runs a batch of `prefixes` as batch 7 and checks that each request's
/// tokens make its text, in order, its last marked; returns how many Steps
/// it came in.
async fn run_batch(s: &mut Session, prefixes: &[&str]) -> usize {
    s.send(batch(7, prefixes)).await;
    let mut texts = vec![String::new(); prefixes.len()];
    let mut steps = 0;
    loop {
        match s.next().await {
            Event::Step(step) => {
                assert_eq!(step.batch_id, 7);
                steps += 1;
                for token in step.tokens {
                    let text = &mut texts[token.request_id as usize - 1];
                    text.push_str(&token.text);
                    assert_eq!(
                        token.last,
                        *text == expected(prefixes[token.request_id as usize - 1])
                    );
                }
            }
            Event::Done(done) => {
                assert_eq!(done.batch_id, 7);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (prefix, text) in prefixes.iter().zip(&texts) {
        assert_eq!(*text, expected(prefix));
    }
    steps
}

#[tokio::test]
async fn at_zero_delay_a_batch_streams_whole_in_one_step_then_ends() {
    let mut s = session(0).await;
    // Every word is due at once: the whole batch goes in one Step, not a
    // message (and a wake-up at every hop) per word.
    assert_eq!(run_batch(&mut s, &["hello", "aries", "🦀 rust"]).await, 1);

    // The stream goes on: a second batch runs on it.
    s.send(batch(8, &["again"])).await;
    assert!(matches!(s.next().await, Event::Step(step) if step.batch_id == 8));
}

#[tokio::test]
async fn words_with_times_of_their_own_come_in_lockstep_a_step_each() {
    // 25 to 60 words in 600 ms: a word every 10 to 36 ms. A machine that
    // stalls may gather the words due meanwhile into one Step; most come
    // alone.
    let mut s = session(600).await;
    let prefixes = ["hello", "aries", "🦀 rust"];
    let steps = run_batch(&mut s, &prefixes).await;
    let longest = prefixes
        .iter()
        .map(|p| expected(p).split(' ').count())
        .max()
        .unwrap();
    assert!(
        (longest / 2..=longest).contains(&steps),
        "{steps} steps for {longest} words"
    );
}

#[tokio::test]
async fn a_cancelled_request_stops_within_one_step_and_an_empty_batch_ends_at_once() {
    // About 30 steps over 9 s: some 300 ms a step.
    let mut s = session(9000).await;
    s.send(batch(1, &["hello", "aries"])).await;
    let Event::Step(first) = s.next().await else {
        panic!("expected a step")
    };
    assert_eq!(first.tokens.len(), 2);

    s.send(cancel(1, 1)).await;
    let Event::Step(second) = s.next().await else {
        panic!("expected a step")
    };
    let ids: Vec<u64> = second.tokens.iter().map(|t| t.request_id).collect();
    assert_eq!(ids, [2], "request 1 emits nothing after its cancel");

    s.send(cancel(1, 2)).await;
    match s.next().await {
        Event::Done(done) => assert_eq!(done.batch_id, 1),
        other => panic!("a batch whose requests all left ends at once, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_batch_while_one_runs_is_refused() {
    let mut s = session(9000).await;
    s.send(batch(1, &["a"])).await;
    s.send(batch(2, &["b"])).await;
    let status = loop {
        match s.up.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("one batch at a time"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_empty_batch_is_invalid() {
    let mut s = session(0).await;
    s.send(batch(3, &[])).await;
    let status = s.up.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "batch 3 has no requests");
}

#[tokio::test]
async fn a_rerun_gets_only_the_tokens_its_client_lacks() {
    let mut s = session(0).await;
    let text = expected("hello");
    let words: Vec<&str> = text.split(' ').collect();
    let Command::Batch(mut resumed) = batch(4, &["hello", "aries"]) else {
        unreachable!()
    };
    resumed.items[0].delivered = words.len() as u32 - 2;
    resumed.items[1].delivered = 1_000_000; // more than its whole text
    s.send(Command::Batch(resumed)).await;
    let Event::Step(step) = s.next().await else {
        panic!("expected a step")
    };
    let tokens: Vec<(u64, &str)> = step
        .tokens
        .iter()
        .map(|t| (t.request_id, t.text.as_str()))
        .collect();
    let tail = format!("{} ", words[words.len() - 2]);
    assert_eq!(
        tokens,
        [(1, tail.as_str()), (1, words[words.len() - 1])],
        "the last two words of the first, nothing for the second"
    );
    assert!(matches!(s.next().await, Event::Done(done) if done.batch_id == 4));
}

#[tokio::test]
async fn a_draining_worker_says_so_finishes_its_batch_and_ends_when_the_batcher_does() {
    let mut s = session(600).await;
    s.send(batch(1, &["hello"])).await;
    assert!(matches!(s.next().await, Event::Step(_)));
    s.stop.cancel();
    // Steps of the running batch go on; Draining comes among them, once.
    let mut draining = 0;
    loop {
        match s.next().await {
            Event::Step(_) => {}
            Event::Draining(_) => draining += 1,
            Event::Done(done) => {
                assert_eq!(done.batch_id, 1);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(draining, 1);
    // The stream stays open until the batcher ends its side.
    let Session { down, mut up, .. } = s;
    drop(down);
    assert!(up.message().await.unwrap().is_none(), "ended with OK");
}

#[tokio::test]
async fn two_batchers_share_a_worker_by_offers_and_it_is_never_booked_twice() {
    let mut a = session(300).await;
    let mut b = a.another().await;
    // Only `a` wants it: it gets the offer.
    a.send(demand(2, true)).await;
    assert!(matches!(a.next().await, Event::Offer(_)));
    a.send(batch(1, &["Aries", "Leo"])).await;
    // `b` has more ready, but the worker is booked: no offer until the
    // batch ends.
    b.send(demand(9, true)).await;
    let offered_midway =
        tokio::time::timeout(std::time::Duration::from_millis(100), b.next()).await;
    assert!(
        offered_midway.is_err(),
        "offered while busy: {offered_midway:?}"
    );
    loop {
        if let Event::Done(done) = a.next().await {
            assert_eq!(done.batch_id, 1);
            break;
        }
    }
    assert!(matches!(b.next().await, Event::Offer(_)));
    // `b` passes (its queue emptied meanwhile): the offer moves to `a`,
    // which still wants the worker.
    a.send(demand(1, false)).await;
    b.send(Command::Pass(Pass {})).await;
    assert!(matches!(a.next().await, Event::Offer(_)));
    // `b` turns ready while `a`'s offer waits on its window: `a` is asked
    // for its answer now, passes, and the worker goes to `b`.
    b.send(demand(4, true)).await;
    assert!(matches!(a.next().await, Event::Recall(_)));
    a.send(Command::Pass(Pass {})).await;
    assert!(matches!(b.next().await, Event::Offer(_)));
    b.send(batch(2, &["Virgo"])).await;
    assert!(matches!(b.next().await, Event::Step(step) if step.batch_id == 2));
}

#[tokio::test]
async fn a_worker_called_while_it_runs_another_batchers_batch_says_busy_then_offers_once_free() {
    let mut a = session(300).await;
    let mut b = a.another().await;
    a.send(call(1, true)).await;
    assert!(matches!(a.next().await, Event::Offer(_)));
    a.send(batch(1, &["Aries"])).await;
    // `b` calls the worker while `a`'s batch runs: Busy, at once, so that
    // `b` calls another.
    b.send(call(2, true)).await;
    assert!(matches!(b.next().await, Event::Busy(_)));
    loop {
        if let Event::Done(done) = a.next().await {
            assert_eq!(done.batch_id, 1);
            break;
        }
    }
    // Free again, it offers itself to `b`, whose call still stands.
    assert!(matches!(b.next().await, Event::Offer(_)));
    b.send(batch(2, &["Leo"])).await;
    assert!(matches!(b.next().await, Event::Step(step) if step.batch_id == 2));
}
