//! Scenario 7: static against continuous batching on the same mesh (2
//! workers, B = 4, default delays), under open-loop Poisson arrivals at 50,
//! 70 and 90 % of static batching's ceiling; and continuous batching with
//! two batchers sharing the workers' slots, at 70 %.

use super::{Bench, Latencies, Mesh, MeshSetup, fmt_ms, plot};
use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

/// Offered load, as a share of static batching's ceiling.
const LOADS: [f64; 3] = [0.5, 0.7, 0.9];
/// Each series: its label, `--batching`, batchers, and its loads.
const SERIES: [(&str, &str, usize, &[f64]); 3] = [
    ("static", "static", 1, &LOADS),
    ("continuous", "continuous", 1, &LOADS),
    ("continuous, 2 batchers", "continuous", 2, &[0.7]),
];
const WORKERS: usize = 2;
const SLOTS: usize = 4;
const DELAYS_MS: (u64, u64) = (500, 3000);

impl Bench {
    pub(super) async fn modes(&mut self) {
        eprintln!("7. static against continuous batching, open loop");
        let mean_batch_s = (DELAYS_MS.0 + DELAYS_MS.1) as f64 / 2e3;
        let ceiling = (WORKERS * SLOTS) as f64 / mean_batch_s;
        let mut rows = String::new();
        let mut first_token: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
        // Each mode's time to first token p50 at 70 %, and completed rate.
        let mut at_70 = [(f64::NAN, 0.0); 2];
        for (m, (label, mode, batchers, loads)) in SERIES.into_iter().enumerate() {
            let mut points = Vec::new();
            for &load in loads {
                let setup = MeshSetup {
                    workers: WORKERS,
                    batchers,
                    batch_size: SLOTS,
                    batch_window_ms: 250,
                    min_delay_ms: DELAYS_MS.0,
                    max_delay_ms: DELAYS_MS.1,
                    batching: mode,
                };
                let mesh = Mesh::start(&setup, &self.logs("7-modes")).await;
                let offered = ceiling * load;
                let mut run = self.load(
                    format!("{label}, {:.0} % load", load * 100.0),
                    4,
                    10.0,
                    80.0,
                );
                run.rate = Some(offered);
                // Each batcher counts the workers running its own requests:
                // with two, a worker would count twice.
                let sampler = (batchers == 1).then(|| Busy::start(mesh.batchers[0]));
                let outcome = run.run(mesh.addr, &mut |_| {}).await;
                let busy = match sampler {
                    Some(sampler) => format!("{:.2}", sampler.stop().await / WORKERS as f64),
                    None => "–".to_string(),
                };
                self.failed += outcome.error_count();
                let ttft = Latencies::new(outcome.ttft.clone());
                let whole = Latencies::new(outcome.whole.clone());
                if load == 0.7 && m < 2 {
                    at_70[m] = (ttft.ms(0.5), outcome.client_rate);
                }
                points.push((load * 100.0, ttft.ms(0.5)));
                let _ = writeln!(
                    rows,
                    "| {label} | {:.0} % | {offered:.2} | {:.2} | {} / {} | {} / {} | {busy} | {} |",
                    load * 100.0,
                    outcome.client_rate,
                    fmt_ms(ttft.ms(0.5)),
                    fmt_ms(ttft.ms(0.99)),
                    fmt_ms(whole.ms(0.5)),
                    fmt_ms(whole.ms(0.99)),
                    outcome.error_count(),
                );
            }
            if loads.len() > 1 {
                first_token.push((label, points));
            }
        }
        let [(static_p50, static_rate), (continuous_p50, continuous_rate)] = at_70;
        self.target(
            "7. first token p50 at 70 % load, continuous ÷ static",
            format!(
                "{} ÷ {} = {:.3} (completed {continuous_rate:.2} and {static_rate:.2} req/s)",
                fmt_ms(continuous_p50),
                fmt_ms(static_p50),
                continuous_p50 / static_p50
            ),
            "≤ 0.25",
            continuous_p50 <= static_p50 / 4.0,
        );
        let _ = write!(
            self.report,
            "\n## 7. Static against continuous batching\n\n\
             {WORKERS} workers, --batch-size {SLOTS} (in continuous batching: {SLOTS} slots a worker), \
             --batch-window-ms 250, --min-delay-ms {} --max-delay-ms {}; open loop: requests \
             arrive as a Poisson process at a share of static batching's ceiling \
             ({WORKERS} × {SLOTS} ÷ {mean_batch_s} s = {ceiling:.2} requests/s), whatever the mesh \
             does. Busy: the share of time a worker has a batch (static) or at least one \
             request (continuous), sampled from the batcher's gauge (–: with two batchers, \
             each counts only the workers running its own requests). With two batchers, \
             the workers' slots are shared (--slots {SLOTS}).\n\n\
             | batching | load | offered req/s | completed req/s | first token p50 / p99 | whole response p50 / p99 | workers busy | errors |\n\
             |---|---|---|---|---|---|---|---|\n{rows}",
            DELAYS_MS.0, DELAYS_MS.1
        );
        self.plot("modes-first-token.svg", |path| {
            plot::linear_lines(
                path,
                "Time to first token p50 against offered load (2 workers × 4, open loop)",
                (
                    "load, % of static batching's ceiling",
                    "first token p50, ms",
                ),
                &first_token,
            )
        });
    }
}

/// Samples the batcher's `horoscoper_workers_busy` gauge every 100 ms
/// until stopped; the mean.
struct Busy {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl Busy {
    fn start(batcher: SocketAddr) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut sum, mut count) = (0.0, 0u32);
                while !stop.load(Relaxed) {
                    if let Some(busy) = gauge(batcher, "horoscoper_workers_busy").await {
                        sum += busy;
                        count += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sum / f64::from(count.max(1))
            }
        });
        Busy { stop, task }
    }

    async fn stop(self) -> f64 {
        self.stop.store(true, Relaxed);
        self.task.await.unwrap_or(f64::NAN)
    }
}

/// The sum of a gauge's series on a service's `/metrics`.
async fn gauge(addr: SocketAddr, name: &str) -> Option<f64> {
    let body = crate::services::metrics(addr).await.ok()?;
    let values: Vec<f64> = body
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
