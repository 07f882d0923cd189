//! The gRPC interop suite's cases that apply to a server-streaming API, through
//! the gateway, over native gRPC (tonic) and gRPC-Web (HTTP/1.1, as a browser
//! sends it): cancel after begin, cancel after the first response, a deadline
//! shorter than the first token, an unimplemented method. Every call ends
//! with a status; a cancelled one is counted as such and stops its work.

mod common;

use common::{client, mesh, metric, start};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// One worker, batches of 4 after a 300 ms window, 1.5 s per batch: a call
/// waits 300 ms in the queue, then gets a token every ~50 ms.
const FLAGS: [&str; 10] = [
    "--workers",
    "1",
    "--batch-size",
    "4",
    "--batch-window-ms",
    "300",
    "--min-delay-ms",
    "1500",
    "--max-delay-ms",
    "1500",
];

/// Waits until the gateway has counted `count` cancelled calls.
async fn cancelled(addr: std::net::SocketAddr, count: f64) {
    for _ in 0..100 {
        if metric(addr, "horoscoper_requests_total{outcome=\"cancelled\"}").await == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never counted {count} cancelled calls");
}

/// A gRPC-Web call over HTTP/1.1: the request, and the socket to read the
/// response from.
async fn grpc_web(
    addr: std::net::SocketAddr,
    method: &str,
    prefix: &str,
    extra_headers: &str,
) -> tokio::net::TcpStream {
    let message = prost::Message::encode_to_vec(&horoscoper_proto::v1::InferRequest {
        prefix: prefix.into(),
    });
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let head = format!(
        "POST /horoscoper.v1.Horoscoper/{method} HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n{extra_headers}\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    socket
}

/// Reads what the server sends until `enough` says so of it.
async fn read_until(socket: &mut tokio::net::TcpStream, enough: impl Fn(&str) -> bool) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !enough(&String::from_utf8_lossy(&seen)) {
        let read = socket.read(&mut buffer).await.unwrap();
        assert!(
            read > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..read]);
    }
}

async fn read_all(mut socket: tokio::net::TcpStream) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut response))
        .await
        .expect("the call ends")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_grpc_interop_cases() {
    let mesh = mesh(&FLAGS).await;
    let client = client(mesh.addr).await;

    // Cancel after begin: gone while queued, never dispatched.
    drop(start(&client, "cancel after begin").await.unwrap());
    cancelled(mesh.addr, 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past the window
    assert_eq!(metric(mesh.addr, "horoscoper_tokens_total").await, 0.0);

    // Cancel after the first response: the worker stops within a step.
    let mut stream = start(&client, "cancel after the first response")
        .await
        .unwrap();
    stream.message().await.unwrap().expect("a first token");
    drop(stream);
    cancelled(mesh.addr, 2.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tokens = metric(mesh.addr, "horoscoper_tokens_total").await;
    let whole =
        horoscoper_worker::token_count(&common::expected_text("cancel after the first response"));
    assert!(tokens < whole as f64, "{tokens} of {whole}");

    // A deadline shorter than the first token.
    let mut request = tonic::Request::new(horoscoper_proto::v1::InferRequest {
        prefix: "no time".into(),
    });
    request.set_timeout(Duration::from_millis(200));
    let status = match client.clone().infer(request).await {
        Ok(response) => common::collect(response.into_inner()).await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // An unimplemented method.
    let mut grpc = tonic::client::Grpc::new(
        tonic::transport::Channel::from_shared(format!("http://{}", mesh.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, horoscoper_proto::v1::InferResponse, _>(
            tonic::Request::new(horoscoper_proto::v1::InferRequest::default()),
            "/horoscoper.v1.Horoscoper/Nope".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_interop_cases() {
    let mesh = mesh(&FLAGS).await;

    // Cancel after begin: the browser closes the connection once the call
    // has begun (its response headers are in), before any message.
    let mut socket = grpc_web(mesh.addr, "Infer", "cancel after begin", "").await;
    read_until(&mut socket, |seen| seen.contains("\r\n\r\n")).await;
    drop(socket);
    cancelled(mesh.addr, 1.0).await;

    // Cancel after the first response.
    let mut socket = grpc_web(mesh.addr, "Infer", "cancel after the first response", "").await;
    // The headers and past them the first message's frame.
    read_until(&mut socket, |seen| {
        seen.split_once("\r\n\r\n")
            .is_some_and(|(_, body)| body.len() > 5)
    })
    .await;
    drop(socket);
    cancelled(mesh.addr, 2.0).await;

    // A deadline shorter than the first token: the status comes in the
    // trailer frame (or, with no message sent, in the headers).
    let response =
        read_all(grpc_web(mesh.addr, "Infer", "no time", "grpc-timeout: 200m\r\n").await).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("grpc-status:4") || response.contains("grpc-status: 4"),
        "{response}"
    );

    // An unimplemented method.
    let response = read_all(grpc_web(mesh.addr, "Nope", "", "").await).await;
    assert!(
        response.contains("grpc-status: 12") || response.contains("grpc-status:12"),
        "{response}"
    );
}
