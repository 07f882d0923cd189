//! The gateway's Prometheus metrics, and the stream wrapper that records a
//! request's outcome, time to first token and duration.

use crate::response::ResponseStream;
use horoscoper_proto::v1::InferResponse;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use std::{
    pin::Pin,
    task::{Context, Poll},
};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Code, Status};

/// The label of `horoscoper_requests`: how the request ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    outcome: Outcome,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Invalid,
    Cancelled,
    TimedOut,
    Unavailable,
    Overloaded,
    Unauthenticated,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::Cancelled,
        Outcome::TimedOut,
        Outcome::Unavailable,
        Outcome::Overloaded,
        Outcome::Unauthenticated,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::Unavailable => "unavailable",
            Outcome::Overloaded => "overloaded",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a request that ended with `status`.
    pub fn of(status: &Status) -> Outcome {
        match status.code() {
            Code::InvalidArgument => Outcome::Invalid,
            Code::Cancelled => Outcome::Cancelled,
            Code::DeadlineExceeded => Outcome::TimedOut,
            Code::Unavailable => Outcome::Unavailable,
            Code::ResourceExhausted => Outcome::Overloaded,
            Code::Unauthenticated => Outcome::Unauthenticated,
            _ => Outcome::Error,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Requests by outcome, time to first token, whole-request duration.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    pub time_to_first_token: Histogram,
    pub request_duration: Histogram,
    /// Requests moved to another batcher after theirs was lost.
    pub moved: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // Every outcome is exported from the start, at zero.
        for outcome in Outcome::ALL {
            let _ = requests.get_or_create(&RequestLabels { outcome });
        }
        Metrics {
            requests,
            time_to_first_token: Histogram::new(horoscoper_runtime::metrics::duration_buckets()),
            request_duration: Histogram::new(horoscoper_runtime::metrics::duration_buckets()),
            moved: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn count(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels { outcome })
            .inc();
    }

    /// Registers the metrics under their `horoscoper_` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "horoscoper_requests",
            "Requests by outcome",
            self.requests.clone(),
        );
        registry.register(
            "horoscoper_time_to_first_token_seconds",
            "Time from a request's arrival to its first token",
            self.time_to_first_token.clone(),
        );
        registry.register(
            "horoscoper_request_duration_seconds",
            "Time from a request's arrival to its end, whatever the outcome",
            self.request_duration.clone(),
        );
        registry.register(
            "horoscoper_requests_moved",
            "Requests moved to another batcher mid-stream, after theirs was lost",
            self.moved.clone(),
        );
    }

    /// Wraps a request's stream so that its end is recorded: its outcome
    /// when it ends (cancelled when dropped first), its time to first token
    /// and its duration.
    pub fn meter(&self, stream: ResponseStream, started: Instant, span: tracing::Span) -> Metered {
        Metered {
            inner: stream,
            metrics: self.clone(),
            started,
            first_token: false,
            ended: false,
            span,
        }
    }

    /// Records a request that failed before it had a stream.
    pub fn failed(&self, status: &Status, started: Instant) {
        self.count(Outcome::of(status));
        self.request_duration
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A request's stream with its metrics; holds the request's span.
pub struct Metered {
    inner: ResponseStream,
    metrics: Metrics,
    started: Instant,
    first_token: bool,
    ended: bool,
    span: tracing::Span,
}

impl Metered {
    fn end(&mut self, outcome: Outcome) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.metrics.count(outcome);
        self.metrics
            .request_duration
            .observe(self.started.elapsed().as_secs_f64());
        self.span
            .in_scope(|| tracing::info!(outcome = outcome.as_str(), "request ended"));
    }
}

impl Stream for Metered {
    type Item = Result<InferResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(response)) => {
                if !self.first_token {
                    self.first_token = true;
                    let elapsed = self.started.elapsed().as_secs_f64();
                    self.metrics.time_to_first_token.observe(elapsed);
                }
                if response.last {
                    self.end(Outcome::Ok);
                }
            }
            Some(Err(status)) => self.end(Outcome::of(status)),
            None => self.end(Outcome::Error),
        }
        Poll::Ready(item)
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.end(Outcome::Cancelled);
    }
}
