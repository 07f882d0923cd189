//! The table of the batch a worker is running: which request gets which
//! token, what its client already has, what ends it, and what to run again
//! should the worker be lost. Synchronous state, owned by the worker's
//! connection task, which does the sending.

use crate::{
    Error,
    dispatcher::Dispatched,
    queue::Entry,
    request::{Limit, Orphaned, Pending},
};
use horoscoper_proto::mesh::{self, Batch, BatchItem, Step, SubmitResponse};
use horoscoper_runtime::trace;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::time::Instant;
use tonic::Status;

/// Most workers a request may lose: the one that loses the last fails it.
pub const MAX_LOST: u32 = 3;

/// The batch a worker is running.
pub struct RunningBatch {
    batch_id: u64,
    size: u32,
    /// It joined a worker of continuous batching.
    continuous: bool,
    worker_id: Arc<str>,
    requests: HashMap<u64, BatchRequest>,
    /// The batch's own span; it ends with the batch.
    _span: tracing::Span,
}

/// A request of the running batch.
struct BatchRequest {
    /// The request as it was queued, to run again should the worker be lost.
    entry: Entry<Pending>,
    /// Tokens of its text that the worker has produced, counting those the
    /// client had when the batch began if the worker resumes (skips them).
    seen: u32,
    /// Its tokens of the step being read, sent together at the step's end.
    ready: Vec<SubmitResponse>,
    queue_time: Duration,
    /// The request's generation, a child of its submit span: it ends with
    /// the request's last token.
    _span: tracing::Span,
}

impl RunningBatch {
    /// The table of `dispatched` on worker `worker_id`, and the batch to
    /// send it. A worker that `resumes` sends a request that runs again only
    /// the tokens its client lacks; any other sends them all, and those the
    /// client has are skipped here.
    pub fn start(
        dispatched: Dispatched,
        worker_id: Arc<str>,
        resumes: bool,
        continuous: bool,
    ) -> (RunningBatch, Batch) {
        let size = dispatched.requests.len();
        let mut items = Vec::with_capacity(size);
        let mut requests = HashMap::with_capacity(size);
        for mut entry in dispatched.requests {
            let span = tracing::info_span!(
                target: horoscoper_runtime::trace_only!(),
                parent: &entry.item.span,
                "generate",
                batch_id = dispatched.batch_id,
                batch_size = size,
                reason = dispatched.reason.as_str(),
                worker = %worker_id,
            );
            // Without an exporter, nothing builds the generation's span: the
            // request's own span is the worker's parent then.
            let parent = if span.is_disabled() {
                &entry.item.span
            } else {
                &span
            };
            parent.in_scope(|| {
                tracing::debug!(batch_id = dispatched.batch_id, worker = %worker_id, "dispatched")
            });
            items.push(BatchItem {
                request_id: entry.id,
                prefix: entry.item.prefix.clone(),
                trace_context: trace::to_map(parent),
                log_id: entry.item.log_id.clone(),
                time_left: entry
                    .item
                    .deadline
                    .map(|deadline| deadline.time_left(dispatched.at)),
                delivered: entry.item.delivered,
            });
            let queue_time = *entry
                .item
                .first_wait
                .get_or_insert(dispatched.at - entry.enqueued);
            let seen = if resumes { entry.item.delivered } else { 0 };
            requests.insert(
                entry.id,
                BatchRequest {
                    queue_time,
                    entry,
                    seen,
                    ready: Vec::new(),
                    _span: span,
                },
            );
        }
        let running = RunningBatch {
            batch_id: dispatched.batch_id,
            size: size as u32,
            continuous,
            worker_id,
            requests,
            _span: dispatched.span,
        };
        let batch = Batch {
            batch_id: dispatched.batch_id,
            items,
        };
        (running, batch)
    }

    pub fn batch_id(&self) -> u64 {
        self.batch_id
    }

    /// How many of its requests are still open.
    pub fn open(&self) -> usize {
        self.requests.len()
    }

    /// Its client left: the request takes no more tokens. False when it was
    /// not in the batch (or had ended already).
    pub fn cancel(&mut self, request_id: u64) -> bool {
        self.requests.remove(&request_id).is_some()
    }

