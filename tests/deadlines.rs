//! The client's deadline (`grpc-timeout`) bounds the whole path: a stream
//! still running when it passes ends with DEADLINE_EXCEEDED from the server,
//! whatever the client enforces itself, and the work stops at the worker.

mod common;

use common::{client, expected_text, mesh};
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
    let flags = [
        "--workers",
        "1",
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
    let whole = |prefix: &str| horoscoper_worker::batch::token_count(&expected_text(prefix));
    let metrics = common::http_get(mesh.addr, "/metrics").await.body;
    let tokens: usize = metrics
        .lines()
        .find_map(|line| line.strip_prefix("horoscoper_tokens_total ")?.parse().ok())
        .expect("the token counter");
    let hurried = tokens - whole("a patient batch-mate");
    eprintln!(
        "tokens generated for the hurried request: {hurried} of {}",
        whole("in a hurry")
    );
    assert!(hurried < whole("in a hurry"), "{hurried}");
}

/// An Infer call over raw HTTP/2 with this `grpc-timeout`: a tonic client
/// would enforce the timeout itself before the server answers (reporting
/// CANCELLED), which is not what is tested here. The text received and the
/// status the server ended the call with.
async fn infer_with_header(
    addr: std::net::SocketAddr,
    prefix: &str,
    grpc_timeout: &str,
) -> (String, Code, String) {
    use prost::Message as _;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}/horoscoper.v1.Horoscoper/Infer"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(())
        .unwrap();
    let (response, mut upload) = send.send_request(request, false).unwrap();
    let encoded = InferRequest {
        prefix: prefix.into(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    upload.send_data(framed.into(), true).unwrap();
    let response = response.await.unwrap();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        received.extend_from_slice(&chunk);
    }
    // A trailers-only answer carries the status in its headers.
    let trailers = body.trailers().await.unwrap().unwrap_or(headers);
    let code = Code::from(
        trailers["grpc-status"]
            .to_str()
            .unwrap()
            .parse::<i32>()
            .unwrap(),
    );
    let message = trailers
        .get("grpc-message")
        .map(|m| percent_decode(m.to_str().unwrap()))
        .unwrap_or_default();
    let mut text = String::new();
    let mut rest = &received[..];
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        text.push_str(
            &horoscoper_proto::v1::InferResponse::decode(&rest[5..5 + length])
                .unwrap()
                .text,
        );
        rest = &rest[5 + length..];
    }
    (text, code, message)
}

/// grpc-message is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[at + 1..at + 3], 16).unwrap());
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).unwrap()
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
    // One nanosecond, and zero: gone before anything can happen.
    for no_time in ["1n", "0S"] {
        let (text, code, message) = infer_with_header(mesh.addr, "no time", no_time).await;
        assert_eq!(
            (text.as_str(), code),
            ("", Code::DeadlineExceeded),
            "{no_time}: {message}"
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
