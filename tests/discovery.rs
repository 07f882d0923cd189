//! Workers found by name: the batcher resolves a worker URL's host every
//! interval and keeps a connection per address. An address that appears
//! starts taking batches without a restart; one that vanishes is drained,
//! and no request is lost on the way.

mod common;

use common::{batcher_with, client, expected_text, gateway, infer, occupy, start, text, worker};
use horoscoper_batcher::{BatchingArgs, Config, Metrics, Resolver};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::TcpListener;

/// A resolver that finds whatever `addresses` holds at each lookup.
fn resolving(addresses: &Arc<Mutex<Vec<SocketAddr>>>) -> Resolver {
    let addresses = addresses.clone();
    Resolver::new(Arc::new(move |_host, _port| {
        let found = addresses.lock().unwrap().clone();
        Box::pin(async move { Ok(found) })
    }))
}

/// A batcher that finds its workers at `url` through `resolver`, every
/// `interval`, with batches of `batch_size` and a time to live of `ttl_ms`.
fn found_by(
    url: &str,
    resolver: Resolver,
    interval: Duration,
    (batch_size, ttl_ms): (usize, u64),
    metrics: &Metrics,
) -> Config {
    let batching = BatchingArgs {
        batch_size,
        batch_window_ms: 0,
        request_ttl_ms: ttl_ms,
        max_requests: 1024,
        batching: Default::default(),
        load_interval_ms: 5,
    }
    .validate()
    .unwrap();
    let mut config = Config::new(vec![url.parse().unwrap()], batching, metrics.clone());
    config.resolver = resolver;
    config.resolve_interval = interval;
    config.batcher_id = Some(BATCHER.into());
    config
}

/// The id of the batcher under test, which its metrics carry.
const BATCHER: &str = "batcher-under-test";

