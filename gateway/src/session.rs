//! The gateway's session with one batcher (`BatcherService.Session`): every
//! request sent there travels on one long-lived stream, tagged with an id,
//! and the batcher's replies (many requests' tokens to a message) are routed
//! back to each request's own [`Route`]. A request whose client leaves is
//! withdrawn. The batcher's load comes on the same stream: how many requests
//! wait in its queue, and whether it drains.
//!
//! A session opens with the first request sent to its batcher, and again
//! with the first after it ended. When it ends, its open routes go back to
//! the caller of [`run`], with why: [`crate::upstream`] moves them to another
//! batcher, or ends them with the status.

use crate::{
    Error,
    route::{Route, Withdraw},
};
use horoscoper_proto::{
    mesh::{
        Leave, Load, SessionRequest, SessionResponse, SubmitRequest,
        batcher_service_client::BatcherServiceClient, session_request::Command,
    },
    reply,
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, transport::Channel};

/// One session: the commands on their way up, where replies go, and the
/// batcher's load as it last said it.
pub struct BatcherSession {
    commands: mpsc::UnboundedSender<SessionRequest>,
    routes: Mutex<Routes>,
    /// The batcher's queue as it last reported it, and the requests sent
    /// here since: what its queue is now, as far as this gateway knows.
    queued: AtomicU32,
    sent_since: AtomicU32,
    /// Its batch size, once reported (0 until then).
    batch_size: AtomicU32,
    /// It runs continuous batching, as reported.
    continuous: AtomicBool,
    draining: AtomicBool,
    /// `Routes::ended`, to read without the lock that replies hold.
    ended: AtomicBool,
    /// The batcher's last load, for those who look (`None` until the first).
    report: watch::Sender<Option<Load>>,
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    open: HashMap<u64, Arc<Route>>,
    ended: bool,
}

/// A batcher's queue, as a gateway knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    pub queued: u32,
    /// 0: not reported.
    pub batch_size: u32,
    /// Continuous batching: no batch fills.
    pub continuous: bool,
}

impl Queue {
    /// It holds a batch still filling: some requests, fewer than a batch
    /// (never in continuous batching, where requests join as they come).
    pub fn filling(&self) -> bool {
        !self.continuous && self.queued > 0 && self.queued < self.batch_size
    }
}

/// Why a session ended, for the requests still open on it.
pub enum Ended {
    /// The batcher could not be reached, was lost, or closed the session:
    /// its requests may go on at another batcher.
    Batcher(Error),
    /// The session failed otherwise (the batcher refused it with a status,
    /// or a panic here): its requests end with this status.
    Failed(Status),
}

impl BatcherSession {
    /// A session, and the commands its task (see [`run`]) sends up.
    pub fn new() -> (Arc<BatcherSession>, UnboundedReceiverStream<SessionRequest>) {
        let (commands, sent) = mpsc::unbounded_channel();
        let session = Arc::new(BatcherSession {
            commands,
            routes: Mutex::default(),
            queued: AtomicU32::new(0),
            sent_since: AtomicU32::new(0),
            batch_size: AtomicU32::new(0),
            continuous: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            report: watch::Sender::new(None),
        });
        (session, UnboundedReceiverStream::new(sent))
    }

    /// The routes, even after a panic while they were held: ending the
    /// session's requests with a status must still work then.
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether the batcher said it drains: it takes no new request.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// What a request sent here would join: the batcher's queue (from
    /// every gateway, as last reported, and what this one sent since), and
    /// the batch size it fills.
    pub fn queue(&self) -> Queue {
        Queue {
            queued: self.queued.load(Ordering::Relaxed) + self.sent_since.load(Ordering::Relaxed),
            batch_size: self.batch_size.load(Ordering::Relaxed),
            continuous: self.continuous.load(Ordering::Relaxed),
        }
    }

    /// The batcher's last load as it comes: `None` until the first.
    pub fn report(&self) -> watch::Receiver<Option<Load>> {
        self.report.subscribe()
    }

    /// This gateway's requests open on it, queued or running.
    pub fn open(&self) -> usize {
        self.routes().open.len()
    }

    /// Sends `request` with its replies to `route`, which it tells where it
    /// is open. `false` once the session has ended.
    pub fn submit(self: &Arc<Self>, route: &Arc<Route>, mut request: SubmitRequest) -> bool {
        let id = {
            let mut routes = self.routes();
            if routes.ended {
                return false;
            }
            routes.next_id += 1;
            let id = routes.next_id;
            routes.open.insert(id, route.clone());
            id
        };
        self.sent_since.fetch_add(1, Ordering::Relaxed);
        route.opened(self.clone(), id);
        request.id = id;
        // Should the session have ended since, its end takes the route.
        let _ = self.commands.send(SessionRequest {
            command: Some(Command::Submit(request)),
        });
        true
    }

