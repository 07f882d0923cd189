//! Who may call: a bearer token checked by the gateway on gRPC, gRPC-Web and
//! the SSE endpoint (health stays open for probes), and CORS limited to the
//! configured origins. Both are off by default (the other tests run so).

mod common;

use common::{expected_text, mesh, text};
use horoscoper_proto::v1::{InferRequest, horoscoper_client::HoroscoperClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const FLAGS: [&str; 8] = [
    "--bearer-token",
    "s3cret",
    "--cors-origin",
    "https://allowed.example",
    "--min-delay-ms",
    "0",
    "--max-delay-ms",
    "0",
];

async fn call(channel: Channel, token: Option<&str>) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(InferRequest {
        prefix: "who goes there".into(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let stream = HoroscoperClient::new(channel)
        .infer(request)
        .await?
        .into_inner();
    Ok(text(&common::collect(stream).await?))
}

/// A raw HTTP/1.1 exchange; the whole response.
async fn http(addr: std::net::SocketAddr, request: String) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_is_required_on_every_front_end_but_health() {
    let mesh = mesh(&FLAGS).await;
    let channel = Channel::from_shared(format!("http://{}", mesh.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret ")] {
        let status = call(channel.clone(), token).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
        assert_eq!(
            status.message(),
            "missing or invalid bearer token: send `authorization: Bearer <token>`"
        );
    }
    assert_eq!(
        call(channel.clone(), Some("s3cret")).await.unwrap(),
        expected_text("who goes there")
    );

    let health = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health needs no token");
    assert_eq!(health.into_inner().status, 1);

    let body = r#"{"prefix": "who goes there"}"#;
    let sse = |auth: &str| {
        format!(
            "POST /api/v1/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let refused = http(mesh.addr, sse("")).await;
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(
        refused.contains("missing or invalid bearer token"),
        "{refused}"
    );
    let served = http(mesh.addr, sse("authorization: Bearer s3cret\r\n")).await;
    assert!(served.starts_with("http/1.1 200"), "{served}");
    assert!(served.contains("finished"), "{served}");

    // What the mesh runs is behind the token too.
    let survey = |auth: &str| {
        format!("GET /api/v1/mesh HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n")
    };
    let refused = http(mesh.addr, survey("")).await;
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    let served = http(mesh.addr, survey("authorization: Bearer s3cret\r\n")).await;
    assert!(served.starts_with("http/1.1 200"), "{served}");
    assert!(served.contains(r#""batching":"static""#), "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_configured_origins() {
    let mesh = mesh(&FLAGS).await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /horoscoper.v1.Horoscoper/Infer HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\n\
             access-control-request-method: POST\r\naccess-control-request-headers: content-type,x-grpc-web,authorization\r\n\
             connection: close\r\n\r\n"
        )
    };
    let allowed = http(mesh.addr, preflight("https://allowed.example")).await;
    assert!(
        allowed.contains("access-control-allow-origin: https://allowed.example"),
        "{allowed}"
    );
    let other = http(mesh.addr, preflight("https://elsewhere.example")).await;
    assert!(!other.contains("access-control-allow-origin"), "{other}");
}
