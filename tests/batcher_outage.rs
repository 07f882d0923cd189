//! The gateway without its batcher: calls fail fast with UNAVAILABLE, and
//! succeed again once the batcher is back, with no restart of the gateway.

mod common;

use common::{batcher, client, expected_text, gateway, infer, loopback, text, worker};
use std::time::Duration;
use tonic::Code;

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
