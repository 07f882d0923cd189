//! The batcher's session protocol (`BatcherService.Session`), driven over
//! real gRPC as the gateway drives it: many requests on one stream, their
//! tokens tagged with their ids; a request withdrawn gets nothing more; a
//! refused one gets its status; a session whose sender closed ends with OK
//! once its requests are done; a malformed command ends the session with
//! INVALID_ARGUMENT.

mod common;

use common::{batcher, expected_text, loopback, worker};
use horoscoper_proto::mesh::{
    Leave, SessionRequest, SessionResponse, SubmitRequest, Tokens,
    batcher_service_client::BatcherServiceClient, reply::Outcome, session_request::Command,
};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Streaming, transport::Channel};

fn submit(id: u64, prefix: &str) -> SessionRequest {
    SessionRequest {
        command: Some(Command::Submit(SubmitRequest {
            prefix: prefix.to_string(),
            log_id: format!("session-test-{id}"),
            id,
            ..SubmitRequest::default()
        })),
    }
}

/// A batcher in front of one worker (batches of 4, 1 s each).
async fn batcher_and_worker(extra: &[&str]) -> (common::InProcess, common::InProcess) {
    let worker = worker(
        loopback().await,
        &["--min-delay-ms", "1000", "--max-delay-ms", "1000"],
    )
    .await;
    let mut flags = vec!["--batch-size", "4", "--batch-window-ms", "100", "--worker"];
    let url = worker.url();
    flags.push(&url);
    flags.extend(extra);
    (batcher(loopback().await, &flags).await, worker)
}

