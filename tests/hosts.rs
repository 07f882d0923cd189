//! Across hosts: the gateway, the batcher, three workers and a DNS server each
//! on an address of its own (network namespaces joined by a bridge), the
//! release binaries as separate processes. The batcher knows its workers only
//! as `http://worker:50051`, a name the DNS server answers with several
//! addresses. While closed-loop clients keep requests flowing, a third worker
//! is added to the name and later the first one is removed: no request is
//! lost, every text is whole, the added worker receives batches and the
//! removed one is drained.
//!
//! Needs root, `ip` and `dnsmasq`, so it is ignored by a plain `cargo test`;
//! `just test-hosts` runs it.

mod common;

use common::{
    client, expected_text,
    netns::{Dns, Network, ip},
    processes::{Process, binary, reachable},
    start, text,
};
use horoscoper_proto::v1::InferResponse;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::task::JoinSet;

const CLIENTS: usize = 12;
/// How long each phase lets requests flow.
const PHASE: Duration = Duration::from_secs(4);
/// Longer than any request here: a stream still open after this is lost.
const LOST_AFTER: Duration = Duration::from_secs(20);

/// What one request came to.
struct Outcome {
    /// When its first token arrived, which is when its batch began.
    first_token: Instant,
    worker: String,
    batch: u64,
}

#[derive(Default)]
struct Tally {
    sent: usize,
    completed: Vec<Outcome>,
    failed: Vec<String>,
    lost: usize,
}

async fn closed_loop(
    gateway: SocketAddr,
    me: usize,
    running: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let client = client(gateway).await;
    let mut round = 0;
    while running.load(Ordering::Relaxed) {
        round += 1;
        let prefix = format!("client {me}, request {round}");
        tally.lock().unwrap().sent += 1;
        let call = async {
            let mut stream = start(&client, &prefix).await?;
            let mut responses: Vec<InferResponse> = Vec::new();
            let mut first_token = None;
            while let Some(response) = stream.message().await? {
                first_token.get_or_insert_with(Instant::now);
                responses.push(response);
            }
            Ok::<_, tonic::Status>((responses, first_token))
        };
        match tokio::time::timeout(LOST_AFTER, call).await {
            Err(_) => tally.lock().unwrap().lost += 1,
            Ok(Err(status)) => tally
                .lock()
                .unwrap()
                .failed
                .push(format!("{prefix}: {status:?}")),
            Ok(Ok((responses, first_token))) => {
                let batch = responses
                    .iter()
                    .find_map(|r| r.batch.clone())
                    .expect("every response stream names its batch");
                let mut tally = tally.lock().unwrap();
                if text(&responses) != expected_text(&prefix) {
                    tally
                        .failed
                        .push(format!("{prefix}: text differs: {:?}", text(&responses)));
                } else {
                    tally.completed.push(Outcome {
                        first_token: first_token.expect("a whole text has tokens"),
                        worker: batch.worker_id,
                        batch: batch.batch_id,
                    });
                }
            }
        }
    }
}

