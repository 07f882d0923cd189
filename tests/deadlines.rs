//! The client's deadline (`grpc-timeout`) bounds the whole path: a stream
//! still running when it passes ends with DEADLINE_EXCEEDED from the server,
//! whatever the client enforces itself, and the work stops at the worker.

mod common;

use common::{client, expected_text, mesh, raw};
use horoscoper_proto::v1::InferRequest;
use std::time::{Duration, Instant};
use tonic::Code;

fn with_timeout(prefix: &str, timeout: Duration) -> tonic::Request<InferRequest> {
    let mut request = tonic::Request::new(InferRequest {
        prefix: prefix.into(),
    });
    // Sent as grpc-timeout; a tonic client does not enforce it itself, so
    // what ends the stream here is the server.
    request.set_timeout(timeout);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_mid_stream_ends_it_with_deadline_exceeded() {
    deadline_mid_stream("static").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_continuous_batching_a_deadline_that_passes_mid_stream_ends_it_too() {
    deadline_mid_stream("continuous").await;
}

/// A request whose deadline passes while it streams, beside one without,
/// on one worker in `batching` mode.
async fn deadline_mid_stream(batching: &str) {
    let flags = [
        "--workers",
        "1",
        "--batching",
        batching,
        "--batch-size",
        "4",
        "--batch-window-ms",
        "50",
        "--min-delay-ms",
        "1500",
        "--max-delay-ms",
        "1500",
    ];
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let mate = {
        let client = client.clone();
        tokio::spawn(async move { common::infer(&client, "a patient batch-mate").await })
    };
    let started = Instant::now();
    let mut stream = client
        .clone()
        .infer(with_timeout("in a hurry", Duration::from_millis(500)))
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(response)) => text.push_str(&response.text),
            Ok(None) => panic!("the stream ended without a status after {text:?}"),
            Err(status) => break status,
        }
    };
    eprintln!("{:?} after {:?}: {status:?}", text, started.elapsed());
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(!text.is_empty() && expected_text("in a hurry").starts_with(&text));
    // Its batch-mate is not disturbed.
    let mate = mate.await.unwrap().unwrap();
    assert_eq!(common::text(&mate), expected_text("a patient batch-mate"));
    // The worker stopped generating for it at the deadline (it learns the
    // time left with the batch), not at the end of its text.
    let whole = |prefix: &str| horoscoper_worker::token_count(&expected_text(prefix));
    let metrics = common::http_get(mesh.addr, "/metrics").await.body;
    let tokens =
        common::sample(&metrics, "horoscoper_tokens_total").expect("the token counter") as usize;
    let hurried = tokens - whole("a patient batch-mate");
    eprintln!(
        "tokens generated for the hurried request: {hurried} of {}",
        whole("in a hurry")
    );
    assert!(hurried < whole("in a hurry"), "{hurried}");
}

/// An Infer call with this `grpc-timeout` over raw HTTP/2: a tonic client
/// would enforce a tiny timeout itself and report CANCELLED before the
/// server answers, which is not what is tested here.
async fn infer_with_header(
    addr: std::net::SocketAddr,
    prefix: &str,
    grpc_timeout: &str,
) -> (String, Code, String) {
    let connection = raw::connect(addr).await;
    let answer = raw::call(
        &connection,
        "/horoscoper.v1.Horoscoper/Infer",
        &[("grpc-timeout", grpc_timeout)],
        raw::frame(&InferRequest {
            prefix: prefix.into(),
        }),
    )
    .await;
    (answer.text, answer.code, answer.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_grpc_timeouts_get_a_clear_answer() {
    let flags = [
        "--workers",
        "1",
        "--batch-window-ms",
        "0",
        "--min-delay-ms",
        "0",
        "--max-delay-ms",
        "0",
    ];
    let mesh = mesh(&flags).await;
    // One nanosecond, and zero: gone before anything can happen. Refused
    // before the body is read, so never tonic's own CANCELLED "Timeout
    // expired", whichever of the call's frames arrives first.
    for (no_time, limit) in [("1n", "1ns"), ("0S", "0ns")] {
        let (text, code, message) = infer_with_header(mesh.addr, "no time", no_time).await;
        assert_eq!(
            (text.as_str(), code),
            ("", Code::DeadlineExceeded),
            "{no_time}: {message}"
        );
        assert_eq!(
            message,
            format!("the client's deadline of {limit} had passed when the request arrived")
        );
    }
    // The largest the format allows (over 11,000 years): no overflow.
    let (text, code, _) = infer_with_header(mesh.addr, "all the time", "99999999H").await;
    assert_eq!((text, code), (expected_text("all the time"), Code::Ok));
    // Malformed: refused, saying what is wrong.
    for bad in ["soon", "-5S", "123456789S", "5s"] {
        let (_, code, message) = infer_with_header(mesh.addr, "whenever", bad).await;
        assert_eq!(code, Code::InvalidArgument, "{bad}: {message}");
        assert_eq!(
            message,
            format!(
                "grpc-timeout {bad:?} is malformed: expected at most 8 digits and a unit, one of H M S m u n"
            )
        );
    }
}
