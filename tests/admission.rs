//! Admission control: past `--max-requests` held at once (queued or
//! running), a request fails at once with RESOURCE_EXHAUSTED instead of
//! waiting out its time to live; places free up as streams end.

mod common;

use common::{ONE_SLOW_WORKER, client, expected_text, http_get, infer, mesh, occupy, start, text};
use tonic::Code;

#[tokio::test]
async fn requests_past_the_limit_are_refused_at_once_and_admitted_again_later() {
    let mesh = mesh(&[&ONE_SLOW_WORKER[..], &["--max-requests", "2"]].concat()).await;
    let client = client(mesh.addr).await;
    let running = occupy(&client).await;
    let queued = start(&client, "queued").await.unwrap();

    // Had it been queued, it would have been served once the two ahead of
    // it were done (well within its 7 s time to live): refused, not queued.
    let status = infer(&client, "one too many").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "the batcher holds 2 requests, its limit (--max-requests); try again shortly"
    );

    // Places free up as streams end: the client that leaves gives its place back.
    drop(running);
    drop(queued);
    let mut admitted = None;
    for _ in 0..100 {
        match infer(&client, "admitted").await {
            Ok(responses) => {
                admitted = Some(responses);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        text(&admitted.expect("admitted once places freed")),
        expected_text("admitted")
    );

    let metrics = http_get(mesh.addr, "/metrics").await.body;
    assert!(
        metrics.lines().any(|l| l
            .starts_with(r#"horoscoper_requests_total{outcome="overloaded"} "#)
            && !l.ends_with(" 0")),
        "{metrics}"
    );
}
