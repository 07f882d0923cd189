//! The mesh end to end, in-process: real gateway, batcher and workers on
//! loopback ports, real gRPC between them, driven by a tonic client.

mod common;

use common::{ONE_SLOW_WORKER, client, collect, expected_text, infer, mesh, occupy, start, text};
use std::{collections::HashSet, time::Duration};
use tonic::Code;

const ZERO_DELAY: [&str; 4] = ["--min-delay-ms", "0", "--max-delay-ms", "0"];

#[tokio::test]
async fn streams_a_horoscope_token_by_token() {
    let mesh = mesh(&ZERO_DELAY).await;
    let client = client(mesh.addr).await;
    let responses = infer(&client, "hello").await.unwrap();

    let expected = expected_text("hello");
    assert_eq!(text(&responses), expected);
    assert_eq!(responses.len(), expected.split(' ').count());
    let (last, tokens) = responses.split_last().unwrap();
    for token in tokens {
        assert!(
            token.text.ends_with(' ') && !token.last && token.batch.is_none(),
            "{token:?}"
        );
    }
    assert!(last.last && !last.text.ends_with(' '));
    let batch = last
        .batch
        .as_ref()
        .expect("the last response names its batch");
    assert_eq!(batch.batch_size, 1);
    assert!(batch.worker_id.starts_with("worker-"), "{batch:?}");
    assert!(batch.queue_time.is_some());
    mesh.stop().await;
}

#[tokio::test]
async fn four_concurrent_requests_share_one_batch() {
    let mesh = mesh(
        &[
            &ZERO_DELAY[..],
            &["--batch-size", "4", "--batch-window-ms", "2000"],
        ]
        .concat(),
    )
    .await;
    let client = client(mesh.addr).await;
    let calls = ["one", "two", "three", "four"].map(|prefix| {
        let client = client.clone();
        tokio::spawn(async move { (prefix, infer(&client, prefix).await.unwrap()) })
    });
    let mut batches = HashSet::new();
    for call in calls {
        let (prefix, responses) = call.await.unwrap();
        assert_eq!(text(&responses), expected_text(prefix));
        let batch = responses.last().unwrap().batch.clone().unwrap();
        assert_eq!(batch.batch_size, 4);
        batches.insert(batch.batch_id);
    }
    assert_eq!(batches.len(), 1, "one batch id for all four: {batches:?}");
}

#[tokio::test]
async fn the_same_prefix_gives_the_same_text_on_every_worker() {
    let flags = [
        "--workers",
        "3",
        "--batch-size",
        "1",
        "--batch-window-ms",
        "0",
        "--min-delay-ms",
        "300",
        "--max-delay-ms",
        "300",
    ];
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let prefix = "Вы многое принимаете";
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { infer(&client, prefix).await.unwrap() })
        })
        .collect();
    let mut workers = HashSet::new();
    for call in calls {
        let responses = call.await.unwrap();
        assert_eq!(text(&responses), expected_text(prefix));
        workers.insert(responses.last().unwrap().batch.clone().unwrap().worker_id);
    }
    assert_eq!(
        workers.len(),
        3,
        "every worker served the prefix: {workers:?}"
    );
}

#[tokio::test]
async fn a_prefix_over_1024_characters_is_invalid() {
    let mesh = mesh(&ZERO_DELAY).await;
    let client = client(mesh.addr).await;
    let status = infer(&client, &"x".repeat(1025)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "prefix has 1025 characters, at most 1024 are allowed"
    );
    // 1024 characters of four bytes each are fine: characters, not bytes.
    let crabs = "🦀".repeat(1024);
    assert_eq!(
        text(&infer(&client, &crabs).await.unwrap()),
        expected_text(&crabs)
    );
}

#[tokio::test]
async fn a_request_not_dispatched_within_its_time_to_live_ends_with_deadline_exceeded() {
    let mesh = mesh(&[&ONE_SLOW_WORKER[..], &["--request-ttl-ms", "300"]].concat()).await;
    let client = client(mesh.addr).await;
    let _busy = occupy(&client).await;

    let status = infer(&client, "waits").await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(
        status.message().contains("for a free worker"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("time to live of 300 ms"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_request_not_dispatched_within_the_clients_deadline_ends_with_deadline_exceeded() {
    let mesh = mesh(&ONE_SLOW_WORKER).await;
    let client = client(mesh.addr).await;
    let _busy = occupy(&client).await;

    let mut request = tonic::Request::new(horoscoper_proto::v1::InferRequest {
        prefix: "in a hurry".into(),
    });
    request.set_timeout(Duration::from_millis(400));
    let stream = client.clone().infer(request).await.unwrap().into_inner();
    let status = collect(stream).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(
        status.message().contains("for a free worker"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("client's deadline of"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_is_taken_off_it() {
    let flags = [
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--batch-window-ms",
        "0",
        "--min-delay-ms",
        "1500",
        "--max-delay-ms",
        "1500",
    ];
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let _busy = occupy(&client).await;

    let leaves = start(&client, "leaves").await.unwrap();
    let stays: Vec<_> = ["stays 1", "stays 2"]
        .map(|prefix| {
            let client = client.clone();
            tokio::spawn(async move { infer(&client, prefix).await.unwrap() })
        })
        .into();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(leaves);

    for call in stays {
        let responses = call.await.unwrap();
        let batch = responses.last().unwrap().batch.clone().unwrap();
        assert_eq!(batch.batch_size, 2, "the request that left was not batched");
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_frees_its_worker() {
    // A batch takes 20 s; a request waits at most 5 s for a worker.
    let flags = [
        "--workers",
        "1",
        "--batch-size",
        "1",
        "--batch-window-ms",
        "0",
        "--min-delay-ms",
        "20000",
        "--max-delay-ms",
        "20000",
        "--request-ttl-ms",
        "5000",
    ];
    let mesh = mesh(&flags).await;
    let client = client(mesh.addr).await;
    let mut leaves = start(&client, "leaves after one token").await.unwrap();
    leaves.message().await.unwrap().expect("a first token");
    drop(leaves);

    // Had the worker kept generating for the client that left, this request
    // would wait about 19 s and expire after 5 s.
    let mut next = start(&client, "next").await.unwrap();
    let first = next.message().await.expect("dispatched, not expired");
    assert!(first.is_some());
}

#[tokio::test]
async fn the_same_port_serves_grpc_web_with_cors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = mesh(&ZERO_DELAY).await;
    // InferRequest { prefix: "hello" } in a gRPC-Web frame: flag, length, message.
    let message = [0x0a, 0x05, b'h', b'e', b'l', b'l', b'o'];
    let mut body = vec![0, 0, 0, 0, message.len() as u8];
    body.extend_from_slice(&message);
    let head = format!(
        "POST /horoscoper.v1.Horoscoper/Infer HTTP/1.0\r\nhost: {}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\norigin: http://page.example\r\ncontent-length: {}\r\n\r\n",
        mesh.addr,
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(mesh.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);

    assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response}");
    let lower = response.to_lowercase();
    assert!(
        lower.contains("content-type: application/grpc-web+proto"),
        "{response}"
    );
    assert!(
        lower.contains("access-control-allow-origin: http://page.example"),
        "{response}"
    );
    assert!(
        lower.contains("access-control-expose-headers: grpc-status,grpc-message"),
        "{response}"
    );
    for word in expected_text("hello").split(' ') {
        assert!(response.contains(word), "{word} missing from {response}");
    }
    assert!(
        response.contains("grpc-status:0"),
        "the trailer frame ends the stream: {response}"
    );
}
