//! The scenarios, their targets, and the report they write.

use crate::{
    ghz,
    load::Load,
    machine, plot,
    services::{Memory, Mesh, MeshSetup, Service, reference},
    stats::{Latencies, fmt_count, fmt_ms},
};
use std::{fmt::Write as _, path::PathBuf, time::Duration};

mod modes;

/// Batch size of the zero-delay throughput scenarios (1 and 5).
const THROUGHPUT_BATCH: usize = 16;
/// The concurrency scenario 1 sweeps by default, each system's peak taken
/// over it: the mesh, whose requests wait in batches, peaks further up than
/// the reference. At 1,024 both fell (the load generator's one thread costs
/// more there).
pub const EFFICIENCY_CLIENTS: [usize; 6] = [1, 4, 16, 64, 256, 512];
/// Clients per HTTP/2 connection, for every scenario.
const PER_CONNECTION: usize = 16;
/// Concurrency of the workers sweep and of ghz.
const SWEEP_CLIENTS: usize = 64;

/// One target: what was measured against what it must reach.
struct Target {
    scenario: String,
    figure: String,
    target: &'static str,
    holds: bool,
}

pub struct Bench {
    out: PathBuf,
    quick: bool,
    ghz: PathBuf,
    streams: usize,
    /// Scenario 1's concurrency.
    clients: Vec<usize>,
    report: String,
    targets: Vec<Target>,
    /// Requests that failed, over every run: the bench exits non-zero when
    /// there are any (speed is reported, never asserted).
    failed: u64,
}

impl Bench {
    pub fn new(
        out: PathBuf,
        quick: bool,
        ghz: PathBuf,
        streams: usize,
        clients: Vec<usize>,
    ) -> Bench {
        Bench {
            out,
            quick,
            ghz,
            streams,
            clients,
            report: String::new(),
            targets: Vec::new(),
            failed: 0,
        }
    }

