//! Percentiles and histograms of latencies.

use std::time::Duration;

/// Latencies, sorted once.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Latencies {
        samples.sort_unstable();
        Latencies(samples)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (nearest rank), in milliseconds; NaN when empty.
    pub fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1].as_secs_f64() * 1e3
    }

    pub fn max_ms(&self) -> f64 {
        self.ms(1.0)
    }

    /// `p50 / p99 / max` as a table cell.
    pub fn cell(&self) -> String {
        format!(
            "{} / {} / {}",
            fmt_ms(self.ms(0.5)),
            fmt_ms(self.ms(0.99)),
            fmt_ms(self.max_ms())
        )
    }

    /// Counts in `bins` equal bins from 0 to the 99.9th percentile (the
    /// rest go to the last bin), as (bin start ms, bin end ms, count).
    pub fn histogram(&self, bins: usize) -> Vec<(f64, f64, usize)> {
        let top = self.ms(0.999).max(1e-3);
        let width = top / bins as f64;
        let mut counts = vec![0; bins];
        for sample in &self.0 {
            let ms = sample.as_secs_f64() * 1e3;
            counts[((ms / width) as usize).min(bins - 1)] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| (i as f64 * width, (i + 1) as f64 * width, count))
            .collect()
    }
}

/// Milliseconds with as many decimals as their size deserves.
pub fn fmt_ms(ms: f64) -> String {
    if ms.is_nan() {
        "–".into()
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

/// A count with thousands separated, as in "12 345".
pub fn fmt_count(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}
