//! The load generator, over the client generated from `proto/`: a closed
//! loop of concurrent streaming clients, each sending its next request as
//! soon as the last one ended, or an open loop, requests arriving as a
//! Poisson process at a fixed rate whatever the server does. A closed loop
//! waits for the server, and so hides how long requests would have queued
//! (coordinated omission); an open loop does not.
//!
//! A run has a warm-up, then a measured window. Tokens and completions are
//! counted as they arrive, so rates are those of the window; a request's
//! latencies are kept when it both started and ended inside the window.

use crate::services::cpu_time;
use horoscoper_proto::v1::{InferRequest, horoscoper_client::HoroscoperClient};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};
use tokio::{task::JoinSet, time::Instant};
use tonic::transport::{Channel, Endpoint};

/// What to run.
#[derive(Clone, Debug)]
pub struct Load {
    /// Shown in the progress lines.
    pub label: String,
    /// Concurrent clients, each with one request in flight at a time.
    pub clients: usize,
    /// Clients that share one HTTP/2 connection.
    pub per_connection: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Processes whose CPU time over the window is measured, besides the
    /// load generator's own.
    pub cpu_of: Vec<u32>,
    /// Open loop: requests arrive as a Poisson process at this many a
    /// second (`clients` is then how many connections they spread over).
    pub rate: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The measured window's length.
    pub window: Duration,
    /// Requests that ended whole inside the window.
    pub completed: u64,
    /// Tokens received inside the window.
    pub tokens: u64,
    /// Completions per second, summed over clients, each client's rate taken
    /// between its first and last completion in the window: unlike
    /// `completed / window`, it does not depend on where the window's edges
    /// fall between the bursts a batch makes.
    pub client_rate: f64,
    /// Failed requests, by status code, over the whole run.
    pub errors: BTreeMap<String, u64>,
    /// Time to first token and to the whole response, of the requests that
    /// started and ended in the window.
    pub ttft: Vec<Duration>,
    pub whole: Vec<Duration>,
    /// Most requests open at once.
    pub peak_open: usize,
    /// CPU time used in the window: the load generator's, then that of each
    /// process of `Load::cpu_of`.
    pub cpu: Vec<Duration>,
}

impl Outcome {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.window.as_secs_f64()
    }

    pub fn requests_per_second(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// CPU time per request completed in the window, in microseconds: the
    /// load generator's, then each watched process's.
    pub fn cpu_per_request(&self) -> Vec<f64> {
        self.cpu
            .iter()
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.completed.max(1) as f64)
            .collect()
    }
}

/// Counters every client adds to.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    tokens: AtomicU64,
    completed: AtomicU64,
    open: AtomicUsize,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// The measured window, once it is known.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one client kept.
#[derive(Default)]
struct Kept {
    ttft: Vec<Duration>,
    whole: Vec<Duration>,
    completions: Vec<Instant>,
}

/// Called about four times a second while the load runs, with the number of
/// requests open: a scenario samples what it watches (memory) there.
pub type Probe<'a> = &'a mut (dyn FnMut(usize) + Send);

impl Load {
    /// Runs the load against a Horoscoper server at `target`.
    pub async fn run(&self, target: SocketAddr, probe: Probe<'_>) -> Outcome {
        let connections = self.clients.div_ceil(self.per_connection.max(1));
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(connect(target).await);
        }
        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let window = Window {
            start: started + self.warmup,
            end: started + self.warmup + self.measure,
        };
        let mut clients = JoinSet::new();
        match self.rate {
            Some(rate) => {
                clients.spawn(open_loop(rate, channels.clone(), shared.clone(), window));
            }
            None => {
                for id in 0..self.clients {
                    let channel = channels[id / self.per_connection.max(1)].clone();
                    clients.spawn(client(id, channel, shared.clone(), window));
                }
            }
        }

        let mut at_start = None;
        let mut peak_open = 0;
        let mut last_print = started;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let end = loop {
            tick.tick().await;
            let now = Instant::now();
            let open = shared.open.load(Relaxed);
            peak_open = peak_open.max(open);
            probe(open);
            if at_start.is_none() && now >= window.start {
                at_start = Some(snapshot(&shared, now, &self.cpu_of));
            }
            if now.duration_since(last_print) >= Duration::from_secs(2) {
                last_print = now;
                self.progress(&shared, now.duration_since(started), open);
            }
            if now >= window.end {
                break snapshot(&shared, now, &self.cpu_of);
            }
        };
        shared.stop.store(true, Relaxed);
        let (mut ttft, mut whole, mut client_rate) = (Vec::new(), Vec::new(), 0.0);
        // Requests in flight finish (or fail, and are counted as errors).
        while let Some(joined) = clients.join_next().await {
            let kept = joined.expect("a client panicked");
            ttft.extend(kept.ttft);
            whole.extend(kept.whole);
            if let [first, .., last] = kept.completions[..] {
                let span = last.duration_since(first).as_secs_f64();
                if span > 0.0 {
                    client_rate += (kept.completions.len() - 1) as f64 / span;
                }
            }
        }
        let start = at_start.expect("the window starts before it ends");
        let errors = shared.errors.lock().unwrap().clone();
        let completed = end.completed - start.completed;
        let window = end.at.duration_since(start.at);
        if self.rate.is_some() {
            // One stream of arrivals: the rate is the window's.
            client_rate = completed as f64 / window.as_secs_f64();
        }
        Outcome {
            window,
            completed,
            tokens: end.tokens - start.tokens,
            client_rate,
            errors,
            ttft,
            whole,
            peak_open,
            cpu: end
                .cpu
                .iter()
                .zip(&start.cpu)
                .map(|(end, start)| end.saturating_sub(*start))
                .collect(),
        }
    }

    fn progress(&self, shared: &Shared, elapsed: Duration, open: usize) {
        eprintln!(
            "  {:<44} {:>5.1} s  {:>9} done  {:>10} tokens  {:>6} open  {} failed",
            self.label,
            elapsed.as_secs_f64(),
            shared.completed.load(Relaxed),
            shared.tokens.load(Relaxed),
            open,
            shared.errors.lock().unwrap().values().sum::<u64>(),
        );
    }
}

