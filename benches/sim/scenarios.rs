//! The scenarios: each run is a fresh mesh on a fresh paused-clock runtime
//! (one thread: the paused clock needs it), driven by open-loop load.
//! Correctness must hold (every request ends whole and identical to the
//! rule's text, unless the row expects refusals); the figures are reported.

use crate::{
    load::{self, Arrivals, Busy, Run, Sample},
    mesh::{Fault, Mesh, Spec},
    plot,
    report::Summary,
    stats::{Latencies, fmt_count, fmt_ms},
};
use std::{fmt::Write as _, path::Path, time::Duration};

/// A batch's mean time at the shipped delays: uniform in 0.5–3 s.
const MEAN_BATCH_SECS: f64 = 1.75;

/// Requests per second the workers serve at most: workers × B ÷ mean batch
/// time.
fn ceiling(spec: &Spec) -> f64 {
    (spec.workers * spec.batch_size) as f64 / MEAN_BATCH_SECS
}

/// Runs the chosen scenarios, writes `results.md` and the plots into `out`;
/// false when a check failed.
pub fn run(out: &Path, quick: bool, only: impl Fn(u8) -> bool) -> bool {
    let mut md = String::from("# Simulation results\n\n");
    let _ = writeln!(
        md,
        "{} form; {} requests a row unless said. Simulated: time (tokio's paused clock) and the network (in-memory pipes). Real: every service's code.\n",
        if quick { "Short (CI)" } else { "Full" },
        if quick { "a few thousand" } else { "100,000" }
    );
    let mut ok = true;
    if only(1) {
        ok &= load_table(out, quick, &mut md);
    }
    if only(2) {
        ok &= concurrent_streams(quick, &mut md);
    }
    if only(3) {
        ok &= faults(out, quick, &mut md);
    }
    if only(4) {
        ok &= stale_reports(out, quick, &mut md);
    }
    std::fs::write(out.join("results.md"), &md).expect("target/sim is writable");
    println!("{md}");
    println!(
        "simulate: {}; results in {}",
        if ok {
            "every check held"
        } else {
            "A CHECK FAILED"
        },
        out.join("results.md").display()
    );
    ok
}

/// One run: a mesh of `spec` under `arrivals`, with `fault` at a share of
/// the arrival period.
fn simulate(
    spec: Spec,
    arrivals: Arrivals,
    tag: &str,
    fault: Option<(f64, Fault)>,
) -> (Run, Vec<Sample>, Summary) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let wall = std::time::Instant::now();
    let (run, busy, recovered) = runtime.block_on(async {
        let mesh = Mesh::start(spec.clone()).await;
        let busy = Busy::sample(&mesh);
        let run = load::run(&mesh, arrivals, tag, fault).await;
        (run, busy.stop(), mesh.recovered())
    });
    let wall = wall.elapsed();
    // Dropping the runtime ends every service of this mesh.
    drop(runtime);
    let summary = Summary::of(&run, &busy, spec.workers, wall, recovered);
    eprintln!(
        "sim {tag}: {} sent, {} completed in {:.1} s simulated, {:.1} s wall",
        summary.sent,
        summary.completed,
        summary.lasted.as_secs_f64(),
        wall.as_secs_f64()
    );
    (run, busy, summary)
}

/// Scenario 1: 1,000 workers, K batchers, Poisson arrivals at a share of the
/// ceiling.
fn load_table(out: &Path, quick: bool, md: &mut String) -> bool {
    let (ks, loads, count): (&[usize], &[f64], usize) = if quick {
        (&[2], &[0.9], 10_000)
    } else {
        (&[1, 2, 4, 8], &[0.5, 0.9, 1.1], 100_000)
    };
    let ceiling = ceiling(&Spec::shipped(1));
    let _ = writeln!(
        md,
        "## 1. Load: 1,000 workers, B = 4, default delays, Poisson arrivals\n\n\
         Ceiling: 1,000 × 4 ÷ 1.75 s = {} requests/s. Four gateways. Mean batch: requests ÷ batches, as clients saw them. Busy: the workers' mean busy share while requests arrive, past the first 3 s (the longest batch).\n\n\
         | batchers | load | requests/s | completed | refused | expired | failed | wrong | mean batch | queue wait p50 / p99 | first token p50 / p99 | busy | simulated | wall clock |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        fmt_count(ceiling)
    );
    let mut ok = true;
    let mut curves = Vec::new();
    for &k in ks {
        let mut curve = Vec::new();
        for &load in loads {
            let rate = ceiling * load;
            let (_, _, s) = simulate(
                Spec::shipped(k),
                Arrivals {
                    rate,
                    count,
                    seed: 7,
                },
                &format!("load k{k} {load}"),
                None,
            );
            let _ = writeln!(
                md,
                "| {k} | {:.0} % | {} | {} | {} | {} | {} |",
                load * 100.0,
                fmt_count(rate),
                s.outcome_cells(),
                s.latency_cells(),
                s.busy_cell(),
                s.time_cells()
            );
            curve.push((load * 100.0, s.first.ms(0.99)));
            if load < 1.0 && !s.all_whole() {
                eprintln!(
                    "CHECK: at {load} of the ceiling with {k} batchers, not every request ended whole"
                );
                ok = false;
            }
            if !quick && (load - 0.9).abs() < 1e-9 && (s.busy.is_nan() || s.busy < 0.85) {
                eprintln!(
                    "CHECK: at 90 % with {k} batchers the workers were busy {:.3} of the time (< 0.85)",
                    s.busy
                );
                ok = false;
            }
        }
        curves.push((format!("{k} batcher(s)"), curve));
    }
    md.push('\n');
    plot::linear_lines(
        &out.join("load.svg"),
        "Time to first token p99 against load (1,000 workers)",
        ("load, % of the ceiling", "ms"),
        &named(&curves),
    )
    .expect("the plot");
    ok
}

