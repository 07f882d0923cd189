//! Continuous batching end to end (`--batching continuous`), in-process:
//! real gateway, batcher and worker on loopback ports, driven by a tonic
//! client. Requests join a worker that is already generating, and a freed
//! slot is reused.

mod common;

use common::{client, collect, expected_text, http_get, http_post, mesh, start, text};
use horoscoper_proto::v1::{Batching, InferResponse};
use tokio::time::Instant;
use tonic::Streaming;

/// One worker of `slots` slots whose requests each take `delay_ms` alone.
fn flags(slots: &str, delay_ms: &str) -> Vec<String> {
    [
        "--workers",
        "1",
        "--batching",
        "continuous",
        "--batch-size",
        slots,
        "--min-delay-ms",
        delay_ms,
        "--max-delay-ms",
        delay_ms,
    ]
    .map(String::from)
    .to_vec()
}

/// A call read to its end: when its first token came, and what came.
struct Timed {
    first: Instant,
    responses: Vec<InferResponse>,
}

async fn timed(mut stream: Streaming<InferResponse>) -> Timed {
    let first_token = stream.message().await.unwrap().expect("a first token");
    let first = Instant::now();
    let mut responses = vec![first_token];
    responses.extend(collect(stream).await.unwrap());
    Timed { first, responses }
}

#[tokio::test]
async fn a_request_joins_a_worker_that_is_generating_and_both_end_whole() {
    let flags = flags("4", "1500");
    let mesh = mesh(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = client(mesh.addr).await;
    let mut a = start(&client, "first").await.unwrap();
    let a_first = a.message().await.unwrap().expect("a token");
    // The worker is generating for `first`; `second` joins it, rather than
    // waiting for its end as a static batch would on the only worker.
    let b = tokio::spawn(timed(start(&client, "second").await.unwrap()));
    let a_rest = collect(a).await.unwrap();
    let a_last = Instant::now();
    let b = b.await.unwrap();
    assert!(b.first < a_last, "second streamed while first did");

    let mut a_all = vec![a_first];
    a_all.extend(a_rest);
    assert_eq!(text(&a_all), expected_text("first"));
    assert_eq!(text(&b.responses), expected_text("second"));
    for responses in [&a_all, &b.responses] {
        let batch = responses.last().unwrap().batch.clone().unwrap();
        assert_eq!(batch.batching(), Batching::Continuous);
        assert_eq!(batch.batch_size, 1, "each joined alone");
        assert_eq!(batch.max_shared, 2, "they shared steps: {batch:?}");
        assert_eq!(batch.worker_id, "worker-1");
    }
    mesh.stop().await;
}

#[tokio::test]
async fn a_worker_never_holds_more_than_its_slots_and_a_request_waits_for_a_free_one() {
    let flags = flags("2", "600");
    let mesh = mesh(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = client(mesh.addr).await;
    let prefixes = ["one", "two", "three"];
    let mut calls = Vec::new();
    for prefix in prefixes {
        calls.push(tokio::spawn(timed(start(&client, prefix).await.unwrap())));
    }
    let mut done = Vec::new();
    for call in calls {
        done.push(call.await.unwrap());
    }
    for (prefix, call) in prefixes.iter().zip(&done) {
        assert_eq!(text(&call.responses), expected_text(prefix));
        let batch = call.responses.last().unwrap().batch.clone().unwrap();
        assert!(batch.max_shared <= 2, "two slots: {batch:?}");
    }
    // The third waited for a slot, while the first two generated (600 ms
    // alone; joining at once takes microseconds).
    let third = done[2].responses.last().unwrap().batch.clone().unwrap();
    let queued = third.queue_time.expect("a queue time");
    assert!(
        queued.seconds > 0 || queued.nanos >= 100_000_000,
        "{third:?}"
    );
    mesh.stop().await;
}

#[tokio::test]
async fn batchers_share_a_workers_slots_and_never_fill_it_past_them() {
    let mut flags = flags("2", "600");
    flags.extend(["--batchers", "3"].map(String::from));
    let mesh = mesh(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let client = client(mesh.addr).await;
    let prefixes = ["one", "two", "three", "four", "five", "six"];
    let mut calls = Vec::new();
    for prefix in prefixes {
        calls.push(tokio::spawn(timed(start(&client, prefix).await.unwrap())));
    }
    for (prefix, call) in prefixes.iter().zip(calls) {
        let call = call.await.unwrap();
        assert_eq!(text(&call.responses), expected_text(prefix));
        let batch = call.responses.last().unwrap().batch.clone().unwrap();
        // Each batcher alone would keep 2 there: 6 at once.
        assert!(
            batch.max_shared <= 2,
            "two slots, three batchers: {batch:?}"
        );
    }
    // The worker's own count: no step had more than two requests.
    let metrics = http_get(mesh.addr, "/metrics").await.body;
    let steps = common::sample(&metrics, "horoscoper_step_requests_count").unwrap();
    let within_two =
        common::sample(&metrics, r#"horoscoper_step_requests_bucket{le="2.0"}"#).unwrap();
    assert!(steps > 0.0);
    assert_eq!(within_two, steps, "{metrics}");
    mesh.stop().await;
}

#[tokio::test]
async fn the_gateway_says_how_the_mesh_batches_before_any_request() {
    let view = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let plain = mesh(&[]).await;
    let response = http_get(plain.addr, "/api/v1/mesh").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = view(&response.body);
    assert_eq!(seen["batching"], "static", "{seen}");
    assert_eq!(seen["batchers"][0]["queued"], 0, "{seen}");
    plain.stop().await;

    let mut flags = flags("2", "600");
    flags.extend(["--batchers", "2"].map(String::from));
    let continuous = mesh(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let seen = view(&http_get(continuous.addr, "/api/v1/mesh").await.body);
    assert_eq!(seen["batching"], "continuous", "{seen}");
    let batchers = seen["batchers"].as_array().unwrap();
    assert_eq!(batchers.len(), 2, "{seen}");
    assert!(
        batchers
            .iter()
            .all(|b| b["batching"] == "continuous" && b["draining"] == false)
    );
    continuous.stop().await;
}

#[tokio::test]
async fn the_originals_sse_endpoint_streams_whole_texts_in_continuous_batching() {
    let flags = flags("2", "300");
    let mesh = mesh(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let response = http_post(
        mesh.addr,
        "/api/v1/infer",
        "application/json",
        r#"{"prefix": "hello"}"#,
    )
    .await;
    assert_eq!(response.status, 200);
    let events = common::sse_events(&response.body);
    let whole: String = events.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(whole, expected_text("hello"));
    assert_eq!(events.last().unwrap()["status"], "FINISHED");
    mesh.stop().await;
}

#[tokio::test]
async fn a_request_that_finds_no_free_slot_within_its_time_to_live_ends_with_deadline_exceeded() {
    // One worker of one slot (--batch-size 1), busy for 3 s.
    let flags = [
        &common::ONE_SLOW_WORKER[..],
        &["--batching", "continuous", "--request-ttl-ms", "300"],
    ]
    .concat();
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let _busy = common::occupy(&client).await;

    let status = common::infer(&client, "waits").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("time to live of 300 ms"),
        "{}",
        status.message()
    );
    mesh.stop().await;
}