/// The counters at one moment.
struct Snapshot {
    at: Instant,
    tokens: u64,
    completed: u64,
    /// CPU time so far: this process's, then each of `cpu_of`.
    cpu: Vec<Duration>,
}

fn snapshot(shared: &Shared, at: Instant, cpu_of: &[u32]) -> Snapshot {
    Snapshot {
        at,
        tokens: shared.tokens.load(Relaxed),
        completed: shared.completed.load(Relaxed),
        cpu: std::iter::once(std::process::id())
            .chain(cpu_of.iter().copied())
            .map(cpu_time)
            .collect(),
    }
}

/// One HTTP/2 connection to `target`.
async fn connect(target: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{target}"))
        .expect("a valid URI")
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {target}: {error}"))
}

/// One closed-loop client: a request, and the next as soon as it ends.
async fn client(id: usize, channel: Channel, shared: Arc<Shared>, window: Window) -> Kept {
    let mut grpc = HoroscoperClient::new(channel).max_decoding_message_size(64 * 1024);
    let mut kept = Kept::default();
    let mut sent = 0u64;
    while !shared.stop.load(Relaxed) {
        let prefix = format!("client {id} request {sent}");
        sent += 1;
        let started = Instant::now();
        shared.open.fetch_add(1, Relaxed);
        let result = one(&mut grpc, prefix, &shared, started).await;
        shared.open.fetch_sub(1, Relaxed);
        shared.count(&result);
        if let Ok(ttft) = result {
            kept.keep(window, started, Instant::now(), ttft);
        }
    }
    kept
}

/// The open loop: requests at exponentially distributed gaps (a Poisson
/// process of `rate` a second, from a fixed seed), each on its own task,
/// round the connections, until the run stops; then the last ones finish.
async fn open_loop(rate: f64, channels: Vec<Channel>, shared: Arc<Shared>, window: Window) -> Kept {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    let mut requests = JoinSet::new();
    let mut next = Instant::now();
    let mut sent = 0u64;
    while !shared.stop.load(Relaxed) {
        let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
        next += Duration::from_secs_f64(gap);
        tokio::time::sleep_until(next).await;
        let channel = channels[sent as usize % channels.len()].clone();
        let prefix = format!("open loop request {sent}");
        sent += 1;
        let shared = shared.clone();
        requests.spawn(async move {
            let mut grpc = HoroscoperClient::new(channel).max_decoding_message_size(64 * 1024);
            // Sent at its arrival time, not when a task got round to it.
            let started = next;
            shared.open.fetch_add(1, Relaxed);
            let result = one(&mut grpc, prefix, &shared, started).await;
            shared.open.fetch_sub(1, Relaxed);
            shared.count(&result);
            (started, Instant::now(), result)
        });
    }
    let mut kept = Kept::default();
    while let Some(joined) = requests.join_next().await {
        let (started, ended, result) = joined.expect("a request task panicked");
        if let Ok(ttft) = result {
            kept.keep(window, started, ended, ttft);
        }
    }
    kept
}

impl Shared {
    /// Counts one request's end, as it ends.
    fn count(&self, result: &Result<Duration, String>) {
        match result {
            Ok(_) => {
                self.completed.fetch_add(1, Relaxed);
            }
            Err(code) => {
                *self.errors.lock().unwrap().entry(code.clone()).or_default() += 1;
            }
        }
    }
}

impl Kept {
    /// Keeps a whole request's times if it ended inside the window (and
    /// its latencies if it started there too).
    fn keep(&mut self, window: Window, started: Instant, ended: Instant, ttft: Duration) {
        if window.start <= ended && ended <= window.end {
            self.completions.push(ended);
            if window.start <= started {
                self.ttft.push(ttft);
                self.whole.push(ended - started);
            }
        }
    }
}

/// One request: its time to first token once it has ended whole, or why it
/// failed (a status code, or a stream that ended without its last token).
async fn one(
    grpc: &mut HoroscoperClient<Channel>,
    prefix: String,
    shared: &Shared,
    started: Instant,
) -> Result<Duration, String> {
    let code = |status: tonic::Status| {
        let mut message = format!("{:?}: {}", status.code(), status.message());
        message.truncate(160);
        message
    };
    let mut stream = grpc
        .infer(InferRequest { prefix })
        .await
        .map_err(code)?
        .into_inner();
    let mut ttft = None;
    let mut last = false;
    while let Some(response) = stream.message().await.map_err(code)? {
        ttft.get_or_insert_with(|| started.elapsed());
        shared.tokens.fetch_add(1, Relaxed);
        if last {
            return Err("token after the last".into());
        }
        last = response.last;
    }
    match (ttft, last) {
        (Some(ttft), true) => Ok(ttft),
        _ => Err("ended without its last token".into()),
    }
}
