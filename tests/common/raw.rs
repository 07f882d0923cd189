//! gRPC over raw HTTP/2 (the h2 crate): requests a tonic client would not
//! send, with headers and bytes exactly as given, and the answer as the
//! server sent it.

use bytes::Bytes;
use horoscoper_proto::v1::InferResponse;
use prost::Message as _;
use std::net::SocketAddr;
use tonic::Code;

/// How a raw call ended: the text of the responses, and the status.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub code: Code,
    pub message: String,
}

/// A gRPC frame: flag, big-endian length, message.
pub fn frame(message: &impl prost::Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    framed
}

/// An HTTP/2 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    send
}

/// `Infer` (or `path`) with `body` as the request's bytes and these extra
/// headers, on `connection`.
pub async fn call(
    connection: &h2::client::SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut send = connection.clone().ready().await.unwrap();
    let mut request =
        http::Request::post(format!("http://localhost{path}")).header("te", "trailers");
    if !headers.iter().any(|(name, _)| *name == "content-type") {
        request = request.header("content-type", "application/grpc");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut upload) = send.send_request(request.body(()).unwrap(), false).unwrap();
    upload.send_data(body.into(), true).unwrap();
    answer(response.await.unwrap()).await
}

/// Reads a response to its end, opening the flow-control window as it goes.
pub async fn answer(response: http::Response<h2::RecvStream>) -> Answer {
    let headers = response.headers().clone();
    let http_status = response.status();
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        received.extend_from_slice(&chunk);
    }
    // A trailers-only answer carries the status in its headers.
    let trailers = body.trailers().await.unwrap().unwrap_or(headers);
    let Some(status) = trailers.get("grpc-status") else {
        panic!("no grpc-status (HTTP {http_status}): {trailers:?}");
    };
    let code = Code::from(status.to_str().unwrap().parse::<i32>().unwrap());
    let message = trailers
        .get("grpc-message")
        .map(|m| percent_decode(m.to_str().unwrap()))
        .unwrap_or_default();
    Answer {
        text: texts(&received),
        code,
        message,
    }
}

/// The text of the `InferResponse` frames in a response body, in order.
pub fn texts(mut body: &[u8]) -> String {
    let mut text = String::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        text.push_str(&InferResponse::decode(&body[5..5 + length]).unwrap().text);
        body = &body[5 + length..];
    }
    text
}

/// grpc-message is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[at + 1..at + 3], 16).unwrap());
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
