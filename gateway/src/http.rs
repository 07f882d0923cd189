//! What the gateway's port serves over plain HTTP, beside gRPC and gRPC-Web:
//! the web page at `/`, the original's SSE endpoint, and what the mesh
//! runs.
//!
//! `GET /api/v1/mesh` says how the batchers batch, for the page to show
//! before any request: `{"batching": "static" | "continuous" | "mixed" |
//! null, "batchers": [{"batcher_id", "batching", "queued", "draining"}]}`,
//! from each batcher's last load (a batcher that says nothing within a
//! second is left out; `null` when none did).
//!
//! `POST /api/v1/infer` takes `{"prefix": "..."}` (or the original's
//! `{"text": "..."}`) and answers `text/event-stream`, one event per token:
//! `data: {"text": "...", "status": "IN_PROGRESS" | "FINISHED" | "ERROR", "error": null | "..."}`.
//! Errors after the stream has begun (prefix too long, timed out, no worker)
//! arrive as an ERROR event with a message; a body that is not such JSON gets
//! HTTP 422 with a message.

use crate::service::Gateway;
use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use horoscoper_proto::v1::InferRequest;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tonic::{Status, metadata::MetadataMap};

/// The built page, committed under `gateway/assets/` (see the README for how
/// to rebuild it), so that the binary needs no npm.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");

/// The plain-HTTP routes.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/healthcheck", get(healthcheck))
        .route("/api/v1/infer", post(infer))
        .route("/api/v1/mesh", get(mesh))
        .with_state(gateway)
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

/// The original's liveness check.
async fn healthcheck() -> impl IntoResponse {
    Json(serde_json::Value::Null)
}

/// The request body: `prefix`, or `text` as the original's clients send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferBody {
    prefix: Option<String>,
    text: Option<String>,
}

/// One SSE event, field for field as the original sent it.
#[derive(Debug, Serialize)]
struct InferMessage<'a> {
    text: &'a str,
    status: &'static str,
    error: Option<&'a str>,
}

fn event(text: &str, status: &'static str, error: Option<&str>) -> Event {
    let message = InferMessage {
        text,
        status,
        error,
    };
    Event::default().data(serde_json::to_string(&message).expect("a message serializes"))
}

fn error_event(status: &Status) -> Event {
    event("", "ERROR", Some(status.message()))
}

fn unprocessable(detail: String) -> Response {
    let body = serde_json::json!({ "detail": detail });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

async fn infer(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Result<Json<InferBody>, JsonRejection>,
) -> Response {
    // A `traceparent` or `x-request-id` header counts as it does over gRPC.
    let metadata = MetadataMap::from_headers(headers);
    if let Err(error) = gateway.authorize(&metadata) {
        let body = serde_json::json!({ "detail": error.to_string() });
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return unprocessable(rejection.body_text()),
    };
    let Some(prefix) = body.prefix.or(body.text) else {
        return unprocessable(
            r#"the body needs a "prefix" string, e.g. {"prefix": "hello"}"#.into(),
        );
    };
    let keep_alive = KeepAlive::default();
    match gateway.infer(InferRequest { prefix }, &metadata).await {
        Ok(tokens) => {
            let events = tokens.map(|token| {
                Ok::<_, std::convert::Infallible>(match token {
                    Ok(token) => {
                        let status = if token.last {
                            "FINISHED"
                        } else {
                            "IN_PROGRESS"
                        };
                        event(&token.text, status, None)
                    }
                    Err(status) => error_event(&status),
                })
            });
            Sse::new(events).keep_alive(keep_alive).into_response()
        }
        Err(status) => {
            let once = tokio_stream::once(Ok::<_, std::convert::Infallible>(error_event(&status)));
            Sse::new(once).keep_alive(keep_alive).into_response()
        }
    }
}

/// A batcher, as `/api/v1/mesh` shows it.
#[derive(Debug, Serialize)]
struct BatcherView {
    batcher_id: String,
    batching: &'static str,
    queued: u32,
    draining: bool,
}

#[derive(Debug, Serialize)]
struct MeshView {
    /// The batchers' mode when they agree, `mixed` when not, `None` when
    /// none answered.
    batching: Option<&'static str>,
    batchers: Vec<BatcherView>,
}

fn batching(continuous: bool) -> &'static str {
    if continuous { "continuous" } else { "static" }
}

async fn mesh(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let metadata = MetadataMap::from_headers(headers);
    if let Err(error) = gateway.authorize(&metadata) {
        let body = serde_json::json!({ "detail": error.to_string() });
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let batchers: Vec<BatcherView> = gateway
        .survey()
        .await
        .into_iter()
        .map(|load| BatcherView {
            batcher_id: load.batcher_id,
            batching: batching(load.continuous),
            queued: load.queued,
            draining: load.draining,
        })
        .collect();
    let mut modes = batchers.iter().map(|batcher| batcher.batching);
    let first = modes.next();
    let batching = match first {
        Some(mode) if modes.all(|other| other == mode) => Some(mode),
        Some(_) => Some("mixed"),
        None => None,
    };
    Json(MeshView { batching, batchers }).into_response()
}
