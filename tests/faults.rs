//! Fault injection against the release binaries as separate processes on
//! loopback: workers and the batcher killed (SIGKILL) mid-batch and brought
//! back. Each scenario prints one row of the README's table ("faults: | …",
//! also appended to target/tmp/faults/table.md, which `just test` shows):
//! requests sent, completed, failed with which status, and lost (a stream
//! that never ended with a status); lost must be 0 everywhere.

mod common;

use common::{
    client, expected_text, http_get,
    processes::{Process, binary, free_port, reachable},
    start, text,
};
use horoscoper_proto::v1::{BatchInfo, Batching, horoscoper_client::HoroscoperClient};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Longer than any request here: a stream still open after this is lost.
const LOST_AFTER: Duration = Duration::from_secs(30);

fn logs(scenario: &str) -> PathBuf {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("faults")
        .join(scenario);
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

/// `N` loopback ports, free a moment ago.
fn ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| free_port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start_logged(name: &str, args: &[String], log: PathBuf) -> Process {
    let program = binary(name);
    let mut command = std::process::Command::new(&program);
    command
        .args(args)
        .stderr(std::fs::File::create(log).unwrap());
    Process::spawn(&mut command, &program)
}

/// A worker `id` on `port`, each batch lasting `batch_ms`.
async fn worker(folder: &Path, id: &str, port: u16, batch_ms: u64) -> Process {
    worker_with(folder, id, port, batch_ms, &[]).await
}

async fn worker_with(folder: &Path, id: &str, port: u16, batch_ms: u64, extra: &[&str]) -> Process {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--listen".into(),
        loopback(port).to_string(),
        "--metrics-listen".into(),
        loopback(free_port()).to_string(),
        "--worker-id".into(),
        id.into(),
        "--min-delay-ms".into(),
        batch_ms.to_string(),
        "--max-delay-ms".into(),
        batch_ms.to_string(),
    ]);
    let process = start_logged("worker", &args, folder.join(format!("{id}.log")));
    reachable(loopback(port), id).await;
    process
}

/// A batcher on `port` for these worker ports; its metrics on `metrics`.
async fn batcher(folder: &Path, port: u16, metrics: u16, workers: &[u16], run: usize) -> Process {
    batcher_with(folder, port, metrics, workers, run, &[]).await
}

async fn batcher_with(
    folder: &Path,
    port: u16,
    metrics: u16,
    workers: &[u16],
    run: usize,
    extra: &[&str],
) -> Process {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--listen".into(),
        loopback(port).to_string(),
        "--metrics-listen".into(),
        loopback(metrics).to_string(),
        "--batch-size".into(),
        "4".into(),
        "--batch-window-ms".into(),
        "50".into(),
    ]);
    for worker in workers {
        args.extend(["--worker".into(), format!("http://{}", loopback(*worker))]);
    }
    let process = start_logged("batcher", &args, folder.join(format!("batcher-{run}.log")));
    reachable(loopback(port), "the batcher").await;
    process
}

async fn gateway(folder: &Path, port: u16, batcher: u16) -> Process {
    gateway_with(folder, port, &[batcher], &[]).await
}

/// A gateway on `port` for these batcher ports.
async fn gateway_with(folder: &Path, port: u16, batchers: &[u16], extra: &[&str]) -> Process {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--listen".into(),
        loopback(port).to_string(),
        "--metrics-listen".into(),
        loopback(free_port()).to_string(),
    ]);
    for batcher in batchers {
        args.extend(["--batcher".into(), format!("http://{}", loopback(*batcher))]);
    }
    let process = start_logged("gateway", &args, folder.join("gateway.log"));
    reachable(loopback(port), "the gateway").await;
    process
}

/// How one request ended.
#[derive(Debug)]
enum End {
    Whole(BatchInfo),
    /// Ended with a status after this long past the fault.
    Failed(Code, String, Option<Duration>),
    Lost,
}

/// Requests in flight: each reports its first token, then how it ended.
struct Flight {
    first_tokens: mpsc::UnboundedReceiver<()>,
    ends: mpsc::UnboundedReceiver<(String, End)>,
    count: usize,
}

