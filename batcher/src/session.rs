//! One session with a gateway: its requests come up one command at a time;
//! their tokens, from whichever batches serve them, go down many to a
//! message. The session ends when the gateway leaves (its open requests are
//! cancelled), or once it has no open request and either the gateway has
//! closed its side or the batcher is draining.
//!
//! The session also tells the gateway the batcher's load (its queue, and
//! whether it drains) in its first message and whenever it changes, at most
//! every `--load-interval-ms`: on a message of replies when one is going,
//! else on its own (a drain at once). Gateways weigh it to choose a batcher,
//! and send a draining one nothing new.

use crate::{
    admission::{Admission, Admitted},
    request::{Reply, Tagged},
};
use horoscoper_proto::{
    mesh::{Leave, Load, SessionRequest, SessionResponse, session_request::Command},
    reply,
};
use prost::Message as _;
use std::{collections::HashMap, sync::Arc};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;

/// Most replies in one message, and roughly most bytes: far below the
/// message size limit, and a message that is sent while more wait.
const MAX_REPLIES: usize = 1024;
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// The batcher's side of one gateway's session, reading its commands from
/// `S`: the gRPC request stream, or any other (the fuzz target's).
pub struct GatewaySession<S> {
    admission: Admission,
    commands: S,
    out: mpsc::Sender<Result<SessionResponse, Status>>,
    /// Every request of the session sends here, tagged with its id.
    reply_to: mpsc::UnboundedSender<Tagged>,
    replies: mpsc::UnboundedReceiver<Tagged>,
    /// The requests not yet ended, by their id in the session: admitted
    /// (`Some`), or refused with their refusal on its way (`None`). Replies
    /// to any other id (a request withdrawn) are dropped.
    open: HashMap<u64, Option<Admitted>>,
    /// This batcher's id, in its load.
    batcher_id: Arc<str>,
    /// How many requests wait in the queue.
    queued: watch::Receiver<u32>,
    /// The load last sent, once one was, and when.
    load_sent: Option<(u32, bool)>,
    load_sent_at: tokio::time::Instant,
    draining: bool,
}

impl<S> GatewaySession<S>
where
    S: Stream<Item = Result<SessionRequest, Status>> + Unpin,
{
    pub fn new(
        admission: Admission,
        commands: S,
        out: mpsc::Sender<Result<SessionResponse, Status>>,
    ) -> GatewaySession<S> {
        let (reply_to, replies) = mpsc::unbounded_channel();
        GatewaySession {
            queued: admission.dispatcher().queued(),
            draining: admission.drain().is_draining(),
            batcher_id: admission.batcher_id().clone(),
            load_sent: None,
            load_sent_at: tokio::time::Instant::now(),
            admission,
            commands,
            out,
            reply_to,
            replies,
            open: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        let drain = self.admission.drain().clone();
        let mut gateway_sending = true;
        let mut load_changes = true;
        // The first message says the load.
        let mut load_due = Some(tokio::time::Instant::now());
        let ended = loop {
            if (self.draining || !gateway_sending) && self.open.is_empty() {
                break Ok(());
            }
            tokio::select! {
                biased;
                Some(first) = self.replies.recv() => {
                    let response = self.collect(first);
                    if response.replies.is_empty() && response.load.is_none() {
                        continue;
                    }
                    if self.out.send(Ok(response)).await.is_err() {
                        break Ok(()); // the gateway is gone
                    }
                }
                command = self.commands.next(), if gateway_sending => match command {
                    Some(Ok(command)) => {
                        if let Err(status) = self.guarded(command) {
                            break Err(status);
                        }
                    }
                    // A transport error: the gateway's side of the
                    // connection is gone, and nothing can reach it.
                    Some(Err(status)) if horoscoper_runtime::net::is_transport_error(&status) => {
                        tracing::debug!(%status, "the gateway's side of the session broke");
                        break Ok(());
                    }
                    Some(Err(status)) => break Err(status),
                    None => gateway_sending = false,
                },
                () = drain.begun().cancelled(), if !self.draining => {
                    self.draining = true;
                    if !self.send_load(true).await {
                        break Ok(());
                    }
                }
                changed = self.queued.changed(), if load_changes && load_due.is_none() => {
                    if changed.is_err() {
                        load_changes = false; // the batcher is stopping
                    } else {
                        load_due = Some(self.load_sent_at + self.admission.load_every());
                    }
                }
                () = sleep_until(load_due) => {
                    load_due = None;
                    if !self.send_load(false).await {
                        break Ok(());
                    }
                }
                () = self.out.closed() => break Ok(()),
            }
        };
        let dispatcher = self.admission.dispatcher();
        for admitted in self.open.drain().filter_map(|(_, admitted)| admitted) {
            admitted.cancel(dispatcher);
        }
        match ended {
            Ok(()) => tracing::debug!("session ended"),
            Err(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), "session ended by an error");
                let _ = self.out.send(Err(status)).await;
            }
        }
    }

    /// The load, when it changed since it was last sent and the last report
    /// is old enough (or `at_once`: a drain). A change held back is still seen
    /// by the `queued` watch, which schedules its report.
    fn load(&mut self, at_once: bool) -> Option<Load> {
        if !at_once
            && self.load_sent.is_some()
            && tokio::time::Instant::now() < self.load_sent_at + self.admission.load_every()
        {
            return None;
        }
        let now = (*self.queued.borrow_and_update(), self.draining);
        if self.load_sent == Some(now) {
            return None;
        }
        self.load_sent = Some(now);
        self.load_sent_at = tokio::time::Instant::now();
        Some(Load {
            queued: now.0,
            draining: now.1,
            batcher_id: self.batcher_id.to_string(),
            batch_size: u32::try_from(self.admission.batch_size()).unwrap_or(u32::MAX),
            continuous: self.admission.continuous(),
        })
    }

    /// Sends the load on its own, if it changed; false when the gateway is
    /// gone.
    async fn send_load(&mut self, at_once: bool) -> bool {
        let Some(load) = self.load(at_once) else {
            return true;
        };
        let response = SessionResponse {
            replies: Vec::new(),
            load: Some(load),
        };
        self.out.send(Ok(response)).await.is_ok()
    }

    /// Handles a command; a panic while doing so fails the request it
    /// concerned, alone (its reply, dropped in the unwinding, says INTERNAL),
    /// and the session goes on.
    fn guarded(&mut self, command: SessionRequest) -> Result<(), Status> {
        let submitted = match &command.command {
            Some(Command::Submit(submit)) if !self.open.contains_key(&submit.id) => Some(submit.id),
            _ => None,
        };
        horoscoper_runtime::panic::catch(|| self.command(command)).unwrap_or_else(|panic| {
            tracing::error!(%panic, request = ?submitted, "a session command panicked");
            if let Some(id) = submitted {
                // Its end is on its way: let it through.
                self.open.entry(id).or_insert(None);
            }
            Ok(())
        })
    }

    fn command(&mut self, command: SessionRequest) -> Result<(), Status> {
        match command.command {
            Some(Command::Submit(submit)) => {
                let id = submit.id;
                if self.open.contains_key(&id) {
                    return Err(Status::invalid_argument(format!(
                        "request {id} is already open in this session"
                    )));
                }
                let reply = Reply::new(id, self.reply_to.clone());
                let admitted = self.admission.admit(submit, reply);
                self.open.insert(id, admitted);
            }
            Some(Command::Leave(Leave { id })) => {
                if let Some(Some(admitted)) = self.open.remove(&id) {
                    admitted.cancel(self.admission.dispatcher());
                }
            }
            None => {
                return Err(Status::invalid_argument(
                    "a session command is either submit or leave",
                ));
            }
        }
        Ok(())
    }

    /// `first` and the replies already waiting behind it, as one message
    /// (empty when all were to withdrawn requests). A request's last reply
    /// ends it here.
    fn collect(&mut self, first: Tagged) -> SessionResponse {
        let mut replies = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(tagged) = next {
            next = if replies.len() + 1 < MAX_REPLIES && bytes < MAX_REPLY_BYTES {
                self.replies.try_recv().ok()
            } else {
                None
            };
            if !self.open.contains_key(&tagged.id) {
                continue; // withdrawn
            }
            if reply::ends(&tagged.message) {
                self.open.remove(&tagged.id);
            }
            let reply = reply::encode(tagged.id, tagged.message);
            bytes += reply.encoded_len();
            replies.push(reply);
        }
        let load = self.load(false);
        SessionResponse { replies, load }
    }
}

