//! The gateway without its batcher: calls fail fast with UNAVAILABLE, and
//! succeed again once the batcher is back, with no restart of the gateway;
//! and a request that a draining batcher refuses goes to another.

mod common;

use common::{
    batcher, client, expected_text, gateway, gateway_with, infer, loopback, text, worker,
};
use horoscoper_proto::{
    mesh::{
        Load, SessionRequest, SessionResponse,
        batcher_service_server::{BatcherService, BatcherServiceServer},
        session_request::Command,
    },
    reply,
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status, Streaming};

#[tokio::test]
async fn calls_fail_with_unavailable_while_the_batcher_is_down_and_succeed_once_it_is_back() {
    // A port nothing listens on, for now.
    let batcher_addr = loopback().await.local_addr().unwrap();
    let batcher_url = format!("http://{batcher_addr}");
    let gateway = gateway(&batcher_url).await;
    let client = client(gateway.addr).await;

    for _ in 0..3 {
        let status = infer(&client, "anyone there?").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .starts_with(&format!("the batcher at {batcher_url}/ is unavailable")),
            "{}",
            status.message()
        );
    }

    let worker = worker(
        loopback().await,
        &["--min-delay-ms", "0", "--max-delay-ms", "0"],
    )
    .await;
    let listener = tokio::net::TcpListener::bind(batcher_addr)
        .await
        .expect("the batcher's port is free again");
    let batcher = batcher(listener, &["--worker", &worker.url()]).await;

    // The gateway reconnects on its own; allow for the worker connection.
    let mut last = None;
    for _ in 0..50 {
        match infer(&client, "anyone there?").await {
            Ok(responses) => {
                assert_eq!(text(&responses), expected_text("anyone there?"));
                return;
            }
            Err(status) => last = Some(status),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((batcher, worker));
    panic!("the gateway never recovered: {last:?}");
}

/// A batcher that has begun to drain, before its load says so: it reports
/// a batch still filling (so a gateway prefers it) and refuses every
/// request untaken, as a draining batcher does.
struct Refusing {
    /// Requests refused so far.
    refused: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl BatcherService for Refusing {
    type SessionStream = ReceiverStream<Result<SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, replies) = mpsc::channel(16);
        let refused = self.refused.clone();
        tokio::spawn(async move {
            let load = Load {
                queued: 1,
                batch_size: 4,
                batcher_id: "refusing".into(),
                ..Default::default()
            };
            let first = SessionResponse {
                replies: Vec::new(),
                load: Some(load.clone()),
            };
            if out.send(Ok(first)).await.is_err() {
                return;
            }
            while let Ok(Some(command)) = inbound.message().await {
                let Some(Command::Submit(submit)) = command.command else {
                    continue;
                };
                let draining =
                    Status::unavailable("the batcher is draining: it takes no new request");
                let refusal = SessionResponse {
                    replies: vec![reply::encode(submit.id, Err(reply::refused(draining)))],
                    // Still a batch filling, as far as it says.
                    load: Some(load.clone()),
                };
                refused.fetch_add(1, Ordering::Relaxed);
                if out.send(Ok(refusal)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(replies)))
    }
}

#[tokio::test]
async fn a_request_refused_by_a_batcher_that_drains_goes_to_another_whole() {
    let refusing = loopback().await;
    let refusing_url = format!("http://{}", refusing.local_addr().unwrap());
    let refused = Arc::new(AtomicUsize::new(0));
    let service = Refusing {
        refused: refused.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BatcherServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(refusing)),
    );
    let worker = worker(
        loopback().await,
        &["--min-delay-ms", "0", "--max-delay-ms", "0"],
    )
    .await;
    let batcher = batcher(loopback().await, &["--worker", &worker.url()]).await;
    let gateway = gateway_with(&["--batcher", &refusing_url, "--batcher", &batcher.url()]).await;
    let client = client(gateway.addr).await;
    // Opens a session to each batcher, so the gateway hears both loads.
    let mesh = common::http_get(gateway.addr, "/api/v1/mesh").await.body;
    assert!(mesh.contains(r#""batcher_id":"refusing""#), "{mesh}");

    for n in 0..4 {
        let prefix = format!("refused first {n}");
        let responses = infer(&client, &prefix).await.expect("moved, not failed");
        assert_eq!(text(&responses), expected_text(&prefix));
    }
    // Each went first to the batcher that says a batch is filling there.
    assert_eq!(refused.load(Ordering::Relaxed), 4);
    drop((batcher, worker));
}