/// Starts `count` requests at once.
fn fly(
    client: &HoroscoperClient<Channel>,
    count: usize,
    fault: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Flight {
    let (first_tx, first_tokens) = mpsc::unbounded_channel();
    let (end_tx, ends) = mpsc::unbounded_channel();
    for n in 0..count {
        let (client, first_tx, end_tx, fault) = (
            client.clone(),
            first_tx.clone(),
            end_tx.clone(),
            fault.clone(),
        );
        tokio::spawn(async move {
            let prefix = format!("in flight {n}");
            let call = async {
                let mut stream = start(&client, &prefix).await?;
                let mut responses = Vec::new();
                while let Some(response) = stream.message().await? {
                    if responses.is_empty() {
                        let _ = first_tx.send(());
                    }
                    responses.push(response);
                }
                Ok::<_, tonic::Status>(responses)
            };
            let end = match tokio::time::timeout(LOST_AFTER, call).await {
                Err(_) => End::Lost,
                Ok(Err(status)) => {
                    let after = fault.borrow().map(|at| at.elapsed());
                    End::Failed(status.code(), status.message().to_string(), after)
                }
                Ok(Ok(responses)) => {
                    assert_eq!(
                        text(&responses),
                        expected_text(&prefix),
                        "{prefix}: the whole, identical text"
                    );
                    End::Whole(
                        responses
                            .iter()
                            .find_map(|r| r.batch.clone())
                            .expect("a batch"),
                    )
                }
            };
            let _ = end_tx.send((prefix, end));
        });
    }
    Flight {
        first_tokens,
        ends,
        count,
    }
}

impl Flight {
    async fn all_started(&mut self) {
        for _ in 0..self.count {
            self.first_tokens
                .recv()
                .await
                .expect("every request gets a first token");
        }
    }

    async fn ends(mut self) -> Vec<(String, End)> {
        let mut ends = Vec::new();
        for _ in 0..self.count {
            ends.push(
                self.ends
                    .recv()
                    .await
                    .expect("every request reports its end"),
            );
        }
        ends.sort_by(|a, b| a.0.cmp(&b.0));
        ends
    }
}

/// One row of the README's table.
fn row(
    scenario: &str,
    happened: &str,
    ends: &[(String, End)],
    extra_sent: usize,
    extra_completed: usize,
) {
    let completed = ends
        .iter()
        .filter(|(_, e)| matches!(e, End::Whole(_)))
        .count()
        + extra_completed;
    let lost = ends.iter().filter(|(_, e)| matches!(e, End::Lost)).count();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for (_, end) in ends {
        if let End::Failed(code, _, _) = end {
            *failed.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    let failed = if failed.is_empty() {
        "0".to_string()
    } else {
        failed
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let line = format!(
        "| {scenario} | {happened} | {} | {completed} | {failed} | {lost} |",
        ends.len() + extra_sent
    );
    eprintln!("faults: {line}");
    // Every run's rows, for `just test` to show (it empties the file first).
    let table = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults/table.md");
    std::fs::create_dir_all(table.parent().unwrap()).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(table)
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    assert_eq!(lost, 0, "{scenario}: every stream ends with a status");
}

/// Asserts that every request got its whole text (on `worker`, if named).
fn all_whole(ends: &[(String, End)], worker: Option<&str>) {
    for (prefix, end) in ends {
        assert!(
            matches!(end, End::Whole(batch) if worker.is_none_or(|w| batch.worker_id == w)),
            "{prefix}: {end:?}"
        );
    }
}

fn slowest_failure(ends: &[(String, End)]) -> Duration {
    ends.iter()
        .filter_map(|(_, e)| match e {
            End::Failed(_, _, after) => *after,
            _ => None,
        })
        .max()
        .unwrap_or_default()
}

/// A counter's value in a Prometheus text exposition.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_hands_its_requests_to_another_and_clients_see_no_error() {
    // What w2 generated: its own batch whole, and of the 4 run again only
    // the tokens their clients lacked (the worker neither sends the others
    // nor waits for their steps).
    let Killed {
        ends,
        took,
        texts,
        generated,
        redispatched,
    } = kill_one_of_two("worker-killed", &[]).await;
    row(
        "worker killed (SIGKILL) mid-batch, another worker up",
        &format!(
            "its 4 requests ran again on the other worker from where their clients were: it generated {generated} tokens where the 8 texts have {texts}; all ended {} ms after the kill (batches of 2000 ms, the other worker's own batch first)",
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    let mut batches = BTreeMap::new();
    let mut own = 0;
    for (prefix, end) in &ends {
        match end {
            End::Whole(batch) => {
                assert_eq!(
                    batch.worker_id, "w2",
                    "{prefix} finished on the surviving worker"
                );
                *batches.entry(batch.batch_id).or_insert(0) += 1;
            }
            other => panic!("{prefix}: {other:?}"),
        }
    }
    let first_batch = *batches.keys().next().unwrap();
    for (prefix, end) in &ends {
        if let End::Whole(batch) = end
            && batch.batch_id == first_batch
        {
            own += expected_text(prefix).split(' ').count();
        }
    }
    assert_eq!(
        batches.len(),
        2,
        "w2's own batch, untouched, then the one run again: {batches:?}"
    );
    assert!(
        own < generated && generated < texts,
        "w2 generated its own {own} tokens and only part of the rest: {generated} of {texts}"
    );
    assert_eq!(redispatched, 4.0);
}

/// What killing one of two workers mid-batch gave.
struct Killed {
    ends: Vec<(String, End)>,
    /// From the kill to the last request's end.
    took: Duration,
    /// Tokens in the 8 requests' whole texts.
    texts: usize,
    /// Tokens the surviving worker generated.
    generated: usize,
    /// The batcher's `horoscoper_redispatched_total`.
    redispatched: f64,
}

/// Two workers (`w1`, `w2`) of 2 s batches, both services started with
/// `extra`; 8 requests; w1 killed (SIGKILL) half a second after every
/// request's first token.
async fn kill_one_of_two(scenario: &str, extra: &[&str]) -> Killed {
    let folder = logs(scenario);
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let w1 = worker_with(&folder, "w1", w1_port, 2000, extra).await;
    let _w2 = worker_with(&folder, "w2", w2_port, 2000, extra).await;
    let workers = [w1_port, w2_port];
    let _batcher = batcher_with(&folder, batcher_port, metrics_port, &workers, 1, extra).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;

    let (fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 8, fault);
    flight.all_started().await;
    // A few tokens in, so that the requests that run again must skip them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    fault_tx.send_replace(Some(killed));
    w1.signal("KILL");
    let ends = flight.ends().await;
    let took = killed.elapsed();

    let texts: usize = ends
        .iter()
        .map(|(prefix, _)| expected_text(prefix).split(' ').count())
        .sum();
    let w2_metrics = http_get(loopback(w2_port), "/metrics").await.body;
    let generated = common::sample(&w2_metrics, "horoscoper_tokens_total").unwrap() as usize;
    let metrics = http_get(loopback(metrics_port), "/metrics").await.body;
    let redispatched = common::sample(&metrics, "horoscoper_redispatched_total").unwrap();
    Killed {
        ends,
        took,
        texts,
        generated,
        redispatched,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_continuous_batching_a_worker_killed_mid_generation_hands_its_requests_over_whole() {
    // Both modes run 4 requests a worker at once (--batch-size 4, and the
    // workers' default --slots 4).
    let Killed {
        ends,
        took,
        texts,
        generated,
        redispatched,
    } = kill_one_of_two("continuous-worker-killed", &["--batching", "continuous"]).await;
    row(
        "continuous batching: a worker killed (SIGKILL) mid-generation, another up",
        &format!(
            "its 4 requests joined the other worker's free slots and went on from where their clients were: it generated {generated} tokens where the 8 texts have {texts}; all ended {} ms after the kill",
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    all_whole(&ends, Some("w2"));
    for (prefix, end) in &ends {
        if let End::Whole(batch) = end {
            assert_eq!(batch.batching(), Batching::Continuous, "{prefix}");
            assert!(batch.max_shared <= 4, "{prefix}: four slots: {batch:?}");
        }
    }
    assert!(
        generated < texts,
        "w2 generated only what the clients lacked: {generated} of {texts}"
    );
    assert_eq!(redispatched, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_worker_left_requests_end_with_unavailable_promptly() {
    let folder = logs("last-worker-killed");
    let [w1_port, batcher_port, metrics_port, gateway_port] = ports();
    let w1 = worker(&folder, "w1", w1_port, 2000).await;
    let _batcher = batcher(&folder, batcher_port, metrics_port, &[w1_port], 1).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;

    let (fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 4, fault);
    flight.all_started().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fault_tx.send_replace(Some(Instant::now()));
    w1.signal("KILL");
    let ends = flight.ends().await;

    let slowest = slowest_failure(&ends);
    row(
        "the only worker killed (SIGKILL) mid-batch",
        &format!(
            "UNAVAILABLE naming the lost worker, at most {} ms after the kill",
            slowest.as_millis()
        ),
        &ends,
        0,
        0,
    );
    for (prefix, end) in &ends {
        match end {
            End::Failed(Code::Unavailable, message, _) => assert!(
                message.contains("worker w1 was lost while generating this request"),
                "{prefix}: {message}"
            ),
            other => panic!("{prefix}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_killed_and_restarted_fails_its_requests_and_serves_again() {
    let folder = logs("batcher-killed");
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let _w1 = worker(&folder, "w1", w1_port, 2000).await;
    let _w2 = worker(&folder, "w2", w2_port, 2000).await;
    let batcher_process =
        batcher(&folder, batcher_port, metrics_port, &[w1_port, w2_port], 1).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;

    let (fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 4, fault);
    flight.all_started().await;
    fault_tx.send_replace(Some(Instant::now()));
    batcher_process.signal("KILL");
    let ends = flight.ends().await;
    let slowest = slowest_failure(&ends);
    for (prefix, end) in &ends {
        match end {
            End::Failed(Code::Unavailable, _, _) => {}
            other => panic!("{prefix}: {other:?}"),
        }
    }

    // While it is down, calls fail fast; once it is back, the gateway (and
    // the new batcher's worker connections) get through with no restart.
    let down = common::infer(&client, "while it is down")
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    let _batcher = batcher(&folder, batcher_port, metrics_port, &[w1_port, w2_port], 2).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match common::infer(&client, "after the restart").await {
            Ok(responses) => {
                assert_eq!(text(&responses), expected_text("after the restart"));
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(attempts < 100, "never recovered: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    row(
        "batcher killed (SIGKILL) mid-batch, then restarted",
        &format!(
            "in-flight requests: UNAVAILABLE at most {} ms after the kill; a call while it was down: UNAVAILABLE at once; after the restart, call {attempts} got its whole text",
            slowest.as_millis(),
        ),
        &ends,
        0,
        0,
    );
}

/// How many requests the gateway's log says it moved to another batcher.
fn moved(folder: &Path) -> usize {
    std::fs::read_to_string(folder.join("gateway.log"))
        .unwrap()
        .matches("request moved to another batcher")
        .count()
}

/// Two workers whose batches take `batch_ms`, two batchers sharing them,
/// and a gateway spreading requests over both batchers.
struct TwoBatchers {
    _workers: [Process; 2],
    /// The first batcher, for the test to break, and its metrics port.
    b1: Process,
    b1_metrics: u16,
    _b2: Process,
    _gateway: Process,
    client: HoroscoperClient<Channel>,
}

async fn two_batchers(folder: &Path, batch_ms: u64) -> TwoBatchers {
    let [
        w1_port,
        w2_port,
        b1_port,
        b1_metrics,
        b2_port,
        b2_metrics,
        gateway_port,
    ] = ports();
    let w1 = worker(folder, "w1", w1_port, batch_ms).await;
    let w2 = worker(folder, "w2", w2_port, batch_ms).await;
    let b1 = batcher(folder, b1_port, b1_metrics, &[w1_port, w2_port], 1).await;
    let b2 = batcher(folder, b2_port, b2_metrics, &[w1_port, w2_port], 2).await;
    let gateway = gateway_with(folder, gateway_port, &[b1_port, b2_port], &[]).await;
    TwoBatchers {
        _workers: [w1, w2],
        b1,
        b1_metrics,
        _b2: b2,
        _gateway: gateway,
        client: client(loopback(gateway_port)).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_killed_mid_batch_with_another_up_hands_its_requests_over_and_clients_see_no_error()
 {
    let folder = logs("batcher-killed-of-two");
    let mesh = two_batchers(&folder, 2000).await;
    let (fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&mesh.client, 8, fault);
    flight.all_started().await;
    let held = http_get(loopback(mesh.b1_metrics), "/metrics").await.body;
    let held = common::sample(&held, "horoscoper_batch_size_sum").unwrap_or_default();
    let killed = Instant::now();
    fault_tx.send_replace(Some(killed));
    mesh.b1.signal("KILL");
    let ends = flight.ends().await;
    let took = killed.elapsed();
    let moved = moved(&folder);
    row(
        "one of 2 batchers killed (SIGKILL) mid-batch",
        &format!(
            "the gateway moved its {moved} requests to the other batcher with the tokens their clients had; all 8 ended whole and identical {} ms after the kill",
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    all_whole(&ends, None);
    assert!(held > 0.0, "the killed batcher held requests");
    assert_eq!(moved as f64, held, "every request it held moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_told_to_stop_with_another_up_gets_no_new_request_and_finishes_its_own() {
    let folder = logs("batcher-drain-of-two");
    let mesh = two_batchers(&folder, 1500).await;
    let (_fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&mesh.client, 6, fault.clone());
    flight.all_started().await;

    let signalled = Instant::now();
    mesh.b1.notify("TERM");
    // Every request sent while it drains goes to the other batcher.
    let during = fly(&mesh.client, 4, fault);
    let (status, took) = exits(mesh.b1, signalled).await;
    let ends = merged(&flight.ends().await, &during.ends().await);
    let moved = moved(&folder);
    row(
        "one of 2 batchers sent SIGTERM with 6 requests running, 4 more sent as it drains",
        &format!(
            "the 4 new ones went to the other batcher ({moved} moved); all 10 ended whole; it exited 0 after {} ms",
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    assert!(status.success(), "{status:?}");
    all_whole(&ends, None);
}

/// Watches `service`'s health on `port` from before the drain: the statuses
/// it goes through arrive on the returned channel.
async fn watch_health(port: u16, service: &str) -> mpsc::UnboundedReceiver<ServingStatus> {
    let channel = Channel::from_shared(format!("http://{}", loopback(port)))
        .unwrap()
        .connect()
        .await
        .expect("health answers");
    let mut client = HealthClient::new(channel);
    let mut statuses = client
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(status)) = statuses.message().await {
            if sender.send(status.status()).is_err() {
                return; // the test has seen what it needed; let the drain end
            }
        }
    });
    receiver
}

async fn turns_not_serving(mut statuses: mpsc::UnboundedReceiver<ServingStatus>) {
    assert_eq!(statuses.recv().await, Some(ServingStatus::Serving));
    assert_eq!(statuses.recv().await, Some(ServingStatus::NotServing));
}

/// Waits for a process to exit after a signal; how long it took.
async fn exits(process: Process, signalled: Instant) -> (std::process::ExitStatus, Duration) {
    let status = tokio::time::timeout(
        LOST_AFTER,
        tokio::task::spawn_blocking(move || process.wait()),
    )
    .await
    .expect("the process exits")
    .unwrap();
    (status, signalled.elapsed())
}

/// What draining one of two workers mid-batch gave.
struct Drained {
    status: std::process::ExitStatus,
    /// From SIGTERM to its exit.
    took: Duration,
    /// The 4 requests it ran when told to stop.
    first: Vec<(String, End)>,
    /// The 4 sent while it drained.
    second: Vec<(String, End)>,
    /// The batcher's `horoscoper_redispatched_total`.
    redispatched: f64,
}

/// A worker `w1` of 1.5 s batches runs 4 requests; `w2` comes up (only
/// then, so that those are w1's); w1 gets SIGTERM, and once its health says
/// NOT_SERVING 4 more requests are sent. Every service starts with `extra`.
async fn drain_one_of_two(scenario: &str, extra: &[&str]) -> Drained {
    let folder = logs(scenario);
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let w1 = worker_with(&folder, "w1", w1_port, 1500, extra).await;
    let workers = [w1_port, w2_port];
    let _batcher = batcher_with(&folder, batcher_port, metrics_port, &workers, 1, extra).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;
    let (_fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut first = fly(&client, 4, fault.clone());
    first.all_started().await;
    let _w2 = worker_with(&folder, "w2", w2_port, 1500, extra).await;
    let health = watch_health(w1_port, "horoscoper.mesh.v1.WorkerService").await;
    // The server as a whole too: what probes and load balancers ask by default.
    let overall = watch_health(w1_port, "").await;

    let signalled = Instant::now();
    w1.notify("TERM");
    turns_not_serving(health).await;
    turns_not_serving(overall).await;
    let mut second = fly(&client, 4, fault);
    second.all_started().await;
    let (status, took) = exits(w1, signalled).await;
    let (first, second) = (first.ends().await, second.ends().await);
    let metrics = http_get(loopback(metrics_port), "/metrics").await.body;
    let redispatched = common::sample(&metrics, "horoscoper_redispatched_total").unwrap();
    Drained {
        status,
        took,
        first,
        second,
        redispatched,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_finishes_its_batch_takes_no_other_and_exits() {
    let drained = drain_one_of_two("worker-drain", &[]).await;
    drained.check(
        "worker sent SIGTERM mid-batch (grace 25 s)",
        "its batch finished on it; requests sent meanwhile ran on the other worker",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_continuous_batching_a_worker_told_to_stop_finishes_its_requests_takes_no_other_and_exits()
 {
    let continuous = ["--batching", "continuous"];
    let drained = drain_one_of_two("continuous-worker-drain", &continuous).await;
    drained.check(
        "continuous batching: a worker sent SIGTERM mid-generation (grace 25 s)",
        "its requests finished on it; requests sent meanwhile joined the other worker",
    );
}

impl Drained {
    /// Its row, and what must hold: health NOT_SERVING at once (awaited
    /// before), the first requests whole on w1, the later whole on w2, an
    /// exit 0, and no request counted as lost.
    fn check(self, scenario: &str, happened: &str) {
        let all = merged(&self.first, &self.second);
        row(
            scenario,
            &format!(
                "health NOT_SERVING at once; {happened}; exited 0 after {} ms",
                self.took.as_millis()
            ),
            &all,
            0,
            0,
        );
        assert!(self.status.success(), "{:?}", self.status);
        all_whole(&self.first, Some("w1"));
        all_whole(&self.second, Some("w2"));
        assert_eq!(
            self.redispatched, 0.0,
            "a draining worker is not a lost one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_worker_told_to_stop_is_not_lost_and_what_waits_runs_on_its_replacement() {
    let folder = logs("only-worker-drain");
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let w1 = worker(&folder, "w1", w1_port, 1500).await;
    let _batcher = batcher(&folder, batcher_port, metrics_port, &[w1_port, w2_port], 1).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;
    let (_fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut first = fly(&client, 4, fault.clone());
    first.all_started().await;

    let health = watch_health(w1_port, "").await;
    let signalled = Instant::now();
    w1.notify("TERM");
    turns_not_serving(health).await;
    // Sent while the only worker drains: they wait for another.
    let second = fly(&client, 4, fault);
    let (status, took) = exits(w1, signalled).await;
    let _w2 = worker(&folder, "w2", w2_port, 1500).await;
    let (first, second) = (first.ends().await, second.ends().await);

    let all = merged(&first, &second);
    row(
        "the only worker sent SIGTERM mid-batch, its replacement up after it exits",
        &format!(
            "its batch finished on it and it took no other; not counted as lost (0 run again); exited 0 after {} ms; the 4 sent meanwhile waited in the queue and ran on the replacement, whole",
            took.as_millis()
        ),
        &all,
        0,
        0,
    );
    assert!(status.success(), "{status:?}");
    all_whole(&first, Some("w1"));
    all_whole(&second, Some("w2"));
    let metrics = http_get(loopback(metrics_port), "/metrics").await.body;
    assert_eq!(
        common::sample(&metrics, "horoscoper_redispatched_total").unwrap(),
        0.0,
        "a draining worker is not a lost one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_grace_runs_out_hands_its_batch_to_another() {
    let folder = logs("worker-drain-cut");
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let w1 = worker_with(&folder, "w1", w1_port, 2000, &["--drain-grace-ms", "300"]).await;
    let _batcher = batcher(&folder, batcher_port, metrics_port, &[w1_port, w2_port], 1).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;
    let (_fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 4, fault);
    flight.all_started().await;
    let _w2 = worker(&folder, "w2", w2_port, 2000).await;

    let signalled = Instant::now();
    w1.notify("TERM");
    let (status, took) = exits(w1, signalled).await;
    let ends = flight.ends().await;
    row(
        "worker sent SIGTERM mid-batch, grace (300 ms) shorter than the batch",
        &format!(
            "cut at the grace, exited 0 after {} ms; its requests ran again on the other worker, whole",
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    assert!(status.success(), "{status:?}");
    all_whole(&ends, Some("w2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_told_to_stop_refuses_new_requests_and_finishes_the_open_ones() {
    let folder = logs("batcher-drain");
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let _w1 = worker(&folder, "w1", w1_port, 1500).await;
    let _w2 = worker(&folder, "w2", w2_port, 1500).await;
    let batcher_process =
        batcher(&folder, batcher_port, metrics_port, &[w1_port, w2_port], 1).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;
    let (_fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 6, fault);
    flight.all_started().await;
    let health = watch_health(batcher_port, "horoscoper.mesh.v1.BatcherService").await;
    // The server as a whole too: what probes and load balancers ask by default.
    let overall = watch_health(batcher_port, "").await;

    let signalled = Instant::now();
    batcher_process.notify("TERM");
    turns_not_serving(health).await;
    turns_not_serving(overall).await;
    let refused = common::infer(&client, "while the batcher drains")
        .await
        .unwrap_err();
    let (status, took) = exits(batcher_process, signalled).await;
    let ends = flight.ends().await;
    row(
        "batcher sent SIGTERM with 6 requests running (grace 25 s)",
        &format!(
            "health NOT_SERVING at once; a new request: {:?}; the 6 finished whole; exited 0 after {} ms",
            refused.code(),
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(status.success(), "{status:?}");
    all_whole(&ends, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_told_to_stop_finishes_its_streams_or_cuts_them_at_the_grace() {
    let folder = logs("gateway-drain");
    let [w1_port, batcher_port, metrics_port] = ports();
    let _w1 = worker(&folder, "w1", w1_port, 1500).await;
    let _batcher = batcher(&folder, batcher_port, metrics_port, &[w1_port], 1).await;

    // Grace long enough: the open streams finish.
    let gateway_port = free_port();
    let gateway_process = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;
    let (_fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 4, fault.clone());
    flight.all_started().await;
    let health = watch_health(gateway_port, "horoscoper.v1.Horoscoper").await;
    // The server as a whole too: what probes and load balancers ask by default.
    let overall = watch_health(gateway_port, "").await;
    let signalled = Instant::now();
    gateway_process.notify("TERM");
    turns_not_serving(health).await;
    turns_not_serving(overall).await;
    let refused = common::infer(&client, "while the gateway drains")
        .await
        .unwrap_err();
    let (status, took) = exits(gateway_process, signalled).await;
    let ends = flight.ends().await;
    row(
        "gateway sent SIGTERM with 4 streams open (grace 25 s)",
        &format!(
            "health NOT_SERVING at once; a new call: {:?} {:?}; the 4 finished whole; exited 0 after {} ms",
            refused.code(),
            refused.message(),
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(status.success(), "{status:?}");
    all_whole(&ends, None);

    // Grace shorter than the batch: the open streams end with UNAVAILABLE.
    let gateway_port = free_port();
    let gateway_process = gateway_with(
        &folder,
        gateway_port,
        &[batcher_port],
        &["--drain-grace-ms", "300"],
    )
    .await;
    let client = common::client(loopback(gateway_port)).await;
    let mut flight = fly(&client, 4, fault);
    flight.all_started().await;
    let signalled = Instant::now();
    gateway_process.notify("TERM");
    let (status, took) = exits(gateway_process, signalled).await;
    let ends = flight.ends().await;
    row(
        "gateway sent SIGTERM with 4 streams open, grace (300 ms) shorter than the batch",
        &format!(
            "the streams ended with UNAVAILABLE \"shutting down\" at the grace; exited 0 after {} ms",
            took.as_millis()
        ),
        &ends,
        0,
        0,
    );
    assert!(status.success(), "{status:?}");
    for (prefix, end) in &ends {
        match end {
            End::Failed(Code::Unavailable, message, _) => assert!(
                message.starts_with("the gateway is shutting down"),
                "{prefix}: {message}"
            ),
            other => panic!("{prefix}: {other:?}"),
        }
    }
}

/// Two flights' ends as one, by prefix.
fn merged(first: &[(String, End)], second: &[(String, End)]) -> Vec<(String, End)> {
    let mut all: Vec<_> = first
        .iter()
        .chain(second)
        .map(|(p, e)| (p.clone(), clone_end(e)))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn clone_end(end: &End) -> End {
    match end {
        End::Whole(batch) => End::Whole(batch.clone()),
        End::Failed(code, message, after) => End::Failed(*code, message.clone(), *after),
        End::Lost => End::Lost,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_is_found_out_by_keepalive_and_its_requests_run_elsewhere() {
    let folder = logs("worker-frozen");
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let w1 = worker(&folder, "w1", w1_port, 2000).await;
    let _batcher = batcher(&folder, batcher_port, metrics_port, &[w1_port, w2_port], 1).await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;
    let (fault_tx, fault) = tokio::sync::watch::channel(None);
    let mut flight = fly(&client, 4, fault);
    flight.all_started().await;
    let _w2 = worker(&folder, "w2", w2_port, 2000).await;

    // Stopped, not dead: its TCP connection stays up, only HTTP/2 keepalive
    // (a PING every 10 s, 5 s to answer) can tell.
    let frozen = Instant::now();
    fault_tx.send_replace(Some(frozen));
    w1.notify("STOP");
    let ends = flight.ends().await;
    let took = frozen.elapsed();
    w1.notify("CONT");
    drop(w1);
    row(
        "worker frozen (SIGSTOP) mid-batch, another worker up",
        &format!(
            "keepalive found it out; its requests ran again on the other worker and ended whole {:.1} s after the freeze",
            took.as_secs_f64()
        ),
        &ends,
        0,
        0,
    );
    all_whole(&ends, Some("w2"));
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_twice_its_capacity_the_batcher_refuses_the_excess_at_once_and_serves_the_rest_in_time()
{
    let folder = logs("overload");
    let [w1_port, w2_port, batcher_port, metrics_port, gateway_port] = ports();
    let _w1 = worker(&folder, "w1", w1_port, 500).await;
    let _w2 = worker(&folder, "w2", w2_port, 500).await;
    // Capacity: 16 requests held (8 running on 2 workers × 4, 8 queued).
    let batcher_process = batcher_with(
        &folder,
        batcher_port,
        metrics_port,
        &[w1_port, w2_port],
        1,
        &["--max-requests", "16", "--request-ttl-ms", "3000"],
    )
    .await;
    let _gateway = gateway(&folder, gateway_port, batcher_port).await;
    let client = client(loopback(gateway_port)).await;

    // 32 closed-loop clients for 8 s: twice what the batcher holds.
    let batcher_pid = batcher_process.id();
    let until = Instant::now() + Duration::from_secs(8);
    let mut clients = tokio::task::JoinSet::new();
    for me in 0..32 {
        let client = client.clone();
        clients.spawn(async move {
            let mut ends: Vec<(String, End)> = Vec::new();
            let mut round = 0;
            while Instant::now() < until {
                round += 1;
                let prefix = format!("client {me}, request {round}");
                let started = Instant::now();
                let end =
                    match tokio::time::timeout(LOST_AFTER, common::infer(&client, &prefix)).await {
                        Err(_) => End::Lost,
                        Ok(Ok(responses)) => {
                            assert_eq!(text(&responses), expected_text(&prefix));
                            End::Whole(responses.last().unwrap().batch.clone().unwrap())
                        }
                        Ok(Err(status)) => End::Failed(
                            status.code(),
                            status.message().to_string(),
                            Some(started.elapsed()),
                        ),
                    };
                if matches!(end, End::Failed(..)) {
                    tokio::time::sleep(Duration::from_millis(20)).await; // a client's back-off
                }
                ends.push((prefix, end));
            }
            ends
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_early = rss_kib(batcher_pid);
    let mut ends = Vec::new();
    while let Some(joined) = clients.join_next().await {
        ends.extend(joined.unwrap());
    }
    let rss_late = rss_kib(batcher_pid);

    let refused: Vec<Duration> = ends
        .iter()
        .filter_map(|(_, end)| match end {
            End::Failed(Code::ResourceExhausted, _, after) => *after,
            _ => None,
        })
        .collect();
    let slowest_refusal = refused.iter().max().copied().unwrap_or_default();
    row(
        "overload: 32 closed-loop clients against --max-requests 16 (2 workers × batches of 4, 0.5 s each)",
        &format!(
            "the excess refused at once with RESOURCE_EXHAUSTED (slowest refusal {} ms); every admitted request finished whole within its time to live; batcher memory {} MiB after 2 s, {} MiB at the end",
            slowest_refusal.as_millis(),
            rss_early / 1024,
            rss_late / 1024
        ),
        &ends,
        0,
        0,
    );
    for (prefix, end) in &ends {
        match end {
            End::Whole(_) | End::Failed(Code::ResourceExhausted, _, _) => {}
            other => panic!("{prefix}: {other:?}"),
        }
    }
    assert!(!refused.is_empty(), "twice the capacity is refused in part");
    assert!(
        rss_late <= rss_early + 16 * 1024,
        "batcher memory grew from {rss_early} KiB to {rss_late} KiB under steady overload"
    );
}
