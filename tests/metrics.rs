//! `/metrics` on the gateway's port after a known workload: the counters and
//! histogram counts every service exports have the expected values.

mod common;

use common::{
    ONE_SLOW_WORKER, client, expected_text, http_get, infer, mesh, occupy, without_batcher,
};
use std::{collections::HashMap, net::SocketAddr, time::Duration};

/// Every sample of the exposition, by name with its labels as written but
/// the batcher's (summed over the batchers).
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let response = http_get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    let mut samples = HashMap::new();
    for line in response
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        *samples.entry(without_batcher(name)).or_default() += value;
    }
    samples
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not exported"))
}

/// Scrapes until `name` reaches `want` (what is recorded when a stream is
/// dropped lands a moment after the client left).
async fn eventually(addr: SocketAddr, name: &str, want: f64) -> HashMap<String, f64> {
    for _ in 0..100 {
        let samples = scrape(addr).await;
        if samples.get(name) == Some(&want) {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{name} never reached {want}: {:?}",
        scrape(addr).await.get(name)
    );
}

#[tokio::test]
async fn counts_requests_batches_and_tokens_of_a_known_workload() {
    let flags = [
        "--min-delay-ms",
        "0",
        "--max-delay-ms",
        "0",
        "--batch-window-ms",
        "0",
    ];
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let prefixes = ["one", "two", "three", "four", "five"];
    for prefix in prefixes {
        infer(&client, prefix).await.unwrap();
    }
    infer(&client, &"x".repeat(1025)).await.unwrap_err();

    let exposition = http_get(mesh.addr, "/metrics").await.body;
    assert!(
        exposition.contains(r#"horoscoper_batch_size_count{batcher="batcher-1"} 5"#),
        "the batcher's metrics carry its id:\n{exposition}"
    );
    let samples = scrape(mesh.addr).await;
    let tokens: usize = prefixes
        .iter()
        .map(|p| expected_text(p).split(' ').count())
        .sum();
    for (name, want) in [
        (r#"horoscoper_requests_total{outcome="ok"}"#, 5.0),
        (r#"horoscoper_requests_total{outcome="invalid"}"#, 1.0),
        (r#"horoscoper_requests_total{outcome="cancelled"}"#, 0.0),
        (r#"horoscoper_requests_total{outcome="timed_out"}"#, 0.0),
        (r#"horoscoper_requests_total{outcome="unavailable"}"#, 0.0),
        (r#"horoscoper_requests_total{outcome="overloaded"}"#, 0.0),
        ("horoscoper_time_to_first_token_seconds_count", 5.0),
        ("horoscoper_request_duration_seconds_count", 6.0),
        ("horoscoper_queue_wait_seconds_count", 5.0),
        // One at a time with window 0: five batches of one.
        ("horoscoper_batch_size_count", 5.0),
        ("horoscoper_batch_size_sum", 5.0),
        (r#"horoscoper_batches_total{reason="window"}"#, 5.0),
        (r#"horoscoper_batches_total{reason="full"}"#, 0.0),
        (r#"horoscoper_batches_total{reason="stale_head"}"#, 0.0),
        ("horoscoper_worker_batches_total", 5.0),
        ("horoscoper_tokens_total", tokens as f64),
        // Batches of one: one request in each step, one step a token.
        ("horoscoper_step_requests_count", tokens as f64),
        ("horoscoper_step_requests_sum", tokens as f64),
        ("horoscoper_queue_length", 0.0),
        ("horoscoper_workers", 2.0),
        ("horoscoper_workers_busy", 0.0),
    ] {
        assert_eq!(value(&samples, name), want, "{name}");
    }
}

#[tokio::test]
async fn counts_timed_out_and_cancelled_requests_and_busy_workers() {
    let mesh = mesh(&[&ONE_SLOW_WORKER[..], &["--request-ttl-ms", "200"]].concat()).await;
    let client = client(mesh.addr).await;
    let busy = occupy(&client).await;

    let samples = scrape(mesh.addr).await;
    assert_eq!(value(&samples, "horoscoper_workers_busy"), 1.0);
    assert_eq!(value(&samples, "horoscoper_workers"), 1.0);

    infer(&client, "waits too long").await.unwrap_err();
    drop(busy);
    let samples = eventually(
        mesh.addr,
        r#"horoscoper_requests_total{outcome="cancelled"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(
            &samples,
            r#"horoscoper_requests_total{outcome="timed_out"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&samples, r#"horoscoper_requests_total{outcome="ok"}"#),
        0.0
    );
    assert_eq!(
        value(&samples, "horoscoper_time_to_first_token_seconds_count"),
        1.0
    );
    assert_eq!(
        value(&samples, "horoscoper_request_duration_seconds_count"),
        2.0
    );
    // Only the request that ran was dispatched.
    assert_eq!(value(&samples, "horoscoper_queue_wait_seconds_count"), 1.0);
    let samples = eventually(mesh.addr, "horoscoper_workers_busy", 0.0).await;
    assert_eq!(value(&samples, "horoscoper_worker_batches_total"), 1.0);
}
