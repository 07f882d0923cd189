//! How long each generation step of a batch takes.
//!
//! As in the original: per batch, a total drawn uniformly from
//! `[min, max]` is split into random positive per-step delays over the
//! longest text's word count. The steps are returned as offsets from the
//! batch's start, so the worker sleeps until absolute deadlines and timer
//! rounding does not add up over a hundred steps. A batch that resumes
//! requests whose clients have their first tokens takes only its remaining
//! steps, each as long as it would have been.

use rand::{Rng, RngCore};
use std::time::Duration;

/// The range a batch's total time is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayRange {
    pub min: Duration,
    pub max: Duration,
}

impl DelayRange {
    /// No delay at all: every step is due at once.
    pub const ZERO: DelayRange = DelayRange {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// When each of `steps` steps is due, as offsets from the batch's start:
    /// increasing, the last one equal to the drawn total. All zero when the
    /// total is zero.
    pub fn offsets(&self, steps: usize, rng: &mut impl RngCore) -> Vec<Duration> {
        let total = if self.max > self.min {
            rng.random_range(self.min..=self.max)
        } else {
            self.min
        };
        if total.is_zero() {
            return vec![Duration::ZERO; steps];
        }
        // Weights in [0.5, 1.5): every step positive, none more than three
        // times another, like a model's steady pace with jitter.
        let weights: Vec<f64> = (0..steps).map(|_| rng.random_range(0.5..1.5)).collect();
        let sum: f64 = weights.iter().sum();
        let mut elapsed = 0.0;
        let mut offsets: Vec<Duration> = weights
            .iter()
            .map(|weight| {
                elapsed += weight;
                total.mul_f64(elapsed / sum)
            })
            .collect();
        if let Some(last) = offsets.last_mut() {
            *last = total;
        }
        offsets
    }

    /// When each of the last `steps` of a batch of `whole` steps is due, as
    /// offsets from the start of the first of them: the steps before them
    /// (tokens every client has) take no time. The same as
    /// [`DelayRange::offsets`] when `steps` is `whole`.
    pub fn remaining(&self, whole: usize, steps: usize, rng: &mut impl RngCore) -> Vec<Duration> {
        let offsets = self.offsets(whole.max(steps), rng);
        let skipped = offsets.len() - steps;
        let start = skipped
            .checked_sub(1)
            .map_or(Duration::ZERO, |before| offsets[before]);
        offsets[skipped..]
            .iter()
            .map(|offset| *offset - start)
            .collect()
    }

    /// How long each of the last `steps` of a request of `whole` steps
    /// takes, in continuous batching: the same draw as a static batch of
    /// that one request ([`DelayRange::remaining`]), as step lengths rather
    /// than offsets, so that a request alone takes in both modes the same
    /// time, step for step.
    pub fn pace(&self, whole: usize, steps: usize, rng: &mut impl RngCore) -> Vec<Duration> {
        let mut previous = Duration::ZERO;
        self.remaining(whole, steps, rng)
            .into_iter()
            .map(|offset| {
                let length = offset - previous;
                previous = offset;
                length
            })
            .collect()
    }
}

/// How long a step of continuous batching takes: the mean of the next step
/// lengths of the requests in it. One request alone keeps its own pace; a
/// step shared costs what a step costs on average, as a static batch's
/// total does not grow with its size.
pub fn shared_step(lengths: impl IntoIterator<Item = Duration>) -> Duration {
    let (sum, count) = lengths
        .into_iter()
        .fold((Duration::ZERO, 0u32), |(sum, count), length| {
            (sum + length, count + 1)
        });
    if count == 0 {
        Duration::ZERO
    } else {
        sum / count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn range(min_ms: u64, max_ms: u64) -> DelayRange {
        DelayRange {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn zero_range_gives_no_delay() {
        let offsets = DelayRange::ZERO.offsets(40, &mut StdRng::seed_from_u64(1));
        assert_eq!(offsets, vec![Duration::ZERO; 40]);
    }

    #[test]
    fn steps_are_positive_and_end_at_a_total_within_the_range() {
        let mut rng = StdRng::seed_from_u64(7);
        for steps in [1, 2, 25, 60] {
            for _ in 0..200 {
                let offsets = range(500, 3000).offsets(steps, &mut rng);
                assert_eq!(offsets.len(), steps);
                let total = *offsets.last().unwrap();
                assert!(
                    total >= Duration::from_millis(500) && total <= Duration::from_millis(3000)
                );
                let mut previous = Duration::ZERO;
                for offset in offsets {
                    assert!(offset > previous, "steps must be positive");
                    previous = offset;
                }
            }
        }
    }

    #[test]
    fn totals_cover_the_range() {
        let mut rng = StdRng::seed_from_u64(3);
        let totals: Vec<Duration> = (0..1000)
            .map(|_| *range(500, 3000).offsets(10, &mut rng).last().unwrap())
            .collect();
        let below = totals
            .iter()
            .filter(|t| **t < Duration::from_millis(1750))
            .count();
        assert!(
            (400..600).contains(&below),
            "{below} of 1000 below the middle"
        );
    }

    #[test]
    fn a_fixed_total_is_exact() {
        let offsets = range(1000, 1000).offsets(33, &mut StdRng::seed_from_u64(9));
        assert_eq!(offsets.last(), Some(&Duration::from_secs(1)));
    }

    #[test]
    fn the_remaining_steps_keep_their_own_lengths() {
        let whole = range(1000, 1000).offsets(10, &mut StdRng::seed_from_u64(5));
        let tail = range(1000, 1000).remaining(10, 3, &mut StdRng::seed_from_u64(5));
        assert_eq!(tail.len(), 3);
        assert_eq!(tail[0], whole[7] - whole[6]);
        assert_eq!(tail[2], whole[9] - whole[6]);
        assert!(tail[2] < Duration::from_millis(1000));
        let all = range(1000, 1000).remaining(10, 10, &mut StdRng::seed_from_u64(5));
        assert_eq!(all, whole);
        assert!(
            range(1000, 1000)
                .remaining(10, 0, &mut StdRng::seed_from_u64(5))
                .is_empty()
        );
    }

    #[test]
    fn a_pace_sums_to_the_static_draw_of_the_same_seed() {
        let whole = range(500, 3000).offsets(12, &mut StdRng::seed_from_u64(4));
        let pace = range(500, 3000).pace(12, 12, &mut StdRng::seed_from_u64(4));
        assert_eq!(pace.len(), 12);
        assert_eq!(pace.iter().sum::<Duration>(), whole[11]);
        assert_eq!(pace[3], whole[3] - whole[2]);
        let tail = range(500, 3000).pace(12, 2, &mut StdRng::seed_from_u64(4));
        assert_eq!(tail, pace[10..]);
    }

    #[test]
    fn a_shared_step_costs_the_mean_of_its_requests_steps() {
        let ms = Duration::from_millis;
        assert_eq!(shared_step([ms(30)]), ms(30), "alone: its own pace");
        assert_eq!(shared_step([ms(10), ms(20), ms(60)]), ms(30));
        assert_eq!(shared_step([]), Duration::ZERO);
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let draw = |seed| range(500, 3000).offsets(30, &mut StdRng::seed_from_u64(seed));
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