/// Batches per worker that began in `[from, to)`.
fn batches(outcomes: &[Outcome], from: Instant, to: Instant) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for outcome in outcomes {
        if outcome.first_token >= from && outcome.first_token < to {
            seen.entry(outcome.worker.clone())
                .or_default()
                .insert(outcome.batch);
        }
    }
    seen.into_iter().map(|(w, b)| (w, b.len())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, ip and dnsmasq: run by `just test-hosts`"]
async fn workers_join_and_leave_by_dns_while_requests_flow_and_none_is_lost() {
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hosts");
    std::fs::create_dir_all(&logs).unwrap();
    let log = |name: &str| logs.join(format!("{name}.log"));

    let mut network = Network::new();
    let dns_host = network.host("dns", 2, ip(2));
    let gateway_host = network.host("gateway", 10, ip(2));
    let batcher_host = network.host("batcher", 11, ip(2));
    let worker_hosts: Vec<_> = (1..=3)
        .map(|n| network.host(&format!("w{n}"), 20 + n, ip(2)))
        .collect();
    let worker_ip = |n: usize| worker_hosts[n - 1].addr;

    let records = |workers: &[usize]| {
        let mut records = vec![("batcher", batcher_host.addr)];
        records.extend(workers.iter().map(|&n| ("worker", worker_ip(n))));
        records
    };
    let dns = Dns::start(&dns_host, &logs, &records(&[1, 2]));

    let mut workers: Vec<Option<Process>> = worker_hosts
        .iter()
        .enumerate()
        .map(|(at, host)| {
            let name = format!("w{}", at + 1);
            Some(host.start(
                &binary("worker"),
                &[
                    "--listen",
                    &format!("{}:50051", host.addr),
                    "--metrics-listen",
                    &format!("{}:9101", host.addr),
                    "--worker-id",
                    &name,
                    "--min-delay-ms",
                    "300",
                    "--max-delay-ms",
                    "600",
                ],
                &log(&name),
            ))
        })
        .collect();
    for n in 1..=3 {
        reachable(SocketAddr::from((worker_ip(n), 50051)), "a worker").await;
    }
    let batcher = batcher_host.start(
        &binary("batcher"),
        &[
            "--listen",
            &format!("{}:50052", batcher_host.addr),
            "--metrics-listen",
            &format!("{}:9102", batcher_host.addr),
            "--worker",
            "http://worker:50051",
            "--resolve-interval-ms",
            "200",
            "--batch-size",
            "4",
            "--batch-window-ms",
            "50",
        ],
        &log("batcher"),
    );
    let gateway_addr = SocketAddr::from((gateway_host.addr, 8080));
    let gateway = gateway_host.start(
        &binary("gateway"),
        &[
            "--listen",
            &gateway_addr.to_string(),
            "--metrics-listen",
            &format!("{}:9103", gateway_host.addr),
            "--batcher",
            "http://batcher:50052",
        ],
        &log("gateway"),
    );
    reachable(gateway_addr, "the gateway").await;

    let running = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = JoinSet::new();
    let began = Instant::now();
    for me in 0..CLIENTS {
        clients.spawn(closed_loop(
            gateway_addr,
            me,
            running.clone(),
            tally.clone(),
        ));
    }

    tokio::time::sleep(PHASE).await;
    dns.set(&records(&[1, 2, 3]));
    let added = Instant::now();
    tokio::time::sleep(PHASE).await;
    dns.set(&records(&[2, 3]));
    let removed = Instant::now();
    tokio::time::sleep(PHASE).await;
    // w1 has drained by now (no name, no new batch, its last batch long
    // over): stop it for real, as a scale-in would.
    let w1 = workers[0].take().unwrap();
    let w1_exit = tokio::task::spawn_blocking(move || w1.stop())
        .await
        .unwrap();
    tokio::time::sleep(PHASE).await;

    running.store(false, Ordering::Relaxed);
    while let Some(joined) = clients.join_next().await {
        joined.expect("a client task");
    }
    let ended = Instant::now();
    drop(gateway);
    drop(batcher);
    drop(workers);

    let tally = tally.lock().unwrap();
    // A batch is counted in the phase its first token fell in; a batch that
    // began within a resolve interval (200 ms) plus DNS reload of a change
    // may still see the old set, so the "after" windows start 1 s later.
    let settle = Duration::from_secs(1);
    let before_add = batches(&tally.completed, began, added);
    let after_add = batches(&tally.completed, added + settle, removed);
    let after_remove = batches(&tally.completed, removed + settle, ended);
    eprintln!(
        "hosts: {CLIENTS} clients, {} sent, {} completed, {} failed, {} lost, in {:.1} s",
        tally.sent,
        tally.completed.len(),
        tally.failed.len(),
        tally.lost,
        (ended - began).as_secs_f64()
    );
    eprintln!("hosts: batches per worker, workers w1 w2        : {before_add:?}");
    eprintln!("hosts: batches per worker, after w3 was added   : {after_add:?}");
    eprintln!("hosts: batches per worker, after w1 was removed : {after_remove:?}");

    assert_eq!(tally.lost, 0, "streams that never ended");
    assert!(tally.failed.is_empty(), "failed: {:#?}", tally.failed);
    assert_eq!(tally.sent, tally.completed.len());
    assert!(w1_exit.success(), "w1 exits cleanly: {w1_exit:?}");
    assert!(
        !before_add.contains_key("w3"),
        "w3 was not in DNS yet: {before_add:?}"
    );
    assert!(before_add.contains_key("w1") && before_add.contains_key("w2"));
    assert!(
        after_add.get("w3").is_some_and(|&n| n > 0),
        "w3 joined: {after_add:?}"
    );
    assert!(
        !after_remove.contains_key("w1"),
        "w1 was drained: {after_remove:?}"
    );
    assert!(after_remove.contains_key("w2") && after_remove.contains_key("w3"));
}
