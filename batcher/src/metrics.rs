//! The batcher's Prometheus metrics.

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

/// The label of `horoscoper_batches`: why the batch was dispatched.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    reason: Reason,
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The queue, the batches and the workers, as the batcher sees them.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub queue_length: Gauge,
    pub queue_wait: Histogram,
    pub batch_size: Histogram,
    batches: Family<BatchLabels, Counter>,
    pub workers: Gauge,
    pub workers_busy: Gauge,
    /// Requests run again because their worker was lost mid-batch.
    pub redispatched: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let batches = Family::<BatchLabels, Counter>::default();
        // Every reason is exported from the start, at zero.
        for reason in Reason::ALL {
            let _ = batches.get_or_create(&BatchLabels { reason });
        }
        Metrics {
            queue_length: Gauge::default(),
            queue_wait: Histogram::new(horoscoper_runtime::metrics::duration_buckets()),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            batches,
            workers: Gauge::default(),
            workers_busy: Gauge::default(),
            redispatched: Counter::default(),
        }
    }
}

impl Metrics {
    /// Counts a dispatched batch.
    pub fn batch(&self, reason: Reason) {
        self.batches.get_or_create(&BatchLabels { reason }).inc();
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
