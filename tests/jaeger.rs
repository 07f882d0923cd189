//! Traces in a real Jaeger: the release binaries export over OTLP to a Jaeger
//! started here with in-memory storage (`deploy/jaeger.yaml`), then Jaeger's
//! HTTP query API is asked what it holds.
//!
//! Needs the Jaeger binary: `just test-jaeger` builds it from the Go module
//! proxy (cached) and runs this with `JAEGER_BIN` set.

mod common;

use common::processes::{Process, binary, free_port};
use horoscoper_proto::v1::{InferRequest, horoscoper_client::HoroscoperClient};
use serde_json::Value;
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

/// Jaeger on free ports; returns it with its OTLP endpoint and query address.
async fn jaeger() -> (Process, String, SocketAddr) {
    let program = std::env::var("JAEGER_BIN")
        .expect("JAEGER_BIN names the Jaeger binary (just test-jaeger sets it)");
    let (otlp, query, query_grpc) = (free_port(), free_port(), free_port());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/jaeger.yaml");
    // Jaeger's own chatter (it tries to trace itself to :4317) stays out of
    // the test output.
    let jaeger = Process::spawn(
        Command::new(&program)
            .args(["--config", config.to_str().unwrap()])
            .env("JAEGER_OTLP_GRPC_PORT", otlp.to_string())
            .env("JAEGER_QUERY_PORT", query.to_string())
            .env("JAEGER_QUERY_GRPC_PORT", query_grpc.to_string())
            .stderr(Stdio::null()),
        Path::new(&program),
    );
    let query: SocketAddr = format!("127.0.0.1:{query}").parse().unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(query).await.is_ok() {
            return (jaeger, format!("http://127.0.0.1:{otlp}"), query);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Jaeger did not start");
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let response = common::http_get(addr, path).await;
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    serde_json::from_str(&response.body).unwrap()
}

async fn wait_for_gateway(addr: SocketAddr) -> HoroscoperClient<tonic::transport::Channel> {
    for _ in 0..300 {
        if let Ok(client) = HoroscoperClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway did not start");
}

/// A W3C traceparent of the client's own, with a trace id made from `n`.
fn traceparent(n: u64) -> (String, String, String) {
    let trace_id = format!(
        "{:032x}",
        0x7e57_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(n)
    );
    let span_id = format!("{:016x}", 0xc1_1e47_0000_0000u64 + n);
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Sends `count` requests at once, each with its own traceparent; returns
/// the trace ids and the client span ids.
async fn send_batch(
    client: &HoroscoperClient<tonic::transport::Channel>,
    first: u64,
    count: u64,
) -> Vec<(String, String)> {
    let calls: Vec<_> = (first..first + count)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (header, trace_id, span_id) = traceparent(n);
                let mut request = tonic::Request::new(InferRequest {
                    prefix: format!("traced request {n}"),
                });
                request
                    .metadata_mut()
                    .insert("traceparent", header.parse().unwrap());
                let mut stream = client.infer(request).await.unwrap().into_inner();
                while stream.message().await.unwrap().is_some() {}
                (trace_id, span_id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap());
    }
    ids
}

/// A span as Jaeger's query API shows it.
#[derive(Debug)]
struct SpanView {
    service: String,
    operation: String,
    span_id: String,
    /// (trace id, span id) of the CHILD_OF reference.
    parent: Option<(String, String)>,
    /// Trace ids of the FOLLOWS_FROM references (span links).
    links: BTreeSet<String>,
    tags: HashMap<String, String>,
}

fn spans(trace: &Value) -> Vec<SpanView> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| {
            let references = span["references"].as_array().unwrap();
            let reference =
                |kind: &'static str| references.iter().filter(move |r| r["refType"] == kind);
            SpanView {
                service: processes[span["processID"].as_str().unwrap()]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                operation: span["operationName"].as_str().unwrap().to_string(),
                span_id: span["spanID"].as_str().unwrap().to_string(),
                parent: reference("CHILD_OF").next().map(|r| {
                    (
                        r["traceID"].as_str().unwrap().to_string(),
                        r["spanID"].as_str().unwrap().to_string(),
                    )
                }),
                links: reference("FOLLOWS_FROM")
                    .map(|r| r["traceID"].as_str().unwrap().to_string())
                    .collect(),
                tags: span["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|tag| {
                        (
                            tag["key"].as_str().unwrap().to_string(),
                            tag["value"].to_string().trim_matches('"').to_string(),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

fn one<'a>(spans: &'a [SpanView], service: &str, operation: &str) -> &'a SpanView {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.operation == operation)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {service} {operation} span in {spans:#?}"
    );
    found[0]
}

/// The spans of a trace, once Jaeger has stored the three services' spans
/// (its own pipeline batches what it receives).
async fn trace_spans(query: SocketAddr, trace_id: &str) -> Vec<SpanView> {
    let path = format!("/api/traces/{trace_id}");
    for _ in 0..100 {
        let response = common::http_get(query, &path).await;
        if response.status == 200 {
            let trace: Value = serde_json::from_str(&response.body).unwrap();
            let spans = spans(&trace["data"][0]);
            if spans.len() >= 6 {
                return spans;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "Jaeger never showed the whole trace {trace_id}: {}",
        common::http_get(query, &path).await.body
    );
}

/// Asks Jaeger for each request's trace and every batch span, and checks
/// them: one trace per request across the three services with the right
/// parents, and batch spans (`batches` of them, sealed for one of
/// `reasons`) linked to exactly the requests they served.
async fn check_traces(
    query: SocketAddr,
    requests: &[(String, String)],
    batches: usize,
    reasons: &[&str],
) {
    let mut batch_of_request: HashMap<String, String> = HashMap::new();
    for (trace_id, client_span) in requests {
        let spans = trace_spans(query, trace_id).await;
        let services: BTreeSet<_> = spans.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(
            services,
            BTreeSet::from(["batcher", "gateway", "worker"]),
            "{trace_id}"
        );

        let infer = one(&spans, "gateway", "infer");
        assert_eq!(
            infer.parent,
            Some((trace_id.clone(), client_span.clone())),
            "the client's traceparent is honoured"
        );
        let validate = one(&spans, "gateway", "validate");
        let submit = one(&spans, "batcher", "submit");
        let queued = one(&spans, "batcher", "queued");
        let generate = one(&spans, "batcher", "generate");
        let worker = one(&spans, "worker", "generate");
        let child_of = |span: &SpanView, parent: &SpanView| {
            assert_eq!(
                span.parent,
                Some((trace_id.clone(), parent.span_id.clone())),
                "{} {} is a child of {} {}",
                span.service,
                span.operation,
                parent.service,
                parent.operation
            )
        };
        child_of(validate, infer);
        child_of(submit, infer);
        child_of(queued, submit);
        child_of(generate, submit);
        child_of(worker, generate);
        assert_eq!(generate.tags["batch_id"], worker.tags["batch_id"]);
        // Which batcher served it, from both sides; nothing moved here.
        assert!(
            infer
                .tags
                .get("batcher")
                .is_some_and(|url| url.starts_with("http://")),
            "the gateway names the batcher: {:?}",
            infer.tags
        );
        assert!(
            submit.tags.get("batcher").is_some_and(|id| !id.is_empty()),
            "the batcher names itself: {:?}",
            submit.tags
        );
        assert_eq!(submit.tags.get("delivered").map(String::as_str), Some("0"));
        batch_of_request.insert(trace_id.clone(), generate.tags["batch_id"].clone());
    }

    let found = get_json(
        query,
        "/api/traces?service=batcher&operation=batch&limit=100&lookback=1h",
    )
    .await;
    let batch_spans: Vec<SpanView> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(spans)
        .collect();
    assert_eq!(batch_spans.len(), batches, "{batch_spans:#?}");
    for batch in &batch_spans {
        assert_eq!(batch.parent, None, "a batch span is a root of its own");
        let id = &batch.tags["batch_id"];
        let served: BTreeSet<String> = batch_of_request
            .iter()
            .filter(|(_, b)| *b == id)
            .map(|(trace, _)| trace.clone())
            .collect();
        assert_eq!(
            batch.links, served,
            "batch {id} links exactly the requests it served"
        );
        assert_eq!(batch.tags["batch_size"], served.len().to_string());
        assert!(
            reasons.contains(&batch.tags["reason"].as_str()),
            "{:?}",
            batch.tags
        );
        assert!(
            batch.tags["worker"].starts_with("worker-"),
            "{:?}",
            batch.tags
        );
    }
}

/// Why a static batch is sealed.
const STATIC_REASONS: &[&str] = &["full", "window", "stale_head"];

const BATCHING: [&str; 10] = [
    "--batch-size",
    "3",
    "--batch-window-ms",
    "400",
    "--min-delay-ms",
    "0",
    "--max-delay-ms",
    "50",
    "--seed",
    "1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Jaeger: just test-jaeger"]
async fn separate_services_export_one_trace_per_request() {
    let (jaeger, otlp, query) = jaeger().await;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)];
    let (worker_a, worker_b, batcher, gateway) =
        (free_port(), free_port(), free_port(), free_port());
    let port = |p: u16| format!("127.0.0.1:{p}");
    let args = |flags: &[&str], extra: &[&str]| -> Vec<String> {
        let metrics = port(free_port());
        let mut args: Vec<String> = flags.iter().chain(extra).map(|s| s.to_string()).collect();
        args.extend(["--metrics-listen".to_string(), metrics]);
        args
    };
    let mut services = Vec::new();
    for (worker, id) in [(worker_a, "worker-a"), (worker_b, "worker-b")] {
        let args = args(
            &["--listen", &port(worker), "--worker-id", id],
            &BATCHING[4..],
        );
        services.push(Process::start(&binary("worker"), &args, &env));
    }
    let (url_a, url_b) = (
        format!("http://{}", port(worker_a)),
        format!("http://{}", port(worker_b)),
    );
    let batcher_args = args(
        &[
            "--listen",
            &port(batcher),
            "--worker",
            &url_a,
            "--worker",
            &url_b,
        ],
        &BATCHING[..4],
    );
    services.push(Process::start(&binary("batcher"), &batcher_args, &env));
    let batcher_url = format!("http://{}", port(batcher));
    let gateway_args = args(
        &["--listen", &port(gateway), "--batcher", &batcher_url],
        &[],
    );
    services.push(Process::start(&binary("gateway"), &gateway_args, &env));

    let client = wait_for_gateway(port(gateway).parse().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the workers connect
    let mut requests = send_batch(&client, 1, 3).await;
    requests.extend(send_batch(&client, 4, 2).await);
    drop(client);
    // Front to back, as a deployment drains; each flushes its spans.
    for service in services.into_iter().rev() {
        service.stop();
    }
    check_traces(query, &requests, 2, STATIC_REASONS).await;
    jaeger.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Jaeger: just test-jaeger"]
async fn the_one_process_mesh_exports_one_trace_per_request_per_service() {
    let (jaeger, otlp, query) = jaeger().await;
    let gateway: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = gateway.to_string();
    let args = [&["--listen", listen.as_str()][..], &BATCHING[..]].concat();
    let mesh = Process::start(
        &binary("horoscoper"),
        &args,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)],
    );
    let client = wait_for_gateway(gateway).await;
    let mut requests = send_batch(&client, 11, 3).await;
    requests.extend(send_batch(&client, 14, 2).await);
    drop(client);
    mesh.stop();
    check_traces(query, &requests, 2, STATIC_REASONS).await;
    jaeger.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Jaeger: just test-jaeger"]
async fn in_continuous_batching_each_group_that_joins_is_a_batch_span_linked_to_its_requests() {
    let (jaeger, otlp, query) = jaeger().await;
    let gateway: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = gateway.to_string();
    let args = [
        "--listen",
        listen.as_str(),
        "--batching",
        "continuous",
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--min-delay-ms",
        "200",
        "--max-delay-ms",
        "200",
        "--seed",
        "1",
    ];
    let mesh = Process::start(
        &binary("horoscoper"),
        &args,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)],
    );
    let client = wait_for_gateway(gateway).await;
    // One at a time: each joins alone, one group each.
    let mut requests = send_batch(&client, 21, 1).await;
    requests.extend(send_batch(&client, 22, 1).await);
    drop(client);
    mesh.stop();
    check_traces(query, &requests, 2, &["join"]).await;
    jaeger.stop();
}
