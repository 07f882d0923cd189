//! A client that stops reading: HTTP/2 flow control holds its tokens back,
//! its batch-mates are not slowed, nothing is lost, and what waits for it is
//! bounded by its own text (one message per token, held in the gateway until
//! it can send it; the batcher's session with the gateway is not held up).

mod common;

use bytes::Bytes;
use common::{client, expected_text, mesh, raw};
use horoscoper_proto::v1::InferRequest;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_slow_its_batch_mates() {
    let flags = [
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--batch-window-ms",
        "200",
        "--min-delay-ms",
        "1000",
        "--max-delay-ms",
        "1000",
    ];
    let mesh = mesh(&flags).await;

    // The slow client: raw HTTP/2 with a 5-byte stream window that it never
    // opens, so the gateway can send it nothing past a frame header.
    let tcp = tokio::net::TcpStream::connect(mesh.addr).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(5)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/horoscoper.v1.Horoscoper/Infer",
        mesh.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut upload) = send.send_request(request, false).unwrap();
    upload
        .send_data(
            raw::frame(&InferRequest {
                prefix: "too busy to read".into(),
            })
            .into(),
            true,
        )
        .unwrap();

    // Three batch-mates read as usual and finish whole.
    let client = client(mesh.addr).await;
    let mut mates = tokio::task::JoinSet::new();
    for n in 0..3 {
        let client = client.clone();
        mates.spawn(async move {
            let prefix = format!("batch-mate {n}");
            let responses = common::infer(&client, &prefix).await.unwrap();
            (prefix, responses)
        });
    }
    let mut batches = Vec::new();
    while let Some(mate) = tokio::time::timeout(Duration::from_secs(20), mates.join_next())
        .await
        .expect("the batch-mates are not held up")
    {
        let (prefix, responses) = mate.unwrap();
        assert_eq!(common::text(&responses), expected_text(&prefix));
        batches.push(responses.last().unwrap().batch.clone().unwrap());
    }
    assert!(
        batches
            .iter()
            .all(|b| b.batch_size == 4 && b.batch_id == batches[0].batch_id),
        "they shared the slow client's batch: {batches:?}"
    );

    // Now it reads: every token is still there, then the status.
    let answer = raw::answer(response.await.unwrap()).await;
    assert_eq!(answer.code, tonic::Code::Ok, "{answer:?}");
    let text = answer.text;
    assert_eq!(text, expected_text("too busy to read"));
}
