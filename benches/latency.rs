//! Latency of a whole horoscope through the mesh at zero delay: one client,
//! one request at a time, window 0, so every figure is pure plumbing (three
//! gRPC hops and back, one token per response).
//!
//! `cargo bench --bench latency [-- REQUESTS]` (or `just bench`) starts the
//! mesh in this process as `cargo run --release` does, on loopback ports.

use clap::Parser;
use horoscoper_proto::v1::{InferRequest, horoscoper_client::HoroscoperClient};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(2000);
    let args = horoscoper::Args::parse_from([
        "horoscoper",
        "--min-delay-ms",
        "0",
        "--max-delay-ms",
        "0",
        "--batch-window-ms",
        "0",
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let mesh = tokio::spawn(horoscoper::run(
        args.into_config().unwrap(),
        listener,
        stop.clone().cancelled_owned(),
    ));
    let mut client = HoroscoperClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let mut run = async |count: usize| {
        let mut times = Vec::with_capacity(count);
        let mut tokens = 0usize;
        for i in 0..count {
            let started = Instant::now();
            let request = InferRequest {
                prefix: format!("request {i}"),
            };
            let mut stream = client.infer(request).await.unwrap().into_inner();
            while stream.message().await.unwrap().is_some() {
                tokens += 1;
            }
            times.push(started.elapsed());
        }
        (times, tokens)
    };
    run(200).await; // warm-up: connections, allocator, caches
    let started = Instant::now();
    let (mut times, tokens) = run(requests).await;
    let elapsed = started.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("whole horoscope at zero delay, 1 client, {requests} requests, {tokens} tokens");
    println!(
        "p50 {:.3} ms · p90 {:.3} ms · p99 {:.3} ms · max {:.3} ms · {:.0} tokens/s",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(*times.last().unwrap()),
        tokens as f64 / elapsed.as_secs_f64()
    );
    stop.cancel();
    mesh.await.unwrap().unwrap();
}
