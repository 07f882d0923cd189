//! The gateway's session with the batcher (`BatcherService.Session`): every
//! request travels on one long-lived stream, tagged with an id, and the
//! batcher's replies (many requests' tokens to a message) are routed back to
//! each request's own stream. A request whose client leaves is withdrawn.
//!
//! The session opens with the first request, and again with the first
//! request after it ended (the batcher restarted or drained, or the
//! connection broke). When it ends, each request still open on it ends too:
//! UNAVAILABLE, saying whether the batcher could not be reached or was lost.

use crate::Error;
use horoscoper_proto::{
    mesh::{
        Leave, SessionRequest, SessionResponse, SubmitRequest, SubmitResponse,
        batcher_service_client::BatcherServiceClient, session_request::Command,
    },
    reply::{self, Message, Messages},
};
use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::UnboundedReceiverStream};
use tonic::{Status, transport::Channel};

/// Where one request's messages wait for its stream: its tokens, in the
/// runs they arrived in, the status that ends it, and the stream's waker.
/// Some 100 bytes when idle (a tokio channel, with its first block of slots,
/// is some 800).
#[derive(Default)]
struct Route {
    state: Mutex<RouteState>,
}

#[derive(Default)]
struct RouteState {
    /// Each reply's tokens as they were decoded, so a run of tokens is
    /// queued without being moved one by one.
    runs: VecDeque<std::vec::IntoIter<SubmitResponse>>,
    /// Boxed, so that a route without one is small (a `Status` is some 180
    /// bytes).
    end: Option<Box<Status>>,
    waker: Option<Waker>,
}