/// Scenario 2: 100,000 streams open at once, every one generating (B = 100,
/// so that all fit on the workers at once).
fn concurrent_streams(quick: bool, md: &mut String) -> bool {
    let count = if quick { 20_000 } else { 100_000 };
    let mut spec = Spec::shipped(4);
    spec.batch_size = 100;
    spec.max_requests = count;
    spec.time_to_live = Duration::from_secs(60);
    let (run, _, s) = simulate(
        spec,
        Arrivals {
            rate: count as f64 * 5.0, // all within 200 ms: before any ends
            count,
            seed: 11,
        },
        "streams",
        None,
    );
    // The most streams open at one time, from when each was sent and ended.
    let mut edges: Vec<(Duration, i64)> = run
        .seen
        .iter()
        .flat_map(|seen| {
            let end = seen.sent + seen.whole.unwrap_or_default();
            [(seen.sent, 1), (end, -1)]
        })
        .collect();
    edges.sort();
    let peak = edges
        .iter()
        .scan(0i64, |open, (_, step)| {
            *open += step;
            Some(*open)
        })
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        md,
        "## 2. {} concurrent streams\n\n\
         1,000 workers, 4 batchers, 4 gateways, B = 100 (every stream generating at once), all sent within 200 ms (a batch takes at least 500 ms).\n\n\
         | streams | open at once (peak) | completed | refused | expired | failed | wrong | mean batch | queue wait p50 / p99 | first token p50 / p99 | simulated | wall clock | peak memory |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} |\n",
        fmt_count(count as f64),
        fmt_count(count as f64),
        fmt_count(peak as f64),
        s.outcome_cells(),
        s.latency_cells(),
        s.time_cells(),
        peak_memory()
    );
    if !s.all_whole() {
        eprintln!("CHECK: not every one of the concurrent streams ended whole");
        return false;
    }
    true
}

/// The process's peak resident memory so far.
fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("–".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        })
}