    /// Routes one step's tokens, each request's together, skipping those its
    /// client already has from a lost worker. A request whose last token
    /// went out ends here. Returns the requests whose clients are gone, to
    /// cancel at the worker: at the latest, they stop a step after leaving.
    pub fn step(&mut self, step: Step) -> Vec<u64> {
        let mut touched = Vec::new();
        for token in step.tokens {
            let Some(request) = self.requests.get_mut(&token.request_id) else {
                continue; // cancelled since the step was sent
            };
            if request.ready.last().is_some_and(|token| token.last) {
                continue; // nothing follows a last token
            }
            request.seen += 1;
            if request.seen <= request.entry.item.delivered {
                if token.last {
                    // The lost worker had given more tokens than this whole text.
                    let status = Status::from(Error::TextDiffers {
                        worker_id: self.worker_id.to_string(),
                    });
                    let _ = request.entry.item.reply.fail(status);
                    self.requests.remove(&token.request_id);
                }
                continue; // its client has this token from the lost worker
            }
            let batch = token.last.then(|| mesh::BatchInfo {
                batch_id: self.batch_id,
                batch_size: self.size,
                worker_id: self.worker_id.to_string(),
                queue_time: prost_types::Duration::try_from(request.queue_time).ok(),
                // A static batch's requests share every step.
                max_shared: if self.continuous {
                    token.shared
                } else {
                    self.size
                },
                continuous: self.continuous,
            });
            if request.ready.is_empty() {
                touched.push(token.request_id);
            }
            request.ready.push(SubmitResponse {
                text: token.text,
                last: token.last,
                batch,
            });
        }
        let mut left = Vec::new();
        for request_id in touched {
            let Some(request) = self.requests.get_mut(&request_id) else {
                continue;
            };
            let tokens = std::mem::take(&mut request.ready);
            let last = tokens.last().is_some_and(|token| token.last);
            let delivered =
                !request.entry.item.reply.is_gone() && request.entry.item.reply.send_tokens(tokens);
            if last || !delivered {
                // Dropping the request ends its stream after its last token.
                self.requests.remove(&request_id);
            }
            if !delivered {
                left.push(request_id);
            }
        }
        left
    }

    /// The worker ended the batch: a request still open passed its client's
    /// deadline there (the worker stops it), had a text no longer than what
    /// its client already had, or was cut short.
    pub fn done(self, now: Instant) {
        for mut request in self.requests.into_values() {
            let delivered = request.entry.item.delivered;
            let error = match request.entry.item.deadline {
                Some(deadline) if deadline.at <= now => Error::DeadlinePassed {
                    limit: deadline.limit,
                },
                _ if delivered > 0 && request.seen <= delivered => Error::TextDiffers {
                    worker_id: self.worker_id.to_string(),
                },
                _ => Error::BatchCutShort {
                    worker_id: self.worker_id.to_string(),
                    batch_id: self.batch_id,
                },
            };
            let _ = request.entry.item.reply.fail(error.into());
        }
    }

    /// Ends every open request with `error`.
    pub fn fail(self, error: Error) {
        let status = Status::from(error);
        for mut request in self.requests.into_values() {
            let _ = request.entry.item.reply.fail(status.clone());
        }
    }