    /// Runs the chosen scenarios and writes the report; false when any
    /// request failed.
    pub async fn run(mut self, only: impl Fn(u8) -> bool) -> bool {
        eprintln!("Horoscoper bench: results in {}", self.out.display());
        if only(1) {
            self.efficiency().await;
        }
        if only(2) {
            self.light_load().await;
        }
        if only(3) {
            self.batching().await;
        }
        if only(4) {
            self.many_streams().await;
        }
        if only(5) {
            self.workers().await;
        }
        if only(6) {
            self.batchers().await;
        }
        if only(7) {
            self.modes().await;
        }
        let mut page = String::from("# Horoscoper bench\n\n");
        page.push_str(&machine::describe());
        if self.quick {
            page.push_str("\n**Quick run (`--quick`): short windows, figures not to quote.**\n");
        }
        page.push_str("\n| scenario | measured | target | holds |\n|---|---|---|---|\n");
        for t in &self.targets {
            let holds = if t.holds { "yes" } else { "**no**" };
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} |",
                t.scenario, t.figure, t.target, holds
            );
        }
        page.push_str(&self.report);
        let path = self.out.join("results.md");
        std::fs::write(&path, &page).expect("target/bench is writable");
        println!("{page}");
        eprintln!("wrote {} and the plots beside it", path.display());
        if self.failed > 0 {
            eprintln!(
                "bench: {} requests failed, see the tables above",
                self.failed
            );
        } else {
            eprintln!("bench: every request ended whole");
        }
        self.failed == 0
    }

    fn logs(&self, scenario: &str) -> PathBuf {
        self.out.join("logs").join(scenario)
    }

    /// A load of `clients` over the warm-up and window given in seconds
    /// (a quarter of each with `--quick`).
    fn load(&self, label: String, clients: usize, warmup: f64, measure: f64) -> Load {
        let scale = if self.quick { 0.25 } else { 1.0 };
        Load {
            label,
            clients,
            per_connection: PER_CONNECTION,
            warmup: Duration::from_secs_f64(warmup * scale),
            measure: Duration::from_secs_f64(measure * scale),
            cpu_of: Vec::new(),
            rate: None,
        }
    }

    fn target(
        &mut self,
        scenario: impl Into<String>,
        figure: String,
        target: &'static str,
        holds: bool,
    ) {
        self.targets.push(Target {
            scenario: scenario.into(),
            figure,
            target,
            holds,
        });
    }

    /// Draws `file` in the output folder and shows it in the report.
    fn plot(&mut self, file: &str, draw: impl FnOnce(&std::path::Path) -> plot::Result) {
        match draw(&self.out.join(file)) {
            Ok(()) => {
                let _ = writeln!(self.report, "\n![{file}]({file})");
            }
            Err(error) => eprintln!("cannot draw {file}: {error}"),
        }
    }

    /// Histograms of time to first token and of the whole response.
    fn latency_plot(&mut self, file: &str, title: &str, ttft: &Latencies, whole: &Latencies) {
        self.plot(file, |path| {
            plot::histograms(
                path,
                title,
                &[
                    ("first token", ttft.histogram(60)),
                    ("whole response", whole.histogram(60)),
                ],
            )
        });
    }

    /// Scenario 1: tokens per second through gateway → batcher → 2 workers
    /// against the single-hop reference, over a range of concurrency.
    async fn efficiency(&mut self) {
        eprintln!("1. mesh efficiency at zero delay");
        let logs = self.logs("1-efficiency");
        let (reference_addr, reference_server) = reference(&logs).await;
        let setup = MeshSetup::zero_delay(2, THROUGHPUT_BATCH);
        let mesh = Mesh::start(&setup, &logs).await;
        let mut rows = String::new();
        let (mut single, mut through) = (Vec::new(), Vec::new());
        for clients in self.clients.clone() {
            let mut load = self.load(format!("reference, {clients} clients"), clients, 1.0, 4.0);
            load.cpu_of = vec![reference_server.pid()];
            let alone = load.run(reference_addr, &mut |_| {}).await;
            self.failed += alone.error_count();
            let mut load = self.load(format!("mesh, {clients} clients"), clients, 1.0, 4.0);
            load.cpu_of = mesh.services.iter().map(Service::pid).collect();
            let meshed = load.run(mesh.addr, &mut |_| {}).await;
            self.failed += meshed.error_count();
            let ratio = meshed.tokens_per_second() / alone.tokens_per_second();
            let (cpu_alone, cpu_meshed) = (alone.cpu_per_request(), meshed.cpu_per_request());
            let (sum_alone, sum_meshed) = (
                cpu_alone.iter().sum::<f64>(),
                cpu_meshed.iter().sum::<f64>(),
            );
            let _ = writeln!(
                rows,
                "| {clients} | {} | {} | {ratio:.2} | {sum_alone:.0} ({}) | {sum_meshed:.0} ({}) | {:.2} | {} | {} | {} |",
                fmt_count(alone.tokens_per_second()),
                fmt_count(meshed.tokens_per_second()),
                cpu_cells(&cpu_alone),
                cpu_cells(&cpu_meshed),
                sum_alone / sum_meshed,
                Latencies::new(alone.whole.clone()).cell(),
                Latencies::new(meshed.whole.clone()).cell(),
                alone.error_count() + meshed.error_count(),
            );
            single.push((clients as f64, alone.tokens_per_second()));
            through.push((clients as f64, meshed.tokens_per_second()));
        }
        let peak = |points: &[(f64, f64)]| points.iter().map(|p| p.1).fold(0.0, f64::max);
        let ratio = peak(&through) / peak(&single);
        self.target(
            "1. mesh efficiency, zero delay",
            format!(
                "{ratio:.2} (peak {} ÷ {} tokens/s)",
                fmt_count(peak(&through)),
                fmt_count(peak(&single))
            ),
            "≥ 0.5",
            ratio >= 0.5,
        );
        let _ = write!(
            self.report,
            "\n## 1. Mesh efficiency at zero delay\n\nMesh: {}. Reference: one tonic \
             server streaming the same tokens. {PER_CONNECTION} clients per HTTP/2 \
             connection. Threads: one for the load generator, one for the reference, one \
             per core for the gateway, one for the batcher and for each worker. CPU per \
             request: the CPU time (user and kernel, all threads) each \
             process used in the window ÷ the requests completed in it, in µs, load generator \
             included; in parentheses the load generator, then the reference server, or the \
             gateway, the batcher and each worker. By CPU: reference CPU per request ÷ the \
             mesh's, a ratio that other load on the machine moves less than throughput. \
             Whole-response latency p50 / p99 / max.\n\n\
             | clients | reference tokens/s | mesh tokens/s | mesh ÷ reference | reference CPU µs per request | mesh CPU µs per request | by CPU | reference latency | mesh latency | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|\n{rows}\nPeak against peak: **{ratio:.2}**.\n",
            setup.describe()
        );
        let duration = if self.quick { "3s" } else { "10s" };
        let ghz = [
            ghz::run(&self.ghz, reference_addr, SWEEP_CLIENTS, duration).await,
            ghz::run(&self.ghz, mesh.addr, SWEEP_CLIENTS, duration).await,
        ];
        match ghz {
            [Some(alone), Some(meshed)] => {
                let _ = write!(
                    self.report,
                    "\nghz ({SWEEP_CLIENTS} concurrent calls over 4 connections, {duration}), a second \
                     opinion: reference {} calls/s (p50 {}, p99 {}), mesh {} calls/s (p50 {}, p99 {}): \
                     **{:.2}**. Calls not ended OK, all of them in flight when ghz stopped and cut by \
                     it: {} and {}.\n",
                    fmt_count(alone.rps),
                    fmt_ms(alone.p50_ms),
                    fmt_ms(alone.p99_ms),
                    fmt_count(meshed.rps),
                    fmt_ms(meshed.p50_ms),
                    fmt_ms(meshed.p99_ms),
                    meshed.rps / alone.rps,
                    alone.not_ok,
                    meshed.not_ok,
                );
            }
            _ => self
                .report
                .push_str("\nghz: not run (see the bench's output).\n"),
        }
        self.plot("throughput-concurrency.svg", |path| {
            plot::lines(
                path,
                "Tokens per second against concurrent clients (zero delay)",
                ("concurrent clients", "tokens per second"),
                &[
                    ("single-hop reference", single),
                    ("mesh, 2 workers", through),
                ],
            )
        });
    }

    /// Scenario 2: one client, zero delay, window 0: the plumbing's own latency.
    async fn light_load(&mut self) {
        eprintln!("2. latency at light load");
        let setup = MeshSetup::zero_delay(2, 4);
        let mesh = Mesh::start(&setup, &self.logs("2-light")).await;
        let outcome = self
            .load("mesh, 1 client".into(), 1, 2.0, 10.0)
            .run(mesh.addr, &mut |_| {})
            .await;
        self.failed += outcome.error_count();
        let whole = Latencies::new(outcome.whole.clone());
        let ttft = Latencies::new(outcome.ttft.clone());
        self.target(
            "2. light load, whole response",
            format!(
                "p50 {} · p99 {}",
                fmt_ms(whole.ms(0.5)),
                fmt_ms(whole.ms(0.99))
            ),
            "p99 ≤ 2 ms",
            whole.ms(0.99) <= 2.0 && outcome.error_count() == 0,
        );
        let _ = write!(
            self.report,
            "\n## 2. Latency at light load\n\nMesh: {}. One client, {} requests in the window, \
             {} errors.\n\n| | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n\
             | whole response | {} | {} | {} | {} | {} |\n| first token | {} | {} | {} | {} | {} |\n",
            setup.describe(),
            whole.len(),
            outcome.error_count(),
            fmt_ms(whole.ms(0.5)),
            fmt_ms(whole.ms(0.9)),
            fmt_ms(whole.ms(0.99)),
            fmt_ms(whole.ms(0.999)),
            fmt_ms(whole.max_ms()),
            fmt_ms(ttft.ms(0.5)),
            fmt_ms(ttft.ms(0.9)),
            fmt_ms(ttft.ms(0.99)),
            fmt_ms(ttft.ms(0.999)),
            fmt_ms(ttft.max_ms()),
        );
        self.latency_plot(
            "latency-light.svg",
            "Latency at light load: 1 client, zero delay",
            &ttft,
            &whole,
        );
    }

    /// Scenario 3: 8 closed-loop clients on 2 workers × batch 4, how close
    /// to the ceiling the batcher keeps the workers.
    async fn batching(&mut self) {
        eprintln!("3. batching efficiency");
        let mut rows = String::new();
        let mut histograms = Vec::new();
        for (delays, (min, max), window) in [
            ("every batch 1 s", (1000, 1000), 30.0),
            ("default, 0.5–3 s", (500, 3000), 90.0),
        ] {
            let setup = MeshSetup {
                workers: 2,
                batchers: 1,
                batch_size: 4,
                batch_window_ms: 250,
                min_delay_ms: min,
                max_delay_ms: max,
                batching: "static",
            };
            let mesh = Mesh::start(&setup, &self.logs("3-batching")).await;
            let outcome = self
                .load(format!("batching, {delays}"), 8, 4.0, window)
                .run(mesh.addr, &mut |_| {})
                .await;
            self.failed += outcome.error_count();
            let mean_batch_s = (min + max) as f64 / 2e3;
            let ceiling = 2.0 * 4.0 / mean_batch_s;
            let efficiency = outcome.client_rate / ceiling;
            let whole = Latencies::new(outcome.whole.clone());
            let _ = writeln!(
                rows,
                "| {delays} | {ceiling:.3} | {:.3} | {:.3} | **{efficiency:.3}** | {} | {} | {} |",
                outcome.client_rate,
                outcome.requests_per_second(),
                Latencies::new(outcome.ttft.clone()).cell(),
                whole.cell(),
                outcome.error_count(),
            );
            if min == max {
                self.target(
                    "3. batching efficiency, 1 s batches",
                    format!("{efficiency:.3}"),
                    "≥ 0.97",
                    efficiency >= 0.97 && outcome.error_count() == 0,
                );
            } else {
                self.target(
                    "3. batching efficiency, default delays",
                    format!("{efficiency:.3}"),
                    "(reported)",
                    outcome.error_count() == 0,
                );
            }
            histograms.push((delays, whole.histogram(60)));
        }
        let _ = write!(
            self.report,
            "\n## 3. Batching efficiency\n\n2 workers, --batch-size 4, --batch-window-ms 250, \
             8 closed-loop clients. Ceiling: workers × batch size ÷ mean batch time. Completed \
             requests per second summed over clients, each client's rate taken between its \
             first and last completion in the window (the window's count ÷ its length beside \
             it). Latency p50 / p99 / max.\n\n\
             | delays | ceiling req/s | completed req/s | window count ÷ length | efficiency | first token | whole response | errors |\n\
             |---|---|---|---|---|---|---|---|\n{rows}\n\
             With default delays each batch's length is drawn at random (workers seeded 1 and 2), \
             so the figure carries the draw's noise: the mean of 0.5–3 s over the window's \
             batches is not exactly 1.75 s.\n"
        );
        self.plot("latency-batching.svg", |path| {
            plot::histograms(
                path,
                "Whole-response time, 8 clients on 2 workers × batch 4",
                &histograms,
            )
        });
    }

    /// Scenario 4: 10,000 streams open at once at the default delays, no
    /// errors, and the memory each costs the services.
    async fn many_streams(&mut self) {
        eprintln!("4. many streams");
        let clients = self.streams;
        let setup = MeshSetup {
            workers: 4,
            batchers: 1,
            batch_size: clients.div_ceil(4),
            batch_window_ms: 250,
            min_delay_ms: 500,
            max_delay_ms: 3000,
            batching: "static",
        };
        let mesh = Mesh::start(&setup, &self.logs("4-many")).await;
        let idle: Vec<Memory> = mesh.services.iter().map(|s| s.memory()).collect();
        let mut peak = (Memory::default(), 0usize, Vec::new());
        let mut load = self.load(format!("mesh, {clients} clients"), clients, 10.0, 20.0);
        load.per_connection = 100;
        let outcome = load
            .run(mesh.addr, &mut |open| {
                let each: Vec<Memory> = mesh.services.iter().map(|s| s.memory()).collect();
                let total: Memory = each.iter().copied().sum();
                if total.pss > peak.0.pss {
                    peak = (total, open, each);
                }
            })
            .await;
        self.failed += outcome.error_count();
        let (peak_memory, open_then, each) = peak;
        let idle_memory: Memory = idle.iter().copied().sum();
        let per_stream = |bytes: u64| bytes as f64 / clients as f64 / 1e3;
        let added = peak_memory.pss - idle_memory.pss.min(peak_memory.pss);
        self.target(
            format!("4. {} streams, default delays", fmt_count(clients as f64)),
            format!(
                "{} errors, {:.1} KB per stream ({:.1} KB above idle)",
                outcome.error_count(),
                per_stream(peak_memory.pss),
                per_stream(added)
            ),
            "no errors, ≤ 20 KB per stream",
            outcome.error_count() == 0
                && per_stream(peak_memory.pss) <= 20.0
                && outcome.peak_open >= clients,
        );
        let mut services = String::new();
        for ((service, idle), peak) in mesh.services.iter().zip(&idle).zip(&each) {
            let _ = writeln!(
                services,
                "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB |",
                service.name,
                idle.pss as f64 / 1e6,
                peak.pss as f64 / 1e6,
                idle.rss as f64 / 1e6,
                peak.rss as f64 / 1e6
            );
        }
        let whole = Latencies::new(outcome.whole.clone());
        let ttft = Latencies::new(outcome.ttft.clone());
        let _ = write!(
            self.report,
            "\n## 4. Many streams\n\nMesh: {}. {clients} closed-loop clients, 100 per HTTP/2 \
             connection. Most open at once: {}; {} completed in the {:.0} s window \
             ({:.0} requests/s, {} tokens/s); errors: {:?}. First token p50 / p99 / max: {}; \
             whole response: {}.\n\nMemory of the six processes together (the sum of their \
             proportional set sizes, PSS: a page several of them share, such as the code of the \
             binary the four workers run, counted once), idle and at the peak ({open_then} \
             streams open then): {:.1} MB → {:.1} MB, **{:.1} KB per stream** in all \
             ({:.1} KB above idle). Summing resident set sizes instead (VmRSS, every shared \
             page counted in each process): {:.1} MB → {:.1} MB, {:.1} KB per stream.\n\n\
             | service | PSS idle | PSS at the peak | RSS idle | RSS at the peak |\n\
             |---|---|---|---|---|\n{services}",
            setup.describe(),
            outcome.peak_open,
            outcome.completed,
            outcome.window.as_secs_f64(),
            outcome.requests_per_second(),
            fmt_count(outcome.tokens_per_second()),
            outcome.errors,
            ttft.cell(),
            whole.cell(),
            idle_memory.pss as f64 / 1e6,
            peak_memory.pss as f64 / 1e6,
            per_stream(peak_memory.pss),
            per_stream(added),
            idle_memory.rss as f64 / 1e6,
            peak_memory.rss as f64 / 1e6,
            per_stream(peak_memory.rss),
        );
        self.latency_plot(
            "latency-many.svg",
            &format!("{clients} streams at the default delays"),
            &ttft,
            &whole,
        );
    }

    /// Scenario 5: tokens per second against the number of workers, zero delay.
    async fn workers(&mut self) {
        eprintln!("5. throughput against workers");
        let mut rows = String::new();
        let mut points = Vec::new();
        let mut base = None;
        for workers in [1, 2, 4, 8] {
            let setup = MeshSetup::zero_delay(workers, THROUGHPUT_BATCH);
            let mesh = Mesh::start(&setup, &self.logs("5-workers")).await;
            let outcome = self
                .load(format!("mesh, {workers} workers"), SWEEP_CLIENTS, 1.0, 4.0)
                .run(mesh.addr, &mut |_| {})
                .await;
            self.failed += outcome.error_count();
            let rate = outcome.tokens_per_second();
            let base = *base.get_or_insert(rate);
            let _ = writeln!(
                rows,
                "| {workers} | {} | {:.2}× | {} | {} |",
                fmt_count(rate),
                rate / base,
                Latencies::new(outcome.whole.clone()).cell(),
                outcome.error_count()
            );
            points.push((workers as f64, rate));
        }
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = write!(
            self.report,
            "\n## 5. Throughput against workers\n\nZero delay, --batch-size {THROUGHPUT_BATCH}, \
             --batch-window-ms 0, {SWEEP_CLIENTS} clients; each worker its own process, all \
             on {cores} cores with the gateway, the batcher and the load generator.\n\n\
             | workers | tokens/s | against 1 worker | whole response p50 / p99 / max | errors |\n\
             |---|---|---|---|---|\n{rows}"
        );
        self.plot("throughput-workers.svg", |path| {
            plot::lines(
                path,
                "Tokens per second against workers (zero delay)",
                ("workers", "tokens per second"),
                &[("mesh", points)],
            )
        });
    }
    /// Scenario 6: one, two and three batchers sharing 2 workers: tokens
    /// per second at zero delay, and at 1 s and default batches how full
    /// the batches are, how close to the ceiling, and the time to first
    /// token.
    async fn batchers(&mut self) {
        eprintln!("6. batchers");
        let mut throughput = String::new();
        let mut filling = String::new();
        let mut fill_points: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
        for batchers in [1, 2, 3] {
            let mut setup = MeshSetup::zero_delay(2, THROUGHPUT_BATCH);
            setup.batchers = batchers;
            let mesh = Mesh::start(&setup, &self.logs("6-batchers")).await;
            let outcome = self
                .load(
                    format!("mesh, {batchers} batchers"),
                    SWEEP_CLIENTS,
                    1.0,
                    4.0,
                )
                .run(mesh.addr, &mut |_| {})
                .await;
            self.failed += outcome.error_count();
            let _ = writeln!(
                throughput,
                "| {batchers} | {} | {:.0} | {} | {} |",
                fmt_count(outcome.tokens_per_second()),
                outcome.requests_per_second(),
                Latencies::new(outcome.whole.clone()).cell(),
                outcome.error_count()
            );
        }
        for (delays, (min, max), window) in
            [("1 s", (1000, 1000), 30.0), ("0.5–3 s", (500, 3000), 40.0)]
        {
            let mut points = Vec::new();
            for batchers in [1, 2, 3] {
                let setup = MeshSetup {
                    workers: 2,
                    batchers,
                    batch_size: 4,
                    batch_window_ms: 250,
                    min_delay_ms: min,
                    max_delay_ms: max,
                    batching: "static",
                };
                let mesh = Mesh::start(&setup, &self.logs("6-batchers")).await;
                let outcome = self
                    .load(
                        format!("batching, {batchers} batchers, {delays}"),
                        8,
                        4.0,
                        window,
                    )
                    .run(mesh.addr, &mut |_| {})
                    .await;
                self.failed += outcome.error_count();
                let (sum, count) = batch_sizes(&mesh.batchers).await;
                let mean = if count > 0.0 { sum / count } else { 0.0 };
                let ceiling = 2.0 * 4.0 / ((min + max) as f64 / 2e3);
                let efficiency = outcome.client_rate / ceiling;
                let _ = writeln!(
                    filling,
                    "| {delays} | {batchers} | {mean:.2} | {:.3} | **{efficiency:.3}** | {} | {} |",
                    outcome.client_rate,
                    Latencies::new(outcome.ttft.clone()).cell(),
                    outcome.error_count()
                );
                if batchers == 2 && min == max {
                    self.target(
                        "6. batching efficiency, 1 s batches, 2 batchers",
                        format!("{efficiency:.3}"),
                        "≥ 0.97",
                        efficiency >= 0.97 && outcome.error_count() == 0,
                    );
                }
                points.push((batchers as f64, mean));
            }
            fill_points.push((delays, points));
        }
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = write!(
            self.report,
            "\n## 6. Several batchers\n\nK batchers, each using both workers (a worker offers itself \
             to one batcher at a time); the gateway sends each request to one of them by power of \
             two choices. All on {cores} cores.\n\nZero delay, --batch-size {THROUGHPUT_BATCH}, \
             --batch-window-ms 0, {SWEEP_CLIENTS} clients:\n\n\
             | batchers | tokens/s | requests/s | whole response p50 / p99 / max | errors |\n\
             |---|---|---|---|---|\n{throughput}\n\
             2 workers × --batch-size 4, --batch-window-ms 250, 8 closed-loop clients (scenario 3's \
             load); mean batch size from the batchers' own histograms, efficiency against the \
             ceiling workers × batch size ÷ mean batch time:\n\n\
             | batches | batchers | mean batch size | completed req/s | efficiency | first token p50 / p99 / max | errors |\n\
             |---|---|---|---|---|---|---|\n{filling}"
        );
        self.plot("batch-fill-batchers.svg", |path| {
            plot::lines(
                path,
                "Mean batch size against batchers (2 workers × batch 4, 8 clients)",
                ("batchers", "mean batch size"),
                &fill_points,
            )
        });
    }
}

/// CPU µs per request of each process, for a table cell: `12 + 34 + 5`.
fn cpu_cells(each: &[f64]) -> String {
    each.iter()
        .map(|us| format!("{us:.0}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The batch sizes the batchers at `addrs` dispatched: their sum and count.
async fn batch_sizes(addrs: &[std::net::SocketAddr]) -> (f64, f64) {
    let mut sum = 0.0;
    let mut count = 0.0;
    for addr in addrs {
        let Ok(body) = crate::services::metrics(*addr).await else {
            continue;
        };
        for line in body.lines().filter(|line| !line.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if name.starts_with("horoscoper_batch_size_sum") {
                sum += value;
            } else if name.starts_with("horoscoper_batch_size_count") {
                count += value;
            }
        }
    }
    (sum, count)
}