/// Scenario 3: faults under load at 90 %: one batcher of four killed, and a
/// tenth of the workers killed at once.
fn faults(out: &Path, quick: bool, md: &mut String) -> bool {
    let count = if quick { 10_000 } else { 100_000 };
    let spec = Spec::shipped(4);
    let rate = ceiling(&spec) * 0.9;
    let _ = writeln!(
        md,
        "## 3. Faults under load (90 %, 4 batchers, 1,000 workers)\n\n\
         The fault comes at 40 % of the arrival period. Moved: requests the gateways moved from the lost batcher; run again: requests the batchers ran again after their worker was lost (each resumes where its client is). p99 per second of arrival: before the fault, the highest after it, and for how long after the fault it stays above 1.5 × the p99 before.\n\n\
         | fault | completed | refused | expired | failed | wrong | moved / run again | first token p99: before, highest after, above 1.5 × for | whole response p99: before, highest after, above 1.5 × for | simulated | wall clock |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut ok = true;
    let mut curves = Vec::new();
    for (name, fault) in [
        ("one batcher of four killed", Fault::Batcher(0)),
        (
            "100 workers of 1,000 killed at once",
            Fault::Workers(spec.workers / 10),
        ),
    ] {
        let (run, _, s) = simulate(
            spec.clone(),
            Arrivals {
                rate,
                count,
                seed: 13,
            },
            &format!("fault {name}"),
            Some((0.4, fault)),
        );
        let fault_at = run.arriving.mul_f64(0.4);
        let first = Tail::of(&run, fault_at, |seen| seen.first);
        let whole = Tail::of(&run, fault_at, |seen| seen.whole);
        let _ = writeln!(
            md,
            "| {name} | {} | {} / {} | {} | {} | {} |",
            s.outcome_cells(),
            s.moved,
            s.rerun,
            first.cell(),
            whole.cell(),
            s.time_cells()
        );
        if !s.all_whole() {
            eprintln!("CHECK: {name}: not every request ended whole and identical");
            ok = false;
        }
        curves.push((format!("{name}: first token"), first.seconds));
    }
    md.push('\n');
    plot::linear_lines(
        &out.join("faults.svg"),
        "First token p99 per second of arrival; the fault at 40 %",
        ("seconds", "ms"),
        &named(&curves),
    )
    .expect("the plot");
    ok
}

/// How a latency's tail moved with a fault.
struct Tail {
    /// p99 of the requests sent before the fault.
    before: f64,
    /// The highest p99 of a second of arrivals from the fault on.
    highest: f64,
    /// How long after the fault the last second above 1.5 × `before` ends.
    above_for: f64,
    /// p99 of the requests sent in each second: (second, ms).
    seconds: Vec<(f64, f64)>,
}

impl Tail {
    fn of(
        run: &Run,
        fault_at: Duration,
        latency: impl Fn(&load::Seen) -> Option<Duration>,
    ) -> Tail {
        let count = run.arriving.as_secs() as usize + 1;
        let mut bins = vec![Vec::new(); count];
        let mut before = Vec::new();
        for seen in &run.seen {
            if let Some(latency) = latency(seen) {
                bins[(seen.sent.as_secs() as usize).min(count - 1)].push(latency);
                if seen.sent < fault_at {
                    before.push(latency);
                }
            }
        }
        let seconds: Vec<(f64, f64)> = bins
            .into_iter()
            .enumerate()
            .filter(|(_, bin)| !bin.is_empty())
            .map(|(second, bin)| (second as f64, Latencies::new(bin).ms(0.99)))
            .collect();
        let before = Latencies::new(before).ms(0.99);
        let fault = fault_at.as_secs_f64();
        let after = || {
            seconds
                .iter()
                .filter(|(second, _)| *second >= fault.floor())
        };
        Tail {
            before,
            highest: after().map(|(_, p99)| *p99).fold(0.0, f64::max),
            above_for: after()
                .filter(|(_, p99)| *p99 > 1.5 * before)
                .map(|(second, _)| second + 1.0 - fault)
                .fold(0.0, f64::max),
            seconds,
        }
    }

    fn cell(&self) -> String {
        format!(
            "{}, {}, {:.0} s",
            fmt_ms(self.before),
            fmt_ms(self.highest),
            self.above_for
        )
    }
}

/// Scenario 4: how stale the batchers' load reports may grow before the
/// gateways herd onto one batcher.
fn stale_reports(out: &Path, quick: bool, md: &mut String) -> bool {
    let (intervals, count): (&[u64], usize) = if quick {
        (&[5, 1000], 5_000)
    } else {
        (&[1, 5, 50, 250, 1000, 5000], 30_000)
    };
    let _ = writeln!(
        md,
        "## 4. How stale the load reports may grow\n\n\
         4 gateways, 4 batchers, 1,000 workers, 90 % load, {} requests a row; a batcher reports its queue at most every `--load-interval-ms` (shipped: 5). Busiest batcher: its share of all busy worker time (an even spread is 0.25).\n\n\
         | report interval | completed | refused | expired | failed | wrong | mean batch | queue wait p50 / p99 | first token p50 / p99 | busy | busiest batcher | simulated | wall clock |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|",
        fmt_count(count as f64)
    );
    let mut ok = true;
    let mut batch_curve = Vec::new();
    let mut wait_curve = Vec::new();
    for &ms in intervals {
        let mut spec = Spec::shipped(4);
        spec.load_every = Duration::from_millis(ms);
        let rate = ceiling(&spec) * 0.9;
        let (_, _, s) = simulate(
            spec,
            Arrivals {
                rate,
                count,
                seed: 17,
            },
            &format!("stale {ms}"),
            None,
        );
        let _ = writeln!(
            md,
            "| {ms} ms | {} | {} | {} | {:.3} | {} |",
            s.outcome_cells(),
            s.latency_cells(),
            s.busy_cell(),
            s.busiest,
            s.time_cells()
        );
        batch_curve.push((ms as f64, s.mean_batch * 100.0));
        wait_curve.push((ms as f64, s.queue.ms(0.99)));
        if !s.all_whole() {
            eprintln!("CHECK: with load reports every {ms} ms, not every request ended whole");
            ok = false;
        }
    }
    md.push('\n');
    plot::lines(
        &out.join("stale-reports.svg"),
        "Stale load reports: queue wait p99 and mean batch size (× 100)",
        ("report interval, ms", "ms; requests × 100"),
        &[
            ("queue wait p99", wait_curve),
            ("mean batch × 100", batch_curve),
        ],
    )
    .expect("the plot");
    ok
}

/// Curves with owned names, as the plot takes them.
fn named(curves: &[(String, Vec<(f64, f64)>)]) -> Vec<(&str, Vec<(f64, f64)>)> {
    curves
        .iter()
        .map(|(name, points)| (name.as_str(), points.clone()))
        .collect()
}