    /// The requests whose clients are still there, ready to queue again:
    /// each skips the tokens its client already has, and waits for a worker
    /// for a time to live of its own again, but never past its client's
    /// deadline. A request that has now lost [`MAX_LOST`] workers fails
    /// instead: a request that breaks every worker it reaches does not go
    /// round the mesh for ever.
    pub fn orphan(self, now: Instant) -> Vec<Entry<Pending>> {
        let orphaned = Orphaned {
            worker_id: self.worker_id.clone(),
            since: now,
        };
        let mut again = Vec::with_capacity(self.requests.len());
        for request in self.requests.into_values() {
            let mut entry = request.entry;
            if entry.item.reply.is_gone() {
                continue;
            }
            entry.item.lost += 1;
            if entry.item.lost >= MAX_LOST {
                let error = Error::LostTooOften {
                    lost: entry.item.lost,
                    worker_id: self.worker_id.to_string(),
                };
                let _ = entry.item.reply.fail(error.into());
                continue;
            }
            entry.item.delivered = entry.item.delivered.max(request.seen);
            entry.item.orphaned = Some(orphaned.clone());
            if let Limit::TimeToLive(time_to_live) = entry.item.limit {
                entry.expires = now + time_to_live;
                if let Some(deadline) = entry.item.deadline
                    && deadline.at < entry.expires
                {
                    // Its client's deadline now comes first, and is named.
                    entry.expires = deadline.at;
                    entry.item.limit = Limit::ClientDeadline(deadline.limit);
                }
            }
            again.push(entry);
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        queue::Reason,
        request::{Reply, Tagged},
    };
    use horoscoper_proto::{deadline::ClientDeadline, mesh::StepToken};
    use tokio::sync::mpsc;
    use tonic::Code;

    const TTL: Duration = Duration::from_secs(7);

    fn entry(id: u64, session: &mpsc::UnboundedSender<Tagged>, now: Instant) -> Entry<Pending> {
        Entry {
            id,
            enqueued: now,
            expires: now + TTL,
            item: Pending {
                prefix: format!("prefix {id}"),
                limit: Limit::TimeToLive(TTL),
                reply: Reply::new(id * 10, session.clone()),
                log_id: format!("log-{id}"),
                span: tracing::Span::none(),
                queued: tracing::Span::none(),
                delivered: 0,
                first_wait: None,
                orphaned: None,
                lost: 0,
                deadline: None,
            },
        }
    }

    /// Starts a batch on a worker that resumes re-runs.
    fn start_on(dispatched: Dispatched, worker_id: Arc<str>) -> (RunningBatch, Batch) {
        RunningBatch::start(dispatched, worker_id, true, false)
    }

    fn dispatched(requests: Vec<Entry<Pending>>, at: Instant) -> Dispatched {
        Dispatched {
            batch_id: 7,
            reason: Reason::Full,
            at,
            requests,
            span: tracing::Span::none(),
        }
    }

    fn step(tokens: &[(u64, &str, bool)]) -> Step {
        Step {
            batch_id: 7,
            tokens: tokens
                .iter()
                .map(|&(request_id, text, last)| StepToken {
                    request_id,
                    text: text.into(),
                    last,
                    shared: 0,
                })
                .collect(),
        }
    }

    /// What reached the session: each message as (id in the session, texts)
    /// or (id, status code).
    fn received(
        session: &mut mpsc::UnboundedReceiver<Tagged>,
    ) -> Vec<(u64, Result<Vec<String>, Code>)> {
        std::iter::from_fn(|| session.try_recv().ok())
            .map(|tagged| {
                let message = tagged
                    .message
                    .map(|tokens| tokens.into_iter().map(|token| token.text).collect())
                    .map_err(|status| status.code());
                (tagged.id, message)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_batch_carries_each_request_and_its_time_queued() {
        let (session, _replies) = mpsc::unbounded_channel();
        let queued = Instant::now();
        tokio::time::advance(Duration::from_millis(40)).await;
        let mut first = entry(1, &session, queued);
        first.item.deadline = Some(ClientDeadline::starting(queued, Duration::from_secs(1)));
        let requests = vec![first, entry(2, &session, queued)];
        let (mut running, batch) = start_on(dispatched(requests, Instant::now()), "w".into());
        assert_eq!(batch.batch_id, 7);
        let ids: Vec<u64> = batch.items.iter().map(|item| item.request_id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(batch.items[0].log_id, "log-1");
        assert_eq!(batch.items[0].prefix, "prefix 1");
        assert_eq!(
            batch.items[0].time_left,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 960_000_000
            })
        );
        assert_eq!(batch.items[1].time_left, None);

        assert!(running.cancel(1) && running.cancel(2));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_go_to_their_requests_a_step_at_a_time_and_the_last_ends_each() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (mut running, _) = start_on(
            dispatched(vec![entry(1, &session, now), entry(2, &session, now)], now),
            "w".into(),
        );
        assert!(
            running
                .step(step(&[(1, "a ", false), (2, "x ", false)]))
                .is_empty()
        );
        assert!(
            running
                .step(step(&[(1, "b", true), (2, "y ", false)]))
                .is_empty()
        );
        assert!(
            running
                .step(step(&[(1, "late", false), (2, "z", true)]))
                .is_empty()
        );
        assert_eq!(
            received(&mut replies),
            [
                (10, Ok(vec!["a ".into()])),
                (20, Ok(vec!["x ".into()])),
                (10, Ok(vec!["b".into()])),
                (20, Ok(vec!["y ".into()])),
                (20, Ok(vec!["z".into()])),
            ]
        );
        // Both ended with their last token: the batch's end fails nothing.
        running.done(Instant::now());
        assert!(received(&mut replies).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_token_says_which_batch_served_the_request() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let queued = Instant::now();
        tokio::time::advance(Duration::from_millis(25)).await;
        let (mut running, _) = start_on(
            dispatched(vec![entry(1, &session, queued)], Instant::now()),
            "worker-9".into(),
        );
        running.step(step(&[(1, "only", true)]));
        let tagged = replies.try_recv().unwrap();
        let token = tagged.message.unwrap().pop().unwrap();
        let info = token.batch.unwrap();
        assert_eq!(
            (info.batch_id, info.batch_size, info.worker_id.as_str()),
            (7, 1, "worker-9")
        );
        assert_eq!(
            info.queue_time,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 25_000_000
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_on_a_worker_that_sends_every_token_skips_those_its_client_has() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut resumed = entry(1, &session, now);
        resumed.item.delivered = 2;
        let (mut running, batch) =
            RunningBatch::start(dispatched(vec![resumed], now), "w".into(), false, false);
        assert_eq!(batch.items[0].delivered, 2);
        running.step(step(&[(1, "a ", false)]));
        running.step(step(&[(1, "b ", false)]));
        assert!(received(&mut replies).is_empty(), "the client has these");
        running.step(step(&[(1, "c", true)]));
        assert_eq!(received(&mut replies), [(10, Ok(vec!["c".into()]))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_whose_text_ends_before_what_the_client_has_fails() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut resumed = entry(1, &session, now);
        resumed.item.delivered = 3;
        let (mut running, _) =
            RunningBatch::start(dispatched(vec![resumed], now), "w".into(), false, false);
        running.step(step(&[(1, "a ", false)]));
        running.step(step(&[(1, "b", true)]));
        assert_eq!(received(&mut replies), [(10, Err(Code::Internal))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_on_a_worker_that_resumes_gets_only_what_its_client_lacks() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut resumed = entry(1, &session, now);
        resumed.item.delivered = 2;
        let (mut running, batch) = start_on(dispatched(vec![resumed], now), "w".into());
        assert_eq!(batch.items[0].delivered, 2, "the worker is told");
        running.step(step(&[(1, "c", true)]));
        assert_eq!(received(&mut replies), [(10, Ok(vec!["c".into()]))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_given_nothing_past_what_its_client_has_fails_as_a_different_text() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut resumed = entry(1, &session, now);
        resumed.item.delivered = 40;
        let (running, _) = start_on(
            dispatched(vec![resumed, entry(2, &session, now)], now),
            "w".into(),
        );
        running.done(now);
        let mut ended = received(&mut replies);
        ended.sort_by_key(|(id, _)| *id);
        assert_eq!(
            ended,
            [(10, Err(Code::Internal)), (20, Err(Code::Internal))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_tells_its_client_the_wait_before_its_first_batch() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let queued = Instant::now();
        tokio::time::advance(Duration::from_millis(30)).await;
        let (mut running, _) = start_on(
            dispatched(vec![entry(1, &session, queued)], Instant::now()),
            "lost".into(),
        );
        running.step(step(&[(1, "a ", false)]));
        tokio::time::advance(Duration::from_secs(2)).await;
        let again = running.orphan(Instant::now());
        tokio::time::advance(Duration::from_millis(70)).await;
        let (mut running, _) = start_on(dispatched(again, Instant::now()), "w".into());
        running.step(step(&[(1, "b", true)]));
        let tokens: Vec<SubmitResponse> = std::iter::from_fn(|| replies.try_recv().ok())
            .flat_map(|tagged| tagged.message.unwrap())
            .collect();
        assert_eq!(tokens.len(), 2);
        let info = tokens[1].batch.as_ref().unwrap();
        assert_eq!(info.worker_id, "w");
        assert_eq!(
            info.queue_time,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 30_000_000
            }),
            "its first wait, not the time since it was first queued"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_client_left_gets_nothing_and_is_not_run_again() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let leaving = entry(1, &session, now);
        let departure = leaving.item.reply.departure();
        let (mut running, _) = start_on(
            dispatched(vec![leaving, entry(2, &session, now)], now),
            "w".into(),
        );
        departure.leave();
        assert_eq!(
            running.step(step(&[(1, "a ", false), (2, "x ", false)])),
            [1],
            "stopped at the worker within the step"
        );
        assert_eq!(received(&mut replies), [(20, Ok(vec!["x ".into()]))]);
        let again = running.orphan(Instant::now());
        assert_eq!(again.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_that_its_clients_deadline_bounds_names_the_deadline() {
        let (session, _replies) = mpsc::unbounded_channel();
        let start_at = Instant::now();
        let mut hurried = entry(1, &session, start_at);
        hurried.item.deadline = Some(ClientDeadline::starting(
            start_at,
            TTL + Duration::from_secs(1),
        ));
        let (running, _) = start_on(dispatched(vec![hurried], start_at), "w".into());
        tokio::time::advance(Duration::from_secs(3)).await;
        let again = running.orphan(Instant::now());
        assert_eq!(again[0].expires, start_at + TTL + Duration::from_secs(1));
        assert_eq!(
            again[0].item.limit,
            Limit::ClientDeadline(TTL + Duration::from_secs(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_request_gets_nothing_more() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (mut running, _) = start_on(
            dispatched(vec![entry(1, &session, now), entry(2, &session, now)], now),
            "w".into(),
        );
        assert!(running.cancel(1));
        assert!(!running.cancel(1), "once");
        assert!(!running.cancel(99), "not in the batch");
        // Its reply was dropped without a last message: INTERNAL, which its
        // session (that withdrew it) drops.
        assert_eq!(received(&mut replies), [(10, Err(Code::Internal))]);
        running.step(step(&[(1, "a", true), (2, "b", true)]));
        assert_eq!(received(&mut replies), [(20, Ok(vec!["b".into()]))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_session_is_gone_is_cancelled_at_the_worker() {
        let (session, replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (mut running, _) = start_on(dispatched(vec![entry(1, &session, now)], now), "w".into());
        drop(replies);
        assert_eq!(running.step(step(&[(1, "a ", false)])), [1]);
        assert!(running.step(step(&[(1, "b", true)])).is_empty(), "gone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_ends_early_fails_its_open_requests_with_the_reason() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let start = Instant::now();
        let mut hurried = entry(1, &session, start);
        hurried.item.deadline = Some(ClientDeadline::starting(start, Duration::from_secs(1)));
        let (running, _) = start_on(
            dispatched(vec![hurried, entry(2, &session, start)], start),
            "w".into(),
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        running.done(Instant::now());
        let mut ended = received(&mut replies);
        ended.sort_by_key(|(id, _)| *id);
        assert_eq!(
            ended,
            [(10, Err(Code::DeadlineExceeded)), (20, Err(Code::Internal))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_workers_requests_run_again_with_what_their_clients_have() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let (gone_session, gone_replies) = mpsc::unbounded_channel();
        let start = Instant::now();
        let (mut running, _) = start_on(
            dispatched(
                vec![entry(1, &session, start), entry(2, &gone_session, start)],
                start,
            ),
            "lost".into(),
        );
        running.step(step(&[(1, "a ", false), (2, "x ", false)]));
        running.step(step(&[(1, "b ", false)]));
        drop(gone_replies);
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        let orphans = running.orphan(now);
        assert_eq!(orphans.len(), 1, "only requests whose clients are there");
        let orphan = &orphans[0];
        assert_eq!(orphan.id, 1);
        assert_eq!(orphan.item.delivered, 2);
        assert_eq!(orphan.expires, now + TTL, "a time to live of its own again");
        let orphaned = orphan.item.orphaned.as_ref().unwrap();
        assert_eq!((&*orphaned.worker_id, orphaned.since), ("lost", now));
        assert_eq!(received(&mut replies).len(), 2, "its tokens so far, no end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_never_waits_past_its_clients_deadline() {
        let (session, _replies) = mpsc::unbounded_channel();
        let start = Instant::now();
        let mut patient = entry(1, &session, start);
        // A deadline longer than the time to live: the time to live bounds
        // its wait, and is renewed when it is queued again, up to the
        // deadline.
        patient.item.deadline = Some(ClientDeadline::starting(
            start,
            TTL + Duration::from_secs(2),
        ));
        let (running, _) = start_on(dispatched(vec![patient], start), "w".into());
        tokio::time::advance(Duration::from_secs(5)).await;
        let orphans = running.orphan(Instant::now());
        assert_eq!(orphans[0].expires, start + TTL + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_loses_too_many_workers_fails_with_why() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut unlucky = entry(1, &session, now);
        unlucky.item.lost = MAX_LOST - 2;
        let (running, _) = start_on(dispatched(vec![unlucky], now), "w1".into());
        let mut again = running.orphan(now);
        assert_eq!(again.len(), 1, "run again");
        assert_eq!(again[0].item.lost, MAX_LOST - 1);
        let (running, _) = start_on(dispatched(again.split_off(0), now), "w2".into());
        assert!(running.orphan(now).is_empty(), "not again");
        let tagged = replies.try_recv().unwrap();
        let status = tagged.message.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("3 workers were lost"),
            "{status:?}"
        );
        assert!(status.message().contains("w2"), "{status:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_batcher_fails_the_running_requests() {
        let (session, mut replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let (running, _) = start_on(dispatched(vec![entry(1, &session, now)], now), "w".into());
        running.fail(Error::ShuttingDown);
        assert_eq!(received(&mut replies), [(10, Err(Code::Unavailable))]);
    }
}
