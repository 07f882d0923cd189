//! What a run's requests saw, summed up as a row of a table.

use crate::{
    load::{Run, Sample},
    stats::{Latencies, fmt_count, fmt_ms},
};
use std::time::Duration;
use tonic::Code;

/// One run, summed up.
pub struct Summary {
    pub sent: usize,
    pub completed: usize,
    /// RESOURCE_EXHAUSTED: refused at admission.
    pub refused: usize,
    /// DEADLINE_EXCEEDED: waited out the time to live.
    pub expired: usize,
    /// Any other status.
    pub failed: usize,
    /// Ended OK with a text other than the rule's.
    pub wrong: usize,
    /// Requests per batch, over batches (what clients saw).
    pub mean_batch: f64,
    pub queue: Latencies,
    pub first: Latencies,
    /// Mean share of the workers busy while requests arrived, past the
    /// first [`WARM_UP`]; NaN when they arrived within it.
    pub busy: f64,
    /// The busiest batcher's share of all busy worker time.
    pub busiest: f64,
    /// Simulated time from the first arrival to the last end.
    pub lasted: Duration,
    /// Wall-clock time the run took to simulate.
    pub wall: Duration,
    /// Requests the gateways moved from a lost batcher.
    pub moved: u64,
    /// Requests the batchers ran again after their worker was lost.
    pub rerun: u64,
}

/// The start of a run, left out of its busy share: the longest a batch
/// takes (3 s), while the workers fill up from idle.
pub const WARM_UP: Duration = Duration::from_secs(3);

impl Summary {
    /// `busy`: the samples taken over `workers` workers; `recovered`:
    /// requests moved, and run again.
    pub fn of(
        run: &Run,
        busy: &[Sample],
        workers: usize,
        wall: Duration,
        (moved, rerun): (u64, u64),
    ) -> Summary {
        let count = |code: Code| run.seen.iter().filter(|s| s.status == Some(code)).count();
        let ok: Vec<_> = run.seen.iter().filter(|s| s.status.is_none()).collect();
        // Each batch of n requests is seen n times, as 1/n each.
        let batches: f64 = ok
            .iter()
            .map(|s| 1.0 / f64::from(s.batch_size.max(1)))
            .sum();
        let arriving: Vec<_> = busy
            .iter()
            .filter(|s| s.0 >= WARM_UP && s.0 <= run.arriving)
            .collect();
        let workers_total = |sample: &Sample| sample.1.iter().sum::<i64>() as f64;
        let per_batcher = busy.first().map_or(0, |s| s.1.len());
        let mut by_batcher = vec![0.0; per_batcher];
        for sample in busy {
            for (total, busy) in by_batcher.iter_mut().zip(&sample.1) {
                *total += *busy as f64;
            }
        }
        let all: f64 = by_batcher.iter().sum();
        Summary {
            sent: run.seen.len(),
            completed: ok.len(),
            refused: count(Code::ResourceExhausted),
            expired: count(Code::DeadlineExceeded),
            failed: run
                .seen
                .iter()
                .filter(|s| {
                    s.status.is_some_and(|code| {
                        code != Code::ResourceExhausted && code != Code::DeadlineExceeded
                    })
                })
                .count(),
            wrong: ok.iter().filter(|s| !s.right).count(),
            mean_batch: ok.len() as f64 / batches.max(f64::MIN_POSITIVE),
            queue: Latencies::new(ok.iter().map(|s| s.queue).collect()),
            first: Latencies::new(run.seen.iter().filter_map(|s| s.first).collect()),
            busy: arriving.iter().map(|s| workers_total(s)).sum::<f64>()
                / arriving.len() as f64
                / workers as f64,
            busiest: by_batcher.iter().copied().fold(0.0, f64::max) / all.max(1.0),
            lasted: run.lasted,
            wall,
            moved,
            rerun,
        }
    }

    /// Every request ended whole with the rule's text.
    pub fn all_whole(&self) -> bool {
        self.completed == self.sent && self.wrong == 0
    }

    /// completed | refused | expired | failed | wrong
    pub fn outcome_cells(&self) -> String {
        format!(
            "{} | {} | {} | {} | {}",
            fmt_count(self.completed as f64),
            self.refused,
            self.expired,
            self.failed,
            self.wrong
        )
    }

    /// mean batch | queue p50 / p99 | first token p50 / p99
    pub fn latency_cells(&self) -> String {
        format!(
            "{:.2} | {} / {} | {} / {}",
            self.mean_batch,
            fmt_ms(self.queue.ms(0.5)),
            fmt_ms(self.queue.ms(0.99)),
            fmt_ms(self.first.ms(0.5)),
            fmt_ms(self.first.ms(0.99)),
        )
    }

    /// The busy share, or a dash when there is none.
    pub fn busy_cell(&self) -> String {
        if self.busy.is_nan() {
            "–".into()
        } else {
            format!("{:.3}", self.busy)
        }
    }

    /// simulated | wall clock
    pub fn time_cells(&self) -> String {
        format!(
            "{:.0} s | {:.1} s",
            self.lasted.as_secs_f64(),
            self.wall.as_secs_f64()
        )
    }
}
