//! Across hosts: two gateways, three batchers, four workers and a DNS server
//! each on an address of its own (network namespaces joined by a bridge), the
//! release binaries as separate processes. The gateways know the batchers
//! only as `http://batcher:50052`, and the batchers the workers only as
//! `http://worker:50051`: names the DNS server answers with several
//! addresses. While closed-loop clients on both gateways keep requests
//! flowing, a third batcher and a fourth worker are added to the names, the
//! first worker is removed, and then a batcher and a worker are killed
//! (SIGKILL): no request is lost or fails, every text is whole, the added
//! worker receives batches, the removed one is drained, and every batcher
//! (the added one too) served.
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
async fn the_mesh_scales_and_loses_a_batcher_and_a_worker_by_dns_while_requests_flow_and_none_is_lost()
 {
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hosts");
    std::fs::create_dir_all(&logs).unwrap();
    let log = |name: &str| logs.join(format!("{name}.log"));

    let mut network = Network::new();
    let dns_host = network.host("dns", 2, ip(2));
    let gateway_hosts: Vec<_> = (1..=2)
        .map(|n| network.host(&format!("g{n}"), 9 + n, ip(2)))
        .collect();
    let batcher_hosts: Vec<_> = (1..=3)
        .map(|n| network.host(&format!("b{n}"), 12 + n, ip(2)))
        .collect();
    let worker_hosts: Vec<_> = (1..=4)
        .map(|n| network.host(&format!("w{n}"), 20 + n, ip(2)))
        .collect();
    let worker_ip = |n: usize| worker_hosts[n - 1].addr;
    let batcher_ip = |n: usize| batcher_hosts[n - 1].addr;

    let records = |batchers: &[usize], workers: &[usize]| {
        let mut records: Vec<_> = batchers
            .iter()
            .map(|&n| ("batcher", batcher_ip(n)))
            .collect();
        records.extend(workers.iter().map(|&n| ("worker", worker_ip(n))));
        records
    };
    let dns = Dns::start(&dns_host, &logs, &records(&[1, 2], &[1, 2, 3]));

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
    for n in 1..=4 {
        reachable(SocketAddr::from((worker_ip(n), 50051)), "a worker").await;
    }
    let mut batchers: Vec<Option<Process>> = batcher_hosts
        .iter()
        .enumerate()
        .map(|(at, host)| {
            let name = format!("b{}", at + 1);
            Some(host.start(
                &binary("batcher"),
                &[
                    "--listen",
                    &format!("{}:50052", host.addr),
                    "--metrics-listen",
                    &format!("{}:9102", host.addr),
                    "--batcher-id",
                    &name,
                    "--worker",
                    "http://worker:50051",
                    "--resolve-interval-ms",
                    "200",
                    "--batch-size",
                    "4",
                    "--batch-window-ms",
                    "50",
                ],
                &log(&name),
            ))
        })
        .collect();
    for n in 1..=3 {
        reachable(SocketAddr::from((batcher_ip(n), 50052)), "a batcher").await;
    }
    let gateways: Vec<(SocketAddr, Process)> = gateway_hosts
        .iter()
        .enumerate()
        .map(|(at, host)| {
            let addr = SocketAddr::from((host.addr, 8080));
            let process = host.start(
                &binary("gateway"),
                &[
                    "--listen",
                    &addr.to_string(),
                    "--metrics-listen",
                    &format!("{}:9103", host.addr),
                    "--batcher",
                    "http://batcher:50052",
                    "--resolve-interval-ms",
                    "200",
                ],
                &log(&format!("g{}", at + 1)),
            );
            (addr, process)
        })
        .collect();
    for (addr, _) in &gateways {
        reachable(*addr, "a gateway").await;
    }

    let running = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut clients = JoinSet::new();
    let began = Instant::now();
    for me in 0..CLIENTS {
        clients.spawn(closed_loop(
            gateways[me % gateways.len()].0,
            me,
            running.clone(),
            tally.clone(),
        ));
    }

    tokio::time::sleep(PHASE).await;
    // The gateways find b3, the batchers w4, with no restart.
    dns.set(&records(&[1, 2, 3], &[1, 2, 3, 4]));
    let added = Instant::now();
    tokio::time::sleep(PHASE).await;
    dns.set(&records(&[1, 2, 3], &[2, 3, 4]));
    let removed = Instant::now();
    tokio::time::sleep(PHASE).await;
    // w1 has drained by now (no name, no new batch, its last batch long
    // over): stop it for real, as a scale-in would.
    let w1 = workers[0].take().unwrap();
    let w1_exit = tokio::task::spawn_blocking(move || w1.stop())
        .await
        .unwrap();
    // Every batcher has served by now; b1 is about to go.
    let served_before_kill = batches_served(batcher_ip(1)).await;
    // A batcher and a worker lost mid-batch, then gone from DNS as a
    // pod's record would be.
    batchers[0].take().unwrap().signal("KILL");
    workers[1].take().unwrap().signal("KILL");
    let killed = Instant::now();
    dns.set(&records(&[2, 3], &[3, 4]));
    tokio::time::sleep(PHASE).await;

    running.store(false, Ordering::Relaxed);
    while let Some(joined) = clients.join_next().await {
        joined.expect("a client task");
    }
    let ended = Instant::now();
    let served_after = [
        batches_served(batcher_ip(2)).await,
        batches_served(batcher_ip(3)).await,
    ];
    drop(gateways);
    drop(batchers);
    drop(workers);

    let tally = tally.lock().unwrap();
    // A batch is counted in the phase its first token fell in; a batch that
    // began within a resolve interval (200 ms) plus DNS reload of a change
    // may still see the old set, so the "after" windows start 1 s later.
    let settle = Duration::from_secs(1);
    let before_add = batches(&tally.completed, began, added);
    let after_add = batches(&tally.completed, added + settle, removed);
    let after_remove = batches(&tally.completed, removed + settle, killed);
    let after_kill = batches(&tally.completed, killed + settle, ended);
    eprintln!(
        "hosts: {CLIENTS} clients on 2 gateways, 3 batchers, {} sent, {} completed, {} failed, {} lost, in {:.1} s",
        tally.sent,
        tally.completed.len(),
        tally.failed.len(),
        tally.lost,
        (ended - began).as_secs_f64()
    );
    eprintln!("hosts: batches per worker, workers w1 w2 w3     : {before_add:?}");
    eprintln!("hosts: batches per worker, after w4 was added   : {after_add:?}");
    eprintln!("hosts: batches per worker, after w1 was removed : {after_remove:?}");
    eprintln!("hosts: batches per worker, after b1, w2 killed  : {after_kill:?}");
    eprintln!(
        "hosts: batches per batcher: b1 {served_before_kill} before it was killed; b2, b3 (added after {} s) {served_after:?} in all",
        PHASE.as_secs()
    );

    assert_eq!(tally.lost, 0, "streams that never ended");
    assert!(tally.failed.is_empty(), "failed: {:#?}", tally.failed);
    assert_eq!(tally.sent, tally.completed.len());
    assert!(w1_exit.success(), "w1 exits cleanly: {w1_exit:?}");
    assert!(
        !before_add.contains_key("w4"),
        "w4 was not in DNS yet: {before_add:?}"
    );
    assert!(before_add.contains_key("w1") && before_add.contains_key("w2"));
    assert!(
        after_add.get("w4").is_some_and(|&n| n > 0),
        "w4 joined: {after_add:?}"
    );
    assert!(
        !after_remove.contains_key("w1"),
        "w1 was drained: {after_remove:?}"
    );
    assert!(
        !after_kill.contains_key("w2")
            && after_kill.contains_key("w3")
            && after_kill.contains_key("w4"),
        "w2 was lost, the others served: {after_kill:?}"
    );
    assert!(served_before_kill > 0.0, "b1 served before it was killed");
    assert!(
        served_after.iter().all(|&n| n > 0.0),
        "every batcher served, b3 once it was added: {served_after:?}"
    );
}

/// How many batches the batcher at `ip` has dispatched.
async fn batches_served(ip: std::net::Ipv4Addr) -> f64 {
    common::metric(SocketAddr::from((ip, 9102)), "horoscoper_batch_size_count").await
}
