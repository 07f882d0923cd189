//! The batcher's Prometheus metrics. Each carries the batcher's id in the
//! label `batcher`, so that several batchers (in one process, or scraped
//! into one Prometheus) show apart; [`Metrics::of`] gives one batcher's.

use crate::queue::Reason;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The label every batcher metric carries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatcherLabel {
    batcher: String,
}

/// The labels of `horoscoper_batches`: the batcher, and why the batch was
/// dispatched.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    batcher: String,
    reason: Reason,
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

type Histograms = Family<BatcherLabel, Histogram, fn() -> Histogram>;

/// Every batcher's metrics, as registered.
#[derive(Clone, Debug)]
pub struct Metrics {
    queue_length: Family<BatcherLabel, Gauge>,
    queue_wait: Histograms,
    batch_size: Histograms,
    batches: Family<BatchLabels, Counter>,
    workers: Family<BatcherLabel, Gauge>,
    workers_busy: Family<BatcherLabel, Gauge>,
    redispatched: Family<BatcherLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            queue_length: Family::default(),
            queue_wait: Family::new_with_constructor(|| {
                Histogram::new(horoscoper_runtime::metrics::duration_buckets())
            }),
            batch_size: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 11))
            }),
            batches: Family::default(),
            workers: Family::default(),
            workers_busy: Family::default(),
            redispatched: Family::default(),
        }
    }
}

/// One batcher's metrics: the queue, the batches and the workers, as it
/// sees them.
#[derive(Clone, Debug)]
pub struct Meters {
    pub queue_length: Gauge,
    pub queue_wait: Histogram,
    pub batch_size: Histogram,
    batches: [Counter; Reason::ALL.len()],
    pub workers: Gauge,
    pub workers_busy: Gauge,
    /// Requests run again because their worker was lost mid-batch.
    pub redispatched: Counter,
}

impl Meters {
    /// Counts a dispatched batch.
    pub fn batch(&self, reason: Reason) {
        let at = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is in ALL");
        self.batches[at].inc();
    }
}

impl Metrics {
    /// The metrics of the batcher `batcher`, every series exported from
    /// the start (at zero).
    pub fn of(&self, batcher: &str) -> Meters {
        let label = BatcherLabel {
            batcher: batcher.to_string(),
        };
        let batches = Reason::ALL.map(|reason| {
            self.batches
                .get_or_create(&BatchLabels {
                    batcher: batcher.to_string(),
                    reason,
                })
                .clone()
        });
        Meters {
            queue_length: self.queue_length.get_or_create(&label).clone(),
            queue_wait: self.queue_wait.get_or_create(&label).clone(),
            batch_size: self.batch_size.get_or_create(&label).clone(),
            batches,
            workers: self.workers.get_or_create(&label).clone(),
            workers_busy: self.workers_busy.get_or_create(&label).clone(),
            redispatched: self.redispatched.get_or_create(&label).clone(),
        }
    }

    /// Registers the metrics under their `horoscoper_` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "horoscoper_queue_length",
            "Requests waiting for a batch",
            self.queue_length.clone(),
        );
        registry.register(
            "horoscoper_queue_wait_seconds",
            "Time from enqueue to dispatch, per dispatched request",
            self.queue_wait.clone(),
        );
        registry.register(
            "horoscoper_batch_size",
            "Requests per dispatched batch",
            self.batch_size.clone(),
        );
        registry.register(
            "horoscoper_batches",
            "Batches dispatched, by reason",
            self.batches.clone(),
        );
        registry.register(
            "horoscoper_workers",
            "Workers connected to the batcher",
            self.workers.clone(),
        );
        registry.register(
            "horoscoper_workers_busy",
            "Workers running a batch",
            self.workers_busy.clone(),
        );
        registry.register(
            "horoscoper_redispatched",
            "Requests run again on another worker because theirs was lost mid-batch",
            self.redispatched.clone(),
        );
    }
}