/// Sends `count` requests at once; how many each worker served.
async fn served_by(
    client: &horoscoper_proto::v1::horoscoper_client::HoroscoperClient<tonic::transport::Channel>,
    round: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let client = client.clone();
            let prefix = format!("{round} {i}");
            tokio::spawn(async move {
                let responses = infer(&client, &prefix).await.expect("no request is lost");
                assert_eq!(text(&responses), expected_text(&prefix));
                responses.last().unwrap().batch.clone().unwrap().worker_id
            })
        })
        .collect();
    let mut served = BTreeMap::new();
    for call in calls {
        *served.entry(call.await.unwrap()).or_default() += 1;
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_join_and_leave_as_their_name_resolves() {
    // Two workers on one port, at two loopback addresses: one name, two hosts.
    let first = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = first.local_addr().unwrap().port();
    let second = TcpListener::bind(("127.0.0.3", port))
        .await
        .expect("the same port is free on 127.0.0.3");
    let (a, b): (SocketAddr, SocketAddr) =
        (first.local_addr().unwrap(), second.local_addr().unwrap());
    let delays = ["--min-delay-ms", "200", "--max-delay-ms", "200"];
    let _a = worker(first, &[&delays[..], &["--worker-id", "a"]].concat()).await;
    let _b = worker(second, &[&delays[..], &["--worker-id", "b"]].concat()).await;

    // "workers.test" resolves to whatever `addresses` holds.
    let addresses = Arc::new(Mutex::new(vec![a]));
    let resolver = resolving(&addresses);
    let metrics = Metrics::default();
    let config = found_by(
        &format!("http://workers.test:{port}"),
        resolver,
        Duration::from_millis(100),
        (1, 10_000),
        &metrics,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let batcher = batcher_with(listener, config).await;
    let gateway = gateway(&batcher.url()).await;
    let client = client(gateway.addr).await;

    let before = served_by(&client, "before", 4).await;
    assert_eq!(before, BTreeMap::from([("a".to_string(), 4)]));

    addresses.lock().unwrap().push(b);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metrics.of(BATCHER).workers.get(),
        2,
        "the new address joined"
    );
    let both = served_by(&client, "both", 6).await;
    assert!(
        both.get("b").is_some_and(|n| *n > 0),
        "the added worker receives batches: {both:?}"
    );
    assert!(both.get("a").is_some_and(|n| *n > 0), "{both:?}");

    // Take "a" away while requests flow: none is lost.
    let flowing = {
        let client = client.clone();
        tokio::spawn(async move { served_by(&client, "during", 6).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    *addresses.lock().unwrap() = vec![b];
    let during = flowing.await.unwrap();
    assert_eq!(during.values().sum::<usize>(), 6, "{during:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metrics.of(BATCHER).workers.get(),
        1,
        "the vanished address was drained"
    );
    let after = served_by(&client, "after", 4).await;
    assert_eq!(after, BTreeMap::from([("b".to_string(), 4)]));
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_known_workers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _worker = worker(listener, &["--min-delay-ms", "0", "--max-delay-ms", "0"]).await;
    let lookups = Arc::new(Mutex::new(0));
    let counted = lookups.clone();
    let resolver = Resolver::new(Arc::new(move |_host, _port| {
        let mut lookups = counted.lock().unwrap();
        *lookups += 1;
        let result = if *lookups == 1 {
            Ok(vec![addr])
        } else {
            Err(std::io::Error::other("the DNS server is down"))
        };
        Box::pin(async move { result })
    }));
    let config = found_by(
        &format!("http://worker.test:{}", addr.port()),
        resolver,
        Duration::from_millis(50),
        (4, 5_000),
        &Metrics::default(),
    );
    let batcher = batcher_with(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await;
    let gateway = gateway(&batcher.url()).await;
    let client = client(gateway.addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(*lookups.lock().unwrap() > 2, "the name was looked up again");
    assert_eq!(
        text(&infer(&client, "still here").await.unwrap()),
        expected_text("still here")
    );
}

/// Waits, at most `within`, until `done` holds.
async fn until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(within, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retiring_worker_hears_departures_and_an_address_back_in_time_keeps_one_connection() {
    // Batches of 20 s: whatever ends sooner was ended by a departure.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _worker = worker(
        listener,
        &[
            "--min-delay-ms",
            "20000",
            "--max-delay-ms",
            "20000",
            "--worker-id",
            "a",
        ],
    )
    .await;
    let addresses = Arc::new(Mutex::new(vec![addr]));
    let resolver = resolving(&addresses);
    let metrics = Metrics::default();
    let config = found_by(
        &format!("http://worker.test:{}", addr.port()),
        resolver,
        Duration::from_millis(50),
        (1, 60_000),
        &metrics,
    );
    let batcher = batcher_with(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await;
    let gateway = gateway(&batcher.url()).await;
    let client = client(gateway.addr).await;
    let set = |found: Vec<SocketAddr>| *addresses.lock().unwrap() = found;

    // 1. The address goes away mid-batch, then the client leaves: the
    // departure reaches the retiring worker, the emptied batch ends at once,
    // and the connection with it.
    let running = occupy(&client).await;
    set(vec![]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metrics.of(BATCHER).workers.get(),
        1,
        "retiring, its batch still runs"
    );
    drop(running);
    until(
        Duration::from_secs(10),
        "the retired worker's emptied batch ended and it left",
        || metrics.of(BATCHER).workers.get() == 0,
    )
    .await;

    // 2. The address comes back, goes away mid-batch, and comes back before
    // the batch ends: the same connection takes batches again, no second one.
    set(vec![addr]);
    until(Duration::from_secs(10), "the address joined again", || {
        metrics.of(BATCHER).workers.get() == 1
    })
    .await;
    let running = occupy(&client).await;
    set(vec![]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    set(vec![addr]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metrics.of(BATCHER).workers.get(),
        1,
        "one connection to the worker"
    );
    let mut next = start(&client, "after the return").await.unwrap();
    drop(running);
    let first = tokio::time::timeout(Duration::from_secs(10), next.message())
        .await
        .expect("the connection takes batches again")
        .unwrap()
        .unwrap();
    assert!(!first.text.is_empty());
    assert_eq!(metrics.of(BATCHER).workers.get(), 1);
}