impl Route {
    fn push(&self, messages: Messages) {
        let mut state = self.state.lock().expect("route lock");
        match messages {
            Ok(tokens) => state.runs.push_back(tokens.into_iter()),
            Err(status) => state.end = Some(Box::new(status)),
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The next token, or once none is left, the ending status.
    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Message> {
        let mut state = self.state.lock().expect("route lock");
        while let Some(run) = state.runs.front_mut() {
            match run.next() {
                Some(token) => return Poll::Ready(Ok(token)),
                None => {
                    state.runs.pop_front();
                }
            }
        }
        if let Some(status) = state.end.take() {
            return Poll::Ready(Err(*status));
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The batcher, as the gateway's requests reach it.
#[derive(Clone)]
pub struct Upstream {
    client: BatcherServiceClient<Channel>,
    url: Arc<str>,
    /// The session requests go on, while it lasts.
    current: Arc<Mutex<Option<Arc<BatcherSession>>>>,
}

impl Upstream {
    pub fn new(client: BatcherServiceClient<Channel>, url: String) -> Upstream {
        Upstream {
            client,
            url: url.into(),
            current: Arc::default(),
        }
    }

    /// Sends `request` to the batcher (its `id` is chosen here); its tokens
    /// come back on the stream returned, which ends with its last token or
    /// its status.
    pub fn submit(&self, mut request: SubmitRequest) -> Tokens {
        let route = Arc::new(Route::default());
        let (session, id) = loop {
            let session = self.session();
            if let Some(id) = session.route(route.clone()) {
                break (session, id);
            }
            // It ended just now: the next call opens another.
        };
        request.id = id;
        // Should the session have ended since, its end fails the route.
        let _ = session.commands.send(SessionRequest {
            command: Some(Command::Submit(request)),
        });
        Tokens {
            session,
            id,
            route,
            finished: false,
        }
    }

    /// The session in use, or a new one when there is none or it ended.
    fn session(&self) -> Arc<BatcherSession> {
        let mut current = self.current.lock().expect("session lock");
        if let Some(session) = current.as_ref().filter(|session| !session.has_ended()) {
            return session.clone();
        }
        let (commands, sent) = mpsc::unbounded_channel();
        let session = Arc::new(BatcherSession {
            commands,
            routes: Mutex::default(),
        });
        tokio::spawn(run(
            session.clone(),
            self.client.clone(),
            UnboundedReceiverStream::new(sent),
            self.url.clone(),
        ));
        *current = Some(session.clone());
        session
    }
}

/// One session: the commands on their way up, and where replies go.
struct BatcherSession {
    commands: mpsc::UnboundedSender<SessionRequest>,
    routes: Mutex<Routes>,
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    open: HashMap<u64, Arc<Route>>,
    ended: bool,
}

impl BatcherSession {
    /// The routes, even after a panic while they were held: ending the
    /// session's requests with a status must still work then.
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn has_ended(&self) -> bool {
        self.routes().ended
    }

    /// A new request's id, with its replies sent to `route`; `None` once
    /// the session has ended.
    fn route(&self, route: Arc<Route>) -> Option<u64> {
        let mut routes = self.routes();
        if routes.ended {
            return None;
        }
        routes.next_id += 1;
        let id = routes.next_id;
        routes.open.insert(id, route);
        Some(id)
    }

    /// Each reply to the request it belongs to; a request's last ends it.
    /// A reply to a request no longer open (its client left) is dropped. A
    /// reply that cannot be read (a panic in decoding it) ends its request
    /// alone with INTERNAL.
    fn deliver(&self, response: SessionResponse) {
        let mut routes = self.routes();
        for reply in response.replies {
            let id = reply.id;
            let messages = horoscoper_runtime::panic::catch(|| reply::decode(reply).1)
                .unwrap_or_else(|panic| {
                    tracing::error!(%panic, "a reply from the batcher could not be read");
                    Err(Status::internal(format!(
                        "the gateway could not read the batcher's reply: {panic}"
                    )))
                });
            let last = reply::ends(&messages);
            if let Some(route) = routes.open.get(&id) {
                route.push(messages);
                if last {
                    routes.open.remove(&id);
                }
            }
        }
    }

    /// The client of request `id` left: withdraw it, unless it has ended.
    fn leave(&self, id: u64) {
        let mut routes = self.routes();
        if routes.open.remove(&id).is_some() && !routes.ended {
            let _ = self.commands.send(SessionRequest {
                command: Some(Command::Leave(Leave { id })),
            });
        }
    }

    /// The session is over: every request still open on it ends with
    /// `status`, and new requests go to a new session.
    fn end(&self, status: &Status) {
        let mut routes = self.routes();
        routes.ended = true;
        for (_, route) in routes.open.drain() {
            route.push(Err(status.clone()));
        }
    }
}

/// Opens the session, routes its replies until it ends, then ends it.
async fn run(
    session: Arc<BatcherSession>,
    mut client: BatcherServiceClient<Channel>,
    commands: UnboundedReceiverStream<SessionRequest>,
    url: Arc<str>,
) {
    let routed = horoscoper_runtime::panic::caught(async {
        let mut replies = match client.session(commands).await {
            Err(status) => return refused(status, &url),
            Ok(response) => response.into_inner(),
        };
        loop {
            match replies.message().await {
                Ok(Some(response)) => session.deliver(response),
                // It drained (or it was told to) and had no request of ours
                // open: any sent since were never taken.
                Ok(None) => {
                    break Error::BatcherUnavailable {
                        url: url.to_string(),
                        message: "it closed the session: it is shutting down".into(),
                    };
                }
                Err(status) => break broke(status, &url),
            }
        }
    })
    .await;
    // Whatever ended it, even a panic, its open requests end with a status.
    let status = match routed {
        Ok(error) => {
            tracing::debug!(%error, "batcher session ended");
            Status::from(error)
        }
        Err(panic) => {
            tracing::error!(%panic, "the batcher session panicked");
            Status::internal(format!(
                "the gateway's session with the batcher failed: {panic}"
            ))
        }
    };
    session.end(&status);
}

/// One request's tokens from the batcher, or the status that ended them.
/// Dropped before its end (its client left), it withdraws the request.
pub struct Tokens {
    session: Arc<BatcherSession>,
    id: u64,
    route: Arc<Route>,
    finished: bool,
}

impl Stream for Tokens {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let message = std::task::ready!(self.route.poll_pop(cx));
        // A route ends with a last token or a status.
        self.finished = reply::is_last(&message);
        Poll::Ready(Some(message))
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        if !self.finished {
            self.session.leave(self.id);
        }
    }
}

/// A status that refused the session. One made here (hyper calls a call on
/// a closing connection CANCELLED) means the batcher is unreachable.
fn refused(status: Status, url: &str) -> Error {
    if status.code() == tonic::Code::Unavailable
        || horoscoper_runtime::net::is_transport_error(&status)
    {
        Error::BatcherUnavailable {
            url: url.to_string(),
            message: status.message().to_string(),
        }
    } else {
        Error::Upstream(status)
    }
}

/// A status that ends the session after it began. One the batcher sent is
/// passed on as it is; one made here because the connection broke means the
/// batcher is gone.
fn broke(status: Status, url: &str) -> Error {
    if horoscoper_runtime::net::is_transport_error(&status) {
        Error::BatcherLost {
            url: url.to_string(),
            message: status.message().to_string(),
        }
    } else {
        Error::Upstream(status)
    }
}