/// Resolves at `at`; never, without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchingArgs, Metrics, dispatcher::Dispatcher};
    use horoscoper_proto::mesh::SubmitRequest;
    use horoscoper_runtime::drain::Drain;
    use std::time::Duration;
    use tokio::time::Instant;
    use tokio_stream::wrappers::ReceiverStream;
    use tokio_util::sync::CancellationToken;

    fn submit(id: u64) -> Result<SessionRequest, Status> {
        Ok(SessionRequest {
            command: Some(Command::Submit(SubmitRequest {
                id,
                prefix: format!("request {id}"),
                ..Default::default()
            })),
        })
    }

    /// The queue each load report says, and when it came.
    async fn next_load(
        out: &mut mpsc::Receiver<Result<SessionResponse, Status>>,
        t0: Instant,
    ) -> (u32, Duration) {
        loop {
            let message = out
                .recv()
                .await
                .expect("the session runs")
                .expect("no error");
            if let Some(load) = message.load {
                return (load.queued, t0.elapsed());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_reported_at_once_then_at_most_every_load_interval() {
        // No worker: what is submitted stays queued.
        let batching = BatchingArgs {
            batch_size: 64,
            batch_window_ms: 0,
            request_ttl_ms: 60_000,
            max_requests: 64,
            batching: Default::default(),
            load_interval_ms: 1000,
        }
        .validate()
        .unwrap();
        let stop = CancellationToken::new();
        let dispatcher =
            Dispatcher::spawn(batching.policy, Metrics::default().of("t"), stop.clone());
        let drain = Drain::start(std::future::pending(), Duration::from_secs(1));
        let admission = Admission::new(dispatcher, batching, drain, "t".into());
        let (commands, receiver) = mpsc::channel(8);
        let (out, mut sent) = mpsc::channel(16);
        let t0 = Instant::now();
        tokio::spawn(GatewaySession::new(admission, ReceiverStream::new(receiver), out).run());
        assert_eq!(
            next_load(&mut sent, t0).await,
            (0, Duration::ZERO),
            "first message"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        commands.send(submit(1)).await.unwrap();
        commands.send(submit(2)).await.unwrap();
        // Two changes, one report, a second after the last.
        assert_eq!(next_load(&mut sent, t0).await, (2, Duration::from_secs(1)));
        commands.send(submit(3)).await.unwrap();
        assert_eq!(next_load(&mut sent, t0).await, (3, Duration::from_secs(2)));
        stop.cancel();
    }
}
