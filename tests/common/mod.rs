//! Starting real services in-process on port 0, and a tonic client for them.

#![allow(dead_code)]

pub mod netns;
pub mod processes;
pub mod raw;

use clap::Parser;
use horoscoper_proto::v1::{InferRequest, InferResponse, horoscoper_client::HoroscoperClient};
use std::{net::SocketAddr, time::Duration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming, transport::Channel};

/// A service running in this process until dropped or stopped.
pub struct InProcess {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl InProcess {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drains the service and waits for it to exit.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the service drains")
            .expect("the service task");
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn spawn<F, Fut, E>(listener: TcpListener, run: F) -> InProcess
where
    F: FnOnce(TcpListener, tokio_util::sync::WaitForCancellationFutureOwned) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = run(listener, stop.clone().cancelled_owned());
    let task = tokio::spawn(async move {
        if let Err(error) = served.await {
            panic!("service failed: {error}");
        }
    });
    InProcess { addr, stop, task }
}

pub async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// The whole mesh, as `cargo run` starts it, with these flags.
pub async fn mesh(flags: &[&str]) -> InProcess {
    let args = horoscoper::Args::try_parse_from(
        std::iter::once("horoscoper").chain(flags.iter().copied()),
    )
    .expect("valid flags");
    let config = args.into_config().expect("valid config");
    spawn(loopback().await, |listener, stop| {
        horoscoper::run(config, listener, stop)
    })
    .await
}

/// A worker with these flags.
pub async fn worker(listener: TcpListener, flags: &[&str]) -> InProcess {
    let args = horoscoper_worker::Args::try_parse_from(
        std::iter::once("worker").chain(flags.iter().copied()),
    )
    .expect("valid flags");
    let config = args.into_config().expect("valid config");
    spawn(listener, |listener, stop| {
        horoscoper_worker::run(config, listener, stop)
    })
    .await
}

/// A batcher with these flags (give it `--worker URL`).
pub async fn batcher(listener: TcpListener, flags: &[&str]) -> InProcess {
    let args = horoscoper_batcher::Args::try_parse_from(
        std::iter::once("batcher").chain(flags.iter().copied()),
    )
    .expect("valid flags");
    let config = args.into_config().expect("valid config");
    spawn(listener, |listener, stop| {
        horoscoper_batcher::run(config, listener, stop)
    })
    .await
}

/// A gateway in front of the batcher at `batcher_url`.
pub async fn gateway(batcher_url: &str) -> InProcess {
    gateway_with(&["--batcher", batcher_url]).await
}

/// A gateway with these flags.
pub async fn gateway_with(flags: &[&str]) -> InProcess {
    let args = horoscoper_gateway::Args::try_parse_from(
        std::iter::once("gateway").chain(flags.iter().copied()),
    )
    .expect("valid flags");
    let config = args.into_config().expect("valid config");
    spawn(loopback().await, |listener, stop| {
        horoscoper_gateway::run(config, listener, stop)
    })
    .await
}

pub async fn client(addr: SocketAddr) -> HoroscoperClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the gateway accepts connections");
    HoroscoperClient::new(channel)
}

/// Starts an Infer call.
pub async fn start(
    client: &HoroscoperClient<Channel>,
    prefix: &str,
) -> Result<Streaming<InferResponse>, Status> {
    let request = InferRequest {
        prefix: prefix.to_string(),
    };
    Ok(client.clone().infer(request).await?.into_inner())
}

/// Reads a stream to its end: every response, or the status it ended with.
pub async fn collect(mut stream: Streaming<InferResponse>) -> Result<Vec<InferResponse>, Status> {
    let mut responses = Vec::new();
    while let Some(response) = stream.message().await? {
        responses.push(response);
    }
    Ok(responses)
}

/// A whole Infer call.
pub async fn infer(
    client: &HoroscoperClient<Channel>,
    prefix: &str,
) -> Result<Vec<InferResponse>, Status> {
    collect(start(client, prefix).await?).await
}

/// The text the built-in corpus gives `prefix`.
pub fn expected_text(prefix: &str) -> String {
    let corpus = horoscoper_worker::Corpus::built_in();
    horoscoper_worker::choose(&corpus, prefix).1.to_string()
}

pub fn text(responses: &[InferResponse]) -> String {
    responses.iter().map(|r| r.text.as_str()).collect()
}

/// The `data:` payloads of an SSE body, in order (keep-alive comments and
/// blank separators skipped).
pub fn sse_events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("each event is JSON"))
        .collect()
}

/// A plain HTTP/1.1 response.
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// POSTs `body` with a plain HTTP/1.1 client (a socket, `Connection: close`)
/// and reads the whole response, undoing chunked encoding.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &str,
) -> HttpResponse {
    http_request(addr, "POST", path, content_type, body).await
}

async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a response head");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = headers.to_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// The value of `series` (a name, with its labels if it has any) in a
/// Prometheus text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (without_batcher(name) == series).then(|| value.trim().parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

/// A series' name without its `batcher` label: what a test of one batcher
/// (or of the sum over several) asks for.
pub fn without_batcher(name: &str) -> String {
    let Some((metric, labels)) = name.split_once('{') else {
        return name.to_string();
    };
    let labels: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter(|label| !label.is_empty() && !label.starts_with("batcher="))
        .collect();
    if labels.is_empty() {
        metric.to_string()
    } else {
        format!("{metric}{{{}}}", labels.join(","))
    }
}

/// The value of `series` at `addr`'s `/metrics`; panics when it is missing.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let body = http_get(addr, "/metrics").await.body;
    sample(&body, series).unwrap_or_else(|| panic!("{series} missing from {addr}/metrics:\n{body}"))
}

/// GETs `path` with a plain HTTP/1.1 client.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, "", "").await
}

/// One worker taking one request at a time, each batch lasting 3 s: add
/// `--request-ttl-ms` to taste.
pub const ONE_SLOW_WORKER: [&str; 10] = [
    "--workers",
    "1",
    "--batch-size",
    "1",
    "--batch-window-ms",
    "0",
    "--min-delay-ms",
    "3000",
    "--max-delay-ms",
    "3000",
];

/// Starts a request and waits for its first token: from then on, its worker
/// is busy until the stream is dropped or ends.
pub async fn occupy(client: &HoroscoperClient<Channel>) -> Streaming<InferResponse> {
    let mut busy = start(client, "keeps the worker busy").await.unwrap();
    busy.message()
        .await
        .unwrap()
        .expect("the request is running");
    busy
}

/// A batcher with this configuration.
pub async fn batcher_with(listener: TcpListener, config: horoscoper_batcher::Config) -> InProcess {
    spawn(listener, |listener, stop| {
        horoscoper_batcher::run(config, listener, stop)
    })
    .await
}
