//! The original's SSE endpoint, `POST /api/v1/infer`, read as a raw event
//! stream by a plain HTTP client.

mod common;

use common::{ONE_SLOW_WORKER, expected_text, http_post, mesh, occupy, sse_events as events};
use serde_json::{Value, json};

const ZERO_DELAY: [&str; 4] = ["--min-delay-ms", "0", "--max-delay-ms", "0"];

#[tokio::test]
async fn streams_one_event_per_token_as_the_original_did() {
    let mesh = mesh(&ZERO_DELAY).await;
    let response = http_post(
        mesh.addr,
        "/api/v1/infer",
        "application/json",
        r#"{"prefix": "hello"}"#,
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response.headers.contains("content-type: text/event-stream"),
        "{}",
        response.headers
    );

    // Field for field the original's messages: text, status, error.
    let first = response
        .body
        .lines()
        .find(|l| l.starts_with("data: "))
        .unwrap();
    assert_eq!(
        first,
        r#"data: {"text":"Money ","status":"IN_PROGRESS","error":null}"#
    );

    let events = events(&response.body);
    let text: String = events.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(text, expected_text("hello"));
    let (last, rest) = events.split_last().unwrap();
    assert!(
        rest.iter()
            .all(|e| e["status"] == "IN_PROGRESS" && e["error"].is_null())
    );
    assert_eq!(last["status"], "FINISHED");
}

#[tokio::test]
async fn takes_the_originals_text_field_too() {
    let mesh = mesh(&ZERO_DELAY).await;
    let response = http_post(
        mesh.addr,
        "/api/v1/infer",
        "application/json",
        r#"{"text": "aries"}"#,
    )
    .await;
    let events = events(&response.body);
    let text: String = events.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(text, expected_text("aries"));
}

#[tokio::test]
async fn a_prefix_too_long_is_an_error_event() {
    let mesh = mesh(&ZERO_DELAY).await;
    let body = json!({ "prefix": "x".repeat(1025) }).to_string();
    let response = http_post(mesh.addr, "/api/v1/infer", "application/json", &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        events(&response.body),
        [
            json!({"text": "", "status": "ERROR", "error": "prefix has 1025 characters, at most 1024 are allowed"})
        ]
    );
}

#[tokio::test]
async fn a_request_that_times_out_in_the_queue_is_an_error_event() {
    let mesh = mesh(&[&ONE_SLOW_WORKER[..], &["--request-ttl-ms", "300"]].concat()).await;
    let client = common::client(mesh.addr).await;
    let _busy = occupy(&client).await;

    let response = http_post(
        mesh.addr,
        "/api/v1/infer",
        "application/json",
        r#"{"prefix": "waits"}"#,
    )
    .await;
    let events = events(&response.body);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "ERROR");
    let error = events[0]["error"].as_str().unwrap();
    assert!(error.contains("for a free worker"), "{error}");
}

#[tokio::test]
async fn a_malformed_body_gets_422_with_a_message() {
    let mesh = mesh(&ZERO_DELAY).await;
    let cases = [
        ("application/json", "{not json", "parse"),
        ("application/json", "{}", r#"needs a "prefix" string"#),
        ("application/json", r#"{"prefix": 42}"#, "invalid type"),
        ("application/json", r#"{"prompt": "hi"}"#, "unknown field"),
        ("text/plain", r#"{"prefix": "hi"}"#, "Content-Type"),
    ];
    for (content_type, body, says) in cases {
        let response = http_post(mesh.addr, "/api/v1/infer", content_type, body).await;
        assert_eq!(response.status, 422, "{body}: {}", response.body);
        let detail: Value = serde_json::from_str(&response.body).unwrap();
        let detail = detail["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
    }
}

#[tokio::test]
async fn invalid_utf8_in_the_body_gets_422_and_a_stream_alongside_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = mesh(&["--min-delay-ms", "500", "--max-delay-ms", "500"]).await;
    let alongside = tokio::spawn(http_post(
        mesh.addr,
        "/api/v1/infer",
        "application/json",
        r#"{"prefix": "alongside"}"#,
    ));
    let body: &[u8] = b"{\"prefix\": \"\xff\xfe\"}";
    let head = format!(
        "POST /api/v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(mesh.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 422"), "{response}");
    assert!(response.contains("\"detail\""), "{response}");

    let alongside = alongside.await.unwrap();
    let text: String = events(&alongside.body)
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected_text("alongside"));
}