async fn open(
    addr: std::net::SocketAddr,
) -> (
    mpsc::UnboundedSender<SessionRequest>,
    Streaming<SessionResponse>,
) {
    let mut client = BatcherServiceClient::<Channel>::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (commands, sent) = mpsc::unbounded_channel();
    let replies = client
        .session(UnboundedReceiverStream::new(sent))
        .await
        .unwrap()
        .into_inner();
    (commands, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_carries_many_requests_and_ends_once_they_are_done() {
    let (batcher, _worker) = batcher_and_worker(&["--max-requests", "4"]).await;
    let (commands, mut replies) = open(batcher.addr).await;
    for id in 1..=4 {
        commands.send(submit(id, &format!("prefix {id}"))).unwrap();
    }
    // The batcher holds 4: a fifth is refused, on the same session.
    commands.send(submit(5, "one too many")).unwrap();

    let mut texts: HashMap<u64, String> = HashMap::new();
    let mut ended: HashMap<u64, Result<(), (Code, String)>> = HashMap::new();
    let mut withdrawn = false;
    let mut messages = 0;
    let mut most_in_one = 0;
    while ended.len() < 4 {
        let response = replies
            .message()
            .await
            .unwrap()
            .expect("the session goes on");
        messages += 1;
        most_in_one = most_in_one.max(response.replies.len());
        for reply in response.replies {
            assert!(
                !ended.contains_key(&reply.id),
                "nothing after a request's end: {reply:?}"
            );
            match reply.outcome.expect("a token or a failure") {
                Outcome::Tokens(Tokens { tokens }) => {
                    assert!(!tokens.is_empty(), "a reply holds at least one token");
                    for token in tokens {
                        assert!(
                            !ended.contains_key(&reply.id),
                            "nothing after a request's last token"
                        );
                        texts.entry(reply.id).or_default().push_str(&token.text);
                        if token.last {
                            assert!(token.batch.is_some(), "the last token says its batch");
                            ended.insert(reply.id, Ok(()));
                        }
                    }
                    // Request 2 is withdrawn after its first tokens (a few
                    // more may be on their way by then).
                    if reply.id == 2 && !withdrawn {
                        withdrawn = true;
                        commands
                            .send(SessionRequest {
                                command: Some(Command::Leave(Leave { id: 2 })),
                            })
                            .unwrap();
                    }
                }
                Outcome::Token(token) => panic!("a batcher sends tokens in runs: {token:?}"),
                Outcome::Failure(failure) => {
                    ended.insert(reply.id, Err((failure.code.into(), failure.message)));
                }
            }
        }
    }
    // Every request is done or withdrawn: closing our side ends the session.
    drop(commands);
    assert!(
        replies.message().await.unwrap().is_none(),
        "the session ends with OK once its sender closed and nothing is open"
    );

    for id in [1, 3, 4] {
        assert_eq!(ended[&id], Ok(()), "request {id}");
        assert_eq!(
            texts[&id],
            expected_text(&format!("prefix {id}")),
            "request {id}"
        );
    }
    let (code, message) = ended[&5].clone().unwrap_err();
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("--max-requests"), "{message}");
    assert!(!ended.contains_key(&2), "a withdrawn request gets no end");
    assert!(
        expected_text("prefix 2").starts_with(&texts[&2]) && texts[&2] != expected_text("prefix 2"),
        "request 2 was stopped part way: {:?}",
        texts[&2]
    );
    // The requests of one batch step together: their tokens share messages.
    assert!(
        most_in_one >= 2,
        "at most {most_in_one} replies in a message"
    );
    eprintln!("{messages} messages, at most {most_in_one} replies in one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_command_ends_the_session_with_invalid_argument() {
    let (batcher, _worker) = batcher_and_worker(&[]).await;

    let (commands, mut replies) = open(batcher.addr).await;
    // The session opens with the batcher's load, for the gateway to weigh.
    let first = replies.message().await.unwrap().expect("a first message");
    let load = first.load.expect("the first message says the load");
    assert!(first.replies.is_empty() && !load.draining && !load.batcher_id.is_empty());
    commands.send(SessionRequest { command: None }).unwrap();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("submit or leave"), "{status:?}");

    let (commands, mut replies) = open(batcher.addr).await;
    commands.send(submit(7, "twice")).unwrap();
    commands.send(submit(7, "twice")).unwrap();
    let status = loop {
        match replies.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session ended with OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("already open"), "{status:?}");
}

/// The batcher's port is not trusted either: requests with extreme values
/// each get their own status (or are served), and the session and its other
/// requests go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_fail_their_own_request_and_nothing_else() {
    let (batcher, _worker) = batcher_and_worker(&[]).await;
    let (commands, mut replies) = open(batcher.addr).await;
    fn with(id: u64, prefix: &str, change: impl FnOnce(&mut SubmitRequest)) -> SessionRequest {
        let Some(Command::Submit(mut request)) = submit(id, prefix).command else {
            unreachable!()
        };
        change(&mut request);
        SessionRequest {
            command: Some(Command::Submit(request)),
        }
    }
    let forever = |seconds| prost_types::Duration { seconds, nanos: 0 };
    commands
        .send(with(1, "a time left of i64::MAX seconds", |r| {
            r.time_left = Some(forever(i64::MAX))
        }))
        .unwrap();
    commands
        .send(with(2, "a time left already negative", |r| {
            r.time_left = Some(forever(-5))
        }))
        .unwrap();
    // A request too large to go in a batch with others (the session's own
    // limit is larger): refused alone.
    commands
        .send(with(3, "", |r| r.prefix = "x".repeat(10 * 1024)))
        .unwrap();
    commands
        .send(with(4, "a trace context far too large", |r| {
            r.trace_context = (0..100)
                .map(|i| (format!("key-{i}"), "v".repeat(100)))
                .collect();
        }))
        .unwrap();
    // A departure for a request the session never had.
    commands
        .send(SessionRequest {
            command: Some(Command::Leave(Leave { id: 99 })),
        })
        .unwrap();
    commands.send(submit(5, "an ordinary request")).unwrap();

    let mut texts: HashMap<u64, String> = HashMap::new();
    let mut ended: HashMap<u64, Result<(), (Code, String)>> = HashMap::new();
    while ended.len() < 5 {
        let response = replies
            .message()
            .await
            .unwrap()
            .expect("the session goes on");
        for reply in response.replies {
            match reply.outcome.expect("a token or a failure") {
                Outcome::Tokens(Tokens { tokens }) => {
                    for token in tokens {
                        texts.entry(reply.id).or_default().push_str(&token.text);
                        if token.last {
                            ended.insert(reply.id, Ok(()));
                        }
                    }
                }
                Outcome::Token(token) => panic!("a batcher sends tokens in runs: {token:?}"),
                Outcome::Failure(failure) => {
                    ended.insert(reply.id, Err((failure.code.into(), failure.message)));
                }
            }
        }
    }
    for (id, prefix) in [
        (1, "a time left of i64::MAX seconds"),
        (5, "an ordinary request"),
    ] {
        assert_eq!(ended[&id], Ok(()), "request {id}");
        assert_eq!(texts[&id], expected_text(prefix), "request {id}");
    }
    assert_eq!(ended[&2].clone().unwrap_err().0, Code::DeadlineExceeded);
    for id in [3, 4] {
        let (code, message) = ended[&id].clone().unwrap_err();
        assert_eq!(code, Code::InvalidArgument, "request {id}: {message}");
        assert!(message.contains("at most"), "request {id}: {message}");
    }
    drop(commands);
    assert!(
        replies.message().await.unwrap().is_none(),
        "and it ends with OK"
    );
}
