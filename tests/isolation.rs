//! No request can harm another. While streams run on every entry point
//! (gRPC, gRPC-Web and the SSE endpoint), requests with a header or body
//! part at or over its limit come and go on each: trace context near W3C's
//! limits, `x-request-id` at and over its own, many metadata entries, huge
//! header values over HTTP/1.1, a prefix at the limit in 4-byte characters
//! and one over it. Every running stream ends whole; every other request
//! ends with a status of its own (and those within the limits succeed).

mod common;

use common::{client, expected_text, mesh, text};
use horoscoper_proto::v1::{InferRequest, InferResponse};
use prost::Message as _;
use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A `tracestate` W3C accepts: `members` members with keys and values of
/// `len` characters each.
fn tracestate(members: usize, len: usize) -> String {
    (0..members)
        .map(|i| {
            let key = format!("k{i:0>width$}", width = len - 1);
            format!("{key}={}", "v".repeat(len))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How one call ended: its text and whether it ended OK, or why not.
#[derive(Debug)]
struct Ended {
    text: String,
    ok: bool,
    why: String,
}

/// A gRPC call over HTTP/2 with these headers; `Err` when the transport
/// itself refused it (a connection closed for a header block over its limit).
async fn grpc(
    addr: SocketAddr,
    headers: &[(String, String)],
    prefix: &str,
) -> Result<Ended, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut send = send.ready().await.map_err(|e| e.to_string())?;
    let mut request = http::Request::post(format!("http://{addr}/horoscoper.v1.Horoscoper/Infer"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let body = frame(prefix);
    let (response, mut upload) = send
        .send_request(request.body(()).unwrap(), false)
        .map_err(|e| e.to_string())?;
    upload
        .send_data(body.into(), true)
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(headers);
    let status = trailers
        .get("grpc-status")
        .ok_or("no grpc-status")?
        .to_str()
        .unwrap()
        .to_owned();
    let message = trailers
        .get("grpc-message")
        .map(|m| m.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (text, _) = frames(&received);
    Ok(Ended {
        text,
        ok: status == "0",
        why: format!("grpc-status {status} {message}"),
    })
}

/// The request as a gRPC frame.
fn frame(prefix: &str) -> Vec<u8> {
    let message = InferRequest {
        prefix: prefix.into(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// The text of the data frames of a gRPC(-Web) body, and the trailer
/// frame's text (gRPC-Web puts the status there).
fn frames(mut body: &[u8]) -> (String, String) {
    let (mut text, mut trailer) = (String::new(), String::new());
    while body.len() >= 5 {
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..(5 + length).min(body.len())];
        if body[0] & 0x80 != 0 {
            trailer.push_str(&String::from_utf8_lossy(payload));
        } else if let Ok(response) = InferResponse::decode(payload) {
            text.push_str(&response.text);
        }
        body = &body[(5 + length).min(body.len())..];
    }
    (text, trailer)
}

/// A POST over HTTP/1.1 with these headers; the status, the head (in lower
/// case) and the body, read to its end (`Err` when the connection was cut
/// before an answer).
async fn http1(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\nx-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    socket.write_all(body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let _ = socket.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no response head: {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Ok((status, head, body))
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 2 + size + 2..];
    }
    body
}

/// A gRPC-Web call (binary, over HTTP/1.1, as browsers send it).
async fn grpc_web(
    addr: SocketAddr,
    headers: &[(String, String)],
    prefix: &str,
) -> Result<Ended, String> {
    let path = "/horoscoper.v1.Horoscoper/Infer";
    let (status, head, body) = http1(
        addr,
        path,
        "application/grpc-web+proto",
        headers,
        &frame(prefix),
    )
    .await?;
    let (text, trailer) = frames(&body);
    // The status is in the trailer frame, or in the head of an answer that
    // is nothing but a status.
    let status_line = trailer
        .lines()
        .chain(head.lines())
        .find(|line| line.starts_with("grpc-status:"))
        .unwrap_or("no grpc-status")
        .replace(' ', "");
    Ok(Ended {
        text,
        ok: status == 200 && status_line == "grpc-status:0",
        why: format!("HTTP {status} {status_line}"),
    })
}

/// A call of the original's SSE endpoint.
async fn sse(
    addr: SocketAddr,
    headers: &[(String, String)],
    prefix: &str,
) -> Result<Ended, String> {
    let body = serde_json::json!({ "prefix": prefix }).to_string();
    let (status, _, body) = http1(
        addr,
        "/api/v1/infer",
        "application/json",
        headers,
        body.as_bytes(),
    )
    .await?;
    let mut text = String::new();
    let mut last = String::from("no event");
    for line in String::from_utf8_lossy(&body).lines() {
        if let Some(event) = line.strip_prefix("data: ") {
            let event: serde_json::Value = serde_json::from_str(event).unwrap();
            text.push_str(event["text"].as_str().unwrap_or_default());
            last = event.to_string();
        }
    }
    Ok(Ended {
        text,
        ok: status == 200 && last.contains("FINISHED"),
        why: format!("HTTP {status} {last}"),
    })
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Grpc,
    GrpcWeb,
    Sse,
}

async fn call(
    entry: Entry,
    addr: SocketAddr,
    headers: Vec<(String, String)>,
    prefix: String,
) -> Result<Ended, String> {
    match entry {
        Entry::Grpc => grpc(addr, &headers, &prefix).await,
        Entry::GrpcWeb => grpc_web(addr, &headers, &prefix).await,
        Entry::Sse => sse(addr, &headers, &prefix).await,
    }
}

/// A request with parts at or over a limit, and how it must end.
struct Case {
    name: &'static str,
    headers: Vec<(String, String)>,
    prefix: String,
    /// `Some(true)`: every part is within what the mesh accepts, so it
    /// succeeds whole; `Some(false)`: it is refused; `None`: the transport
    /// decides (HTTP/1.1 takes header sizes that HTTP/2 refuses).
    succeeds: Option<bool>,
}

fn header(name: &str, value: String) -> (String, String) {
    (name.to_owned(), value)
}

fn cases(entry: Entry) -> Vec<Case> {
    let http1 = !matches!(entry, Entry::Grpc);
    let mut cases = vec![
        Case {
            name: "tracestate of 32 members near W3C's limits, a prefix of 1,000 characters",
            headers: vec![
                header("traceparent", TRACEPARENT.into()),
                // Within HTTP/2's 16 KiB header list on gRPC; the largest W3C
                // allows (32 × 256-character keys and values) over HTTP/1.1.
                header(
                    "tracestate",
                    if http1 {
                        tracestate(32, 256)
                    } else {
                        tracestate(32, 200)
                    },
                ),
            ],
            prefix: "é".repeat(1000),
            succeeds: Some(true),
        },
        Case {
            name: "x-request-id at its limit (64)",
            headers: vec![header("x-request-id", "r".repeat(64))],
            prefix: "request id".into(),
            succeeds: Some(true),
        },
        Case {
            name: "x-request-id of 8 KiB",
            headers: vec![header("x-request-id", "r".repeat(8 * 1024))],
            prefix: "request id".into(),
            succeeds: Some(true),
        },
        Case {
            name: "90 metadata entries of 100 bytes",
            headers: (0..90)
                .map(|i| header(&format!("x-pad-{i}"), "p".repeat(100)))
                .collect(),
            prefix: "padded".into(),
            succeeds: Some(true),
        },
        Case {
            name: "a prefix at the limit in 4-byte characters",
            headers: vec![],
            prefix: "🦀".repeat(1024),
            succeeds: Some(true),
        },
        Case {
            name: "a prefix one 4-byte character over the limit",
            headers: vec![],
            prefix: "🦀".repeat(1025),
            succeeds: Some(false),
        },
        Case {
            name: "a header block over HTTP/2's 16 KiB list",
            headers: vec![header("x-big", "b".repeat(20 * 1024))],
            prefix: "big header".into(),
            succeeds: if http1 { None } else { Some(false) },
        },
    ];
    if http1 {
        cases.push(Case {
            name: "a 64 KiB header value over HTTP/1.1",
            headers: vec![header("x-huge", "h".repeat(64 * 1024))],
            prefix: "huge header".into(),
            succeeds: None,
        });
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_at_and_over_every_limit_harm_no_other_request() {
    let mesh = mesh(&[
        "--workers",
        "2",
        "--batch-size",
        "64",
        "--batch-window-ms",
        "20",
        "--min-delay-ms",
        "2500",
        "--max-delay-ms",
        "2500",
    ])
    .await;
    let addr = mesh.addr;
    let tonic_client = client(addr).await;

    // Four streams on each entry point, running while the others arrive.
    let mut running = JoinSet::new();
    for entry in [Entry::Grpc, Entry::GrpcWeb, Entry::Sse] {
        for i in 0..4 {
            let prefix = format!("bystander {entry:?} {i}");
            let client = tonic_client.clone();
            running.spawn(async move {
                let ended = match entry {
                    Entry::Grpc => match common::infer(&client, &prefix).await {
                        Ok(responses) => Ended {
                            text: text(&responses),
                            ok: true,
                            why: String::new(),
                        },
                        Err(status) => Ended {
                            text: String::new(),
                            ok: false,
                            why: status.to_string(),
                        },
                    },
                    _ => call(entry, addr, vec![], prefix.clone()).await.unwrap(),
                };
                (prefix, ended)
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut others = JoinSet::new();
    for entry in [Entry::Grpc, Entry::GrpcWeb, Entry::Sse] {
        for case in cases(entry) {
            others.spawn(async move {
                let ended = tokio::time::timeout(
                    Duration::from_secs(20),
                    call(entry, addr, case.headers, case.prefix.clone()),
                )
                .await
                .unwrap_or_else(|_| panic!("{entry:?} {}: hung", case.name));
                (entry, case.name, case.prefix, case.succeeds, ended)
            });
        }
    }
    while let Some(joined) = others.join_next().await {
        let (entry, name, prefix, succeeds, ended) = joined.unwrap();
        eprintln!(
            "{entry:?} {name}: {:?}",
            ended.as_ref().map(|e| (&e.ok, &e.why))
        );
        match (succeeds, ended) {
            (Some(true), ended) => {
                let ended = ended.unwrap_or_else(|e| panic!("{entry:?} {name}: {e}"));
                assert!(ended.ok, "{entry:?} {name}: {}", ended.why);
                assert_eq!(ended.text, expected_text(&prefix), "{entry:?} {name}");
            }
            (Some(false), Ok(ended)) => {
                assert!(!ended.ok, "{entry:?} {name} was accepted");
                // INVALID_ARGUMENT (3), or the SSE endpoint's error event.
                assert!(
                    ["grpc-status:3", "grpc-status 3", "\"ERROR\""]
                        .iter()
                        .any(|said| ended.why.contains(said)),
                    "{entry:?} {name}: {}",
                    ended.why
                );
            }
            (_, Ok(ended)) if ended.ok => {
                assert_eq!(ended.text, expected_text(&prefix), "{entry:?} {name}")
            }
            _ => {}
        }
    }

    while let Some(joined) = running.join_next().await {
        let (prefix, ended) = joined.unwrap();
        assert!(ended.ok, "{prefix} was harmed: {}", ended.why);
        assert_eq!(ended.text, expected_text(&prefix), "{prefix}");
    }
}
