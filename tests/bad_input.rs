//! Malformed requests on the public port, each sent on the same HTTP/2
//! connection as a good stream that is running: every one gets a clear
//! status, none panics anything, and the good stream ends whole.

mod common;

use common::{expected_text, mesh, raw};
use horoscoper_proto::v1::InferRequest;
use tonic::Code;

const INFER: &str = "/horoscoper.v1.Horoscoper/Infer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_clear_status_and_the_stream_alongside_goes_on() {
    let flags = [
        "--batch-window-ms",
        "0",
        "--min-delay-ms",
        "800",
        "--max-delay-ms",
        "800",
    ];
    let mesh = mesh(&flags).await;
    let connection = raw::connect(mesh.addr).await;
    let good = {
        let connection = connection.clone();
        tokio::spawn(async move {
            let request = raw::frame(&InferRequest {
                prefix: "alongside".into(),
            });
            raw::call(&connection, INFER, &[], request).await
        })
    };

    let frame = |flag: u8, declared: u32, bytes: &[u8]| {
        let mut framed = vec![flag];
        framed.extend_from_slice(&declared.to_be_bytes());
        framed.extend_from_slice(bytes);
        framed
    };
    // field 1 (prefix), length 2, bytes that are not UTF-8
    let not_utf8 = [0x0a, 0x02, 0xff, 0xfe];
    // What is sent, the body, extra headers, the status expected and a word
    // of its message.
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, Code, &'a str);
    let cases: Vec<Case> = vec![
        (
            "invalid UTF-8 in the prefix",
            frame(0, 4, &not_utf8),
            vec![],
            Code::Internal,
            "UTF-8",
        ),
        (
            "not protobuf at all",
            frame(0, 3, &[0xff, 0xff, 0xff]),
            vec![],
            Code::Internal,
            "decode",
        ),
        (
            "a frame cut short",
            frame(0, 100, b"\x0a\x05hel"),
            vec![],
            Code::Internal,
            "",
        ),
        (
            "a compressed frame with no grpc-encoding",
            frame(1, 2, &[0x0a, 0x00]),
            vec![],
            Code::Internal,
            "compress",
        ),
        (
            "an unknown grpc-encoding",
            frame(1, 2, &[0x0a, 0x00]),
            vec![("grpc-encoding", "snappy-9000")],
            Code::Unimplemented,
            "snappy-9000",
        ),
        ("no message at all", Vec::new(), vec![], Code::Internal, ""),
    ];
    for (what, body, headers, code, says) in cases {
        let answer = raw::call(&connection, INFER, &headers, body).await;
        eprintln!("{what}: {:?} {:?}", answer.code, answer.message);
        assert_eq!(answer.code, code, "{what}: {answer:?}");
        assert!(answer.message.contains(says), "{what}: {answer:?}");
        assert!(answer.text.is_empty(), "{what}: {answer:?}");
    }

    // Two request messages where one is expected: tonic serves the first and
    // ignores the rest (a whole text, status 0) rather than failing.
    let two = [frame(0, 2, &[0x0a, 0x00]), frame(0, 2, &[0x0a, 0x00])].concat();
    let answer = raw::call(&connection, INFER, &[], two).await;
    assert_eq!((answer.code, answer.text), (Code::Ok, expected_text("")));

    let good = good.await.unwrap();
    assert_eq!(
        (good.code, good.text),
        (Code::Ok, expected_text("alongside"))
    );
}