    /// Each reply to the request it belongs to; a request's last ends it.
    /// A reply to a request no longer open (its client left) is dropped. A
    /// reply that cannot be read (a panic in decoding it) ends its request
    /// alone with INTERNAL. The requests the batcher refused without taking
    /// them (it drains) are no longer open here, and come back with why.
    fn deliver(&self, response: SessionResponse) -> Vec<(Arc<Route>, Status)> {
        let mut refused = Vec::new();
        if let Some(load) = response.load {
            self.loaded(&load);
        }
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
            if let Err(status) = &messages
                && reply::is_refused(status)
            {
                if let Some(route) = routes.open.remove(&id) {
                    route.closed();
                    let status = Status::new(status.code(), status.message());
                    refused.push((route, status));
                }
                continue;
            }
            let last = reply::ends(&messages);
            if let Some(route) = routes.open.get(&id) {
                route.push(messages);
                if last {
                    route.closed();
                    routes.open.remove(&id);
                }
            }
        }
        refused
    }

    fn loaded(&self, load: &Load) {
        self.queued.store(load.queued, Ordering::Relaxed);
        self.sent_since.store(0, Ordering::Relaxed);
        self.batch_size.store(load.batch_size, Ordering::Relaxed);
        self.continuous.store(load.continuous, Ordering::Relaxed);
        if load.draining && !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!(batcher = %load.batcher_id, "batcher draining: it gets no new request");
        }
        self.report.send_replace(Some(load.clone()));
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

    /// The session is over: new requests go to a new session, and the
    /// requests still open on it are handed back.
    fn end(&self) -> Vec<Arc<Route>> {
        let mut routes = self.routes();
        routes.ended = true;
        self.ended.store(true, Ordering::Release);
        routes
            .open
            .drain()
            .map(|(_, route)| {
                route.closed();
                route
            })
            .collect()
    }
}

impl Withdraw for BatcherSession {
    fn withdraw(&self, id: u64) {
        self.leave(id);
    }
}

/// Opens the session, routes its replies until it ends, then ends it: its
/// open routes come back, with why it ended.
/// A request the batcher refused goes to `on_refused`, with the status.
pub async fn run(
    session: Arc<BatcherSession>,
    mut client: BatcherServiceClient<Channel>,
    commands: UnboundedReceiverStream<SessionRequest>,
    url: Arc<str>,
    on_refused: impl Fn(Arc<Route>, Status),
) -> (Vec<Arc<Route>>, Ended) {
    let routed = horoscoper_runtime::panic::caught(async {
        let mut replies = match client.session(commands).await {
            Err(status) => return refused(status, &url),
            Ok(response) => response.into_inner(),
        };
        loop {
            match replies.message().await {
                Ok(Some(response)) => {
                    for (route, status) in session.deliver(response) {
                        on_refused(route, status);
                    }
                }
                // It drained (or it was told to) and had no request of ours
                // open: any sent since were never taken.
                Ok(None) => {
                    break Ended::Batcher(Error::BatcherUnavailable {
                        url: url.to_string(),
                        message: "it closed the session: it is shutting down".into(),
                    });
                }
                Err(status) => break broke(status, &url),
            }
        }
    })
    .await;
    // Whatever ended it, even a panic, its open requests are handed back.
    let ended = routed.unwrap_or_else(|panic| {
        tracing::error!(%panic, "the batcher session panicked");
        Ended::Failed(Status::internal(format!(
            "the gateway's session with the batcher failed: {panic}"
        )))
    });
    (session.end(), ended)
}

/// A status that refused the session. One made here (hyper calls a call on
/// a closing connection CANCELLED) means the batcher is unreachable.
fn refused(status: Status, url: &str) -> Ended {
    if status.code() == tonic::Code::Unavailable
        || horoscoper_runtime::net::is_transport_error(&status)
    {
        Ended::Batcher(Error::BatcherUnavailable {
            url: url.to_string(),
            message: status.message().to_string(),
        })
    } else {
        Ended::Failed(Status::from(Error::Upstream(status)))
    }
}

/// A status that ends the session after it began. One the batcher sent is
/// passed on as it is; one made here because the connection broke means the
/// batcher is gone.
fn broke(status: Status, url: &str) -> Ended {
    if horoscoper_runtime::net::is_transport_error(&status) {
        Ended::Batcher(Error::BatcherLost {
            url: url.to_string(),
            message: status.message().to_string(),
        })
    } else {
        Ended::Failed(Status::from(Error::Upstream(status)))
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn a_queue_is_filling_while_it_holds_part_of_a_batch() {
        let queue = |queued, batch_size| Queue {
            queued,
            batch_size,
            continuous: false,
        };
        assert!(!queue(0, 4).filling(), "empty");
        assert!(queue(1, 4).filling() && queue(3, 4).filling());
        assert!(!queue(4, 4).filling(), "a whole batch waits");
        let joining = Queue {
            continuous: true,
            ..queue(1, 4)
        };
        assert!(!joining.filling(), "continuous batching fills no batch");
        assert!(!queue(9, 4).filling(), "more than a batch waits");
        assert!(
            !queue(2, 0).filling(),
            "an older batcher says no batch size"
        );
    }
}
