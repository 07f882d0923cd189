//! The batcher's Prometheus metrics.

use crate::queue::Reason;
use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, &'static str)>;

/// The queue, the batches and the workers, as the batcher sees them.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub queue_length: Gauge,
    pub queue_wait: Histogram,
    pub batch_size: Histogram,
    batches: Family<Labels, Counter>,
    pub workers: Gauge,
    pub workers_busy: Gauge,
    /// Requests run again because their worker was lost mid-batch.
    pub redispatched: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let batches = Family::<Labels, Counter>::default();
        // Every reason is exported from the start, at zero.
        for reason in [Reason::Full, Reason::Window, Reason::StaleHead] {
            let _ = batches.get_or_create(&vec![("reason", reason.as_str())]);
        }
        Metrics {
            queue_length: Gauge::default(),
            queue_wait: Histogram::new(horoscoper_proto::metrics::duration_buckets()),
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
        self.batches
            .get_or_create(&vec![("reason", reason.as_str())])
            .inc();
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
