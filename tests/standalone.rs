//! The three standalone binaries, as containers run them: wired by flags,
//! each serving `/metrics` on its main port (and on `--metrics-listen` when
//! given); several on one host need nothing but their own `--listen`;
//! SIGINT drains each and it exits cleanly.

mod common;

use common::{
    expected_text, metric,
    processes::{Process, binary, free_port},
    text,
};
use std::{net::SocketAddr, time::Duration};

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_serve_a_request_and_their_own_metrics() {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let [
        worker,
        worker_metrics,
        batcher,
        batcher_metrics,
        gateway,
        gateway_metrics,
    ] = ports[..]
    else {
        unreachable!()
    };
    let listen = |port: u16| addr(port).to_string();
    let worker_url = format!("http://{}", listen(worker));
    let batcher_url = format!("http://{}", listen(batcher));
    let services = [
        Process::start(
            &binary("worker"),
            &[
                "--listen",
                &listen(worker),
                "--metrics-listen",
                &listen(worker_metrics),
                "--worker-id",
                "solo",
                "--min-delay-ms",
                "0",
                "--max-delay-ms",
                "0",
            ],
            &[],
        ),
        Process::start(
            &binary("batcher"),
            &[
                "--listen",
                &listen(batcher),
                "--metrics-listen",
                &listen(batcher_metrics),
                "--worker",
                &worker_url,
            ],
            &[],
        ),
        Process::start(
            &binary("gateway"),
            &[
                "--listen",
                &listen(gateway),
                "--metrics-listen",
                &listen(gateway_metrics),
                "--batcher",
                &batcher_url,
            ],
            &[],
        ),
    ];

    let mut responses = None;
    for _ in 0..100 {
        if let Ok(channel) =
            tonic::transport::Channel::from_shared(format!("http://{}", listen(gateway)))
                .unwrap()
                .connect()
                .await
        {
            let client = horoscoper_proto::v1::horoscoper_client::HoroscoperClient::new(channel);
            if let Ok(served) = common::infer(&client, "standalone").await {
                responses = Some(served);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let responses = responses.expect("the three binaries serve a request");
    assert_eq!(text(&responses), expected_text("standalone"));
    assert_eq!(
        responses.last().unwrap().batch.as_ref().unwrap().worker_id,
        "solo"
    );

    let tokens = expected_text("standalone").split(' ').count() as f64;
    for worker_metrics in [addr(worker_metrics), addr(worker)] {
        assert_eq!(
            metric(worker_metrics, "horoscoper_tokens_total").await,
            tokens
        );
    }
    for batcher_metrics in [addr(batcher_metrics), addr(batcher)] {
        assert_eq!(metric(batcher_metrics, "horoscoper_workers").await, 1.0);
        assert!(metric(batcher_metrics, "horoscoper_batch_size_count").await >= 1.0);
    }
    for gateway_metrics in [addr(gateway_metrics), addr(gateway)] {
        assert!(
            metric(
                gateway_metrics,
                r#"horoscoper_requests_total{outcome="ok"}"#
            )
            .await
                >= 1.0
        );
    }

    // Drained front to back, as a deployment would: each exits with 0.
    for service in services.into_iter().rev() {
        assert!(service.stop().success());
    }
}

/// A batcher that stops ends its stream to each worker, and waits for the
/// worker to end its side, before it exits: the worker sees the stream end,
/// not a connection broken mid-stream ("h2 protocol error", logged as a
/// failed stream). On one thread, the batcher's exit came right after its
/// drain, before its connection had sent anything more.
#[tokio::test]
async fn a_stopping_batcher_ends_its_worker_streams_before_it_exits() {
    let [worker, batcher, batcher_metrics] = [free_port(), free_port(), free_port()];
    let log_path = std::env::temp_dir().join(format!("horoscoper-goodbye-worker-{worker}.log"));
    let worker_process = Process::spawn(
        std::process::Command::new(binary("worker"))
            .args([
                "--threads",
                "1",
                "--listen",
                &addr(worker).to_string(),
                "--metrics-listen",
                "127.0.0.1:0",
                "--worker-id",
                "goodbye",
            ])
            .stderr(std::fs::File::create(&log_path).unwrap()),
        &binary("worker"),
    );
    let batcher_process = Process::start(
        &binary("batcher"),
        &[
            "--threads",
            "1",
            "--listen",
            &addr(batcher).to_string(),
            "--metrics-listen",
            &addr(batcher_metrics).to_string(),
            "--worker",
            &format!("http://{}", addr(worker)),
        ],
        &[],
    );
    let mut connected = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr(batcher_metrics))
            .await
            .is_ok()
            && metric(addr(batcher_metrics), "horoscoper_workers").await == 1.0
        {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(connected, "the batcher connects to its worker");

    assert!(batcher_process.stop().success());
    // Time for the worker to see what became of its stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(worker_process.stop().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(log.contains("worker stopped"), "{log}");
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "the worker saw its stream end cleanly:\n{log}"
    );
}

/// Two workers on one host, started with their own `--listen` and nothing
/// else: both serve, each with `/metrics` on its own port (a shared default
/// metrics port once made the second exit with "Address already in use").
#[tokio::test]
async fn two_workers_on_one_host_need_only_their_own_listen() {
    let ports = [free_port(), free_port()];
    let workers: Vec<Process> = ports
        .iter()
        .map(|port| {
            Process::start(
                &binary("worker"),
                &["--listen", &addr(*port).to_string()],
                &[],
            )
        })
        .collect();
    for port in ports {
        let mut served = None;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr(port)).await.is_ok() {
                served = Some(metric(addr(port), "horoscoper_tokens_total").await);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served, Some(0.0), "the worker on {port} serves /metrics");
    }
    for worker in workers {
        assert!(worker.stop().success(), "each worker was still running");
    }
}
