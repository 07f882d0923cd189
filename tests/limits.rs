//! HTTP/2 and message limits, set explicitly on every hop (tonic leaves
//! them unbounded): what each server advertises, and what a client that
//! goes past them gets, while a stream alongside is unaffected.

mod common;

use common::{batcher, client, collect, expected_text, loopback, mesh, start, text, worker};
use horoscoper_proto::{limits, v1::InferRequest};
use horoscoper_runtime::net;
use std::net::SocketAddr;
use tonic::Code;

/// The SETTINGS_MAX_CONCURRENT_STREAMS a server sends a new connection.
async fn advertised_max_streams(addr: SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    // The server's SETTINGS arrive with its first frames; a request makes
    // sure they have been read.
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post("/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (response, _body) = send.send_request(request, true).unwrap();
    let _ = response.await;
    send.current_max_send_streams()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_advertises_a_bounded_number_of_streams() {
    let worker = worker(
        loopback().await,
        &["--min-delay-ms", "0", "--max-delay-ms", "0"],
    )
    .await;
    let batcher = batcher(
        loopback().await,
        &["--worker", &worker.url(), "--max-requests", "1000"],
    )
    .await;
    let mesh = mesh(&[]).await;
    assert_eq!(
        advertised_max_streams(mesh.addr).await,
        net::PUBLIC_MAX_STREAMS as usize
    );
    // Requests travel on their gateway's session, not streams of their own:
    // the batcher's limit does not grow with --max-requests.
    assert_eq!(advertised_max_streams(batcher.addr).await, 256);
    assert_eq!(advertised_max_streams(worker.addr).await, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_is_refused_and_the_stream_alongside_goes_on() {
    let flags = [
        "--min-delay-ms",
        "300",
        "--max-delay-ms",
        "300",
        "--batch-window-ms",
        "0",
    ];
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let alongside = start(&client, "alongside").await.unwrap();

    let huge = "x".repeat(limits::MAX_REQUEST_BYTES + 1);
    let status = client
        .clone()
        .infer(InferRequest { prefix: huge })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    // Under the byte limit but over the character limit: the API's own rule.
    let long = "x".repeat(1025);
    let status = common::infer(&client, &long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let responses = collect(alongside).await.unwrap();
    assert_eq!(text(&responses), expected_text("alongside"));
}

/// tonic's default allows 16 MiB of headers; here a header block four times
/// the limit makes the server close the connection (GOAWAY
/// ENHANCE_YOUR_CALM), the client sees RESOURCE_EXHAUSTED and its channel
/// reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_header_block_is_refused_and_the_connection_serves_on() {
    let mesh = mesh(&["--min-delay-ms", "0", "--max-delay-ms", "0"]).await;
    let client = client(mesh.addr).await;
    let mut request = tonic::Request::new(InferRequest {
        prefix: "big headers".into(),
    });
    let big = "y".repeat(4 * net::MAX_HEADER_LIST_BYTES as usize);
    request.metadata_mut().insert("x-big", big.parse().unwrap());
    let status = client.clone().infer(request).await.map(|_| ()).unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let responses = common::infer(&client, "after the big headers")
        .await
        .unwrap();
    assert_eq!(text(&responses), expected_text("after the big headers"));
}
