//! The real binaries, started as separate processes on loopback ports: the
//! gateway, the batcher and its workers (built by `cargo build --release`,
//! which `just bench` runs first), and the single-hop reference.

use crate::processes::{binary, free_port};
use std::{
    fs::File,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How the mesh is set up for a scenario.
#[derive(Clone, Debug)]
pub struct MeshSetup {
    pub workers: usize,
    /// Batchers, each using every worker.
    pub batchers: usize,
    pub batch_size: usize,
    pub batch_window_ms: u64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// `static` or `continuous` (`--batching`).
    pub batching: &'static str,
}

impl MeshSetup {
    /// Every step due at once, batches sealed as soon as a worker is free.
    pub fn zero_delay(workers: usize, batch_size: usize) -> MeshSetup {
        MeshSetup {
            workers,
            batchers: 1,
            batch_size,
            batch_window_ms: 0,
            min_delay_ms: 0,
            max_delay_ms: 0,
            batching: "static",
        }
    }

    /// The flags, as a reader of the table would type them.
    pub fn describe(&self) -> String {
        format!(
            "{} workers, {} batcher(s), --batching {} --batch-size {} --batch-window-ms {} --min-delay-ms {} --max-delay-ms {}",
            self.workers,
            self.batchers,
            self.batching,
            self.batch_size,
            self.batch_window_ms,
            self.min_delay_ms,
            self.max_delay_ms
        )
    }
}

/// A running service, stopped (SIGINT, then waited for) when dropped.
pub struct Service {
    pub name: String,
    child: Child,
}

impl Service {
    fn start(name: &str, program: &Path, args: &[String], logs: &Path) -> Service {
        let log = File::create(logs.join(format!("{name}.log"))).expect("the log folder exists");
        let mut command = match wrapper(name) {
            Some(wrapper) => {
                let mut words = wrapper.split_whitespace();
                let mut command = Command::new(words.next().expect("a wrapper command"));
                command.args(words).arg(program);
                command
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Service {
            name: name.to_owned(),
            child,
        }
    }

    /// Starts a service on a free loopback port, whose flags `args` makes
    /// from its address. A port found free can be taken before the service
    /// binds it (by a connection's own port): then it starts again on another.
    async fn listening(
        name: &str,
        program: &Path,
        logs: &Path,
        args: impl Fn(SocketAddr) -> Vec<String>,
    ) -> (Service, SocketAddr) {
        for _ in 0..5 {
            let addr = loopback(free_port());
            let mut service = Service::start(name, program, &args(addr), logs);
            if reachable(addr, &mut service).await {
                return (service, addr);
            }
        }
        panic!("{name} could not listen; see its log in {}", logs.display());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The memory it uses now, from /proc/PID/smaps_rollup.
    pub fn memory(&self) -> Memory {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid()))
            .unwrap_or_default();
        let field = |name: &str| {
            rollup
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory {
            pss: field("Pss:"),
            rss: field("Rss:"),
        }
    }
}

/// The CPU time process `pid` has used so far, all its threads, user and
/// kernel (`utime` + `stime` of /proc/PID/stat, in the kernel's fixed
/// 100 ticks a second); zero once it has gone.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is field 3, utime 14 and stime 15.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, fields)| {
            fields
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A process's memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Proportional set size: its resident pages, each page it shares with
    /// other processes (the code of a binary that several workers run)
    /// divided among them. Summed over processes, it is the memory they use
    /// together.
    pub pss: u64,
    /// Resident set size: its resident pages, shared ones counted whole
    /// in every process that maps them.
    pub rss: u64,
}

impl std::iter::Sum for Memory {
    fn sum<I: Iterator<Item = Memory>>(iter: I) -> Memory {
        iter.fold(Memory::default(), |total, each| Memory {
            pss: total.pss + each.pss,
            rss: total.rss + each.rss,
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// A command to start service `name` under, for profiling:
/// `HOROSCOPER_BENCH_WRAP="gateway=heaptrack -o target/bench/gateway"` or
/// `"batcher=perf record -g -o target/bench/batcher.perf"`.
fn wrapper(name: &str) -> Option<String> {
    let wrap = std::env::var("HOROSCOPER_BENCH_WRAP").ok()?;
    let (service, command) = wrap.split_once('=')?;
    (service == name).then(|| command.to_owned())
}

/// The gateway, batcher and workers of one scenario.
pub struct Mesh {
    pub addr: SocketAddr,
    /// Each batcher's address (its `/metrics` too).
    pub batchers: Vec<SocketAddr>,
    /// Front to back, so dropping them drains the gateway first.
    pub services: Vec<Service>,
}

impl Mesh {
    pub async fn start(setup: &MeshSetup, logs: &Path) -> Mesh {
        std::fs::create_dir_all(logs).expect("target/bench is writable");
        let mut workers = Vec::new();
        let mut worker_urls = Vec::new();
        for i in 0..setup.workers {
            let name = format!("worker-{}", i + 1);
            let (worker, addr) = Service::listening(&name, &binary("worker"), logs, |listen| {
                let mut args = common_flags(listen);
                args.extend(ONE_THREAD.map(String::from));
                args.extend([
                    "--worker-id".into(),
                    name.clone(),
                    "--min-delay-ms".into(),
                    setup.min_delay_ms.to_string(),
                    "--max-delay-ms".into(),
                    setup.max_delay_ms.to_string(),
                    "--seed".into(),
                    (i + 1).to_string(),
                    "--batching".into(),
                    setup.batching.into(),
                    // In continuous batching, a batch's worth of slots.
                    "--slots".into(),
                    setup.batch_size.to_string(),
                ]);
                args
            })
            .await;
            workers.push(worker);
            worker_urls.push(format!("http://{addr}"));
        }
        let mut batchers = Vec::new();
        let mut batcher_addrs = Vec::new();
        for i in 0..setup.batchers.max(1) {
            let name = if setup.batchers > 1 {
                format!("batcher-{}", i + 1)
            } else {
                "batcher".to_string()
            };
            let (batcher, addr) = Service::listening(&name, &binary("batcher"), logs, |listen| {
                let mut args = common_flags(listen);
                args.extend(ONE_THREAD.map(String::from));
                args.extend([
                    "--batcher-id".into(),
                    name.clone(),
                    "--batch-size".into(),
                    setup.batch_size.to_string(),
                    "--batch-window-ms".into(),
                    setup.batch_window_ms.to_string(),
                    "--batching".into(),
                    setup.batching.into(),
                ]);
                for url in &worker_urls {
                    args.extend(["--worker".into(), url.clone()]);
                }
                args
            })
            .await;
            batchers.push(batcher);
            batcher_addrs.push(addr);
        }
        let (gateway, addr) = Service::listening("gateway", &binary("gateway"), logs, |listen| {
            let mut args = common_flags(listen);
            for batcher in &batcher_addrs {
                args.extend(["--batcher".into(), format!("http://{batcher}")]);
            }
            args
        })
        .await;
        let mut services = vec![gateway];
        services.extend(batchers);
        services.extend(workers);
        // The batchers connect to their workers in the background.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Mesh {
            addr,
            batchers: batcher_addrs,
            services,
        }
    }
}

/// The flags of every service: where it listens (and serves `/metrics`).
fn common_flags(listen: SocketAddr) -> Vec<String> {
    vec!["--listen".to_owned(), listen.to_string()]
}

/// The services of a scenario outnumber the cores, so the batcher and each
/// worker serve on one thread, as each would with one core in a container;
/// the gateway, which does the most work per request, keeps a thread per
/// core (`docs/performance.md` has the measurements behind both).
const ONE_THREAD: [&str; 2] = ["--threads", "1"];

/// The single-hop reference server: this bench binary again, in a process
/// of its own.
pub async fn reference(logs: &Path) -> (SocketAddr, Service) {
    std::fs::create_dir_all(logs).expect("target/bench is writable");
    let program = std::env::current_exe().expect("the bench knows its own path");
    let (service, addr) = Service::listening("reference", &program, logs, |listen| {
        vec!["--serve-reference".into(), listen.to_string()]
    })
    .await;
    (addr, service)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until `addr` accepts connections; false if `service` exited first.
async fn reachable(addr: SocketAddr, service: &mut Service) -> bool {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if service.child.try_wait().ok().flatten().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} at {addr} never accepted connections", service.name);
}

/// The `/metrics` exposition of the service at `addr` (HTTP/1.1).
pub async fn metrics(addr: SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(body.to_string());
    }
    // Each chunk: its size in hex on a line, then that many bytes.
    let mut rest = body;
    let mut whole = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        whole.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok(whole)
}
