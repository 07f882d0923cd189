//! The simulated mesh: workers, batchers and gateways started by their
//! crates' own `run`, each a host of one in-memory network, found by name
//! through a resolver that the simulation controls (as DNS would be), and
//! killed by cutting their host off: every connection to or from it breaks
//! at once, as its peers see a crash.

use horoscoper_proto::v1::horoscoper_client::HoroscoperClient;
use horoscoper_runtime::{memory::Network, net, resolve::Resolver, transport::Dialer};
use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tonic::transport::Channel;

/// The size and settings of a simulated mesh.
#[derive(Clone, Debug)]
pub struct Spec {
    pub workers: usize,
    pub batchers: usize,
    pub gateways: usize,
    pub batch_size: usize,
    /// Least time between two load reports of a batcher.
    pub load_every: Duration,
    /// Most requests one batcher holds.
    pub max_requests: usize,
    /// How long a request may wait for a worker.
    pub time_to_live: Duration,
    /// The workers' delay draws: worker `i` gets `seed + i`.
    pub seed: u64,
}

impl Spec {
    /// A thousand workers, `batchers` batchers and four gateways, with the
    /// shipped settings.
    pub fn shipped(batchers: usize) -> Spec {
        Spec {
            workers: 1000,
            batchers,
            gateways: 4,
            batch_size: 4,
            load_every: Duration::from_millis(5),
            max_requests: 16_384,
            time_to_live: Duration::from_millis(7000),
            seed: 1,
        }
    }
}

/// A kill under load.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Batcher `index` (from 0) killed.
    Batcher(usize),
    /// This many workers killed at once.
    Workers(usize),
}

/// Client connections per gateway: a connection carries at most
/// `net::PUBLIC_MAX_STREAMS` streams at once.
const CLIENT_CONNECTIONS: usize = 128;

/// A running simulated mesh.
pub struct Mesh {
    pub spec: Spec,
    network: Network,
    names: Names,
    workers: Vec<SocketAddr>,
    batchers: Vec<SocketAddr>,
    /// One batcher's meters each.
    pub meters: Vec<horoscoper_batcher::Meters>,
    /// Every gateway's metrics, summed.
    pub gateway_metrics: horoscoper_gateway::Metrics,
    /// The clients' channels, spread over the gateways.
    pub clients: Vec<HoroscoperClient<Channel>>,
}

/// What each name resolves to now.
#[derive(Clone, Default)]
struct Names(Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>);

impl Names {
    fn set(&self, name: &str, addrs: Vec<SocketAddr>) {
        self.0.lock().unwrap().insert(name.into(), addrs);
    }

    fn remove(&self, name: &str, gone: &[SocketAddr]) {
        if let Some(addrs) = self.0.lock().unwrap().get_mut(name) {
            addrs.retain(|addr| !gone.contains(addr));
        }
    }

    fn resolver(&self) -> Resolver {
        let names = self.clone();
        Resolver::new(Arc::new(move |host, _port| {
            let found = names.0.lock().unwrap().get(&host).cloned();
            Box::pin(
                async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, host)) },
            )
        }))
    }
}

fn worker_addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 1, (index >> 8) as u8, (index & 0xff) as u8], 50051))
}

fn batcher_addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 2, 0, index as u8], 50052))
}

fn gateway_addr(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 3, 0, index as u8], 8080))
}

fn client_addr(gateway: usize, index: usize) -> SocketAddr {
    SocketAddr::from(([10, 9, gateway as u8, index as u8], 40000))
}

impl Mesh {
    /// Starts every service on the current (paused-clock) runtime and waits
    /// until each batcher has every worker.
    pub async fn start(spec: Spec) -> Mesh {
        let network = Network::default();
        let names = Names::default();
        let workers: Vec<_> = (0..spec.workers).map(worker_addr).collect();
        let batchers: Vec<_> = (0..spec.batchers).map(batcher_addr).collect();
        names.set("worker", workers.clone());
        names.set("batcher", batchers.clone());

        let generation = horoscoper_worker::GenerationArgs {
            min_delay_ms: 500,
            max_delay_ms: 3000,
            corpus: None,
            seed: None,
        }
        .load()
        .expect("the built-in corpus");
        let worker_metrics = horoscoper_worker::Metrics::default();
        for (index, addr) in workers.iter().enumerate() {
            let mut generation = generation.clone();
            generation.seed = Some(spec.seed.wrapping_add(index as u64));
            let config = horoscoper_worker::Config {
                worker_id: Some(format!("worker-{}", index + 1)),
                generation,
                metrics: worker_metrics.clone(),
                registry: None,
                drain_grace: Duration::from_secs(25),
                mesh_tls: None,
            };
            let listener = network.listen(*addr).expect("a free address");
            spawn("worker", horoscoper_worker::run(config, listener, never()));
        }

        let batching = horoscoper_batcher::BatchingArgs {
            batch_size: spec.batch_size,
            batch_window_ms: 250,
            request_ttl_ms: spec.time_to_live.as_millis() as u64,
            max_requests: spec.max_requests,
            batching: Default::default(),
            load_interval_ms: spec.load_every.as_millis() as u64,
        }
        .validate()
        .expect("valid batching");
        let batcher_metrics = horoscoper_batcher::Metrics::default();
        let mut meters = Vec::new();
        for (index, addr) in batchers.iter().enumerate() {
            let id = format!("batcher-{}", index + 1);
            meters.push(batcher_metrics.of(&id));
            let mut config = horoscoper_batcher::Config::new(
                vec!["http://worker:50051".parse().unwrap()],
                batching,
                batcher_metrics.clone(),
            );
            config.batcher_id = Some(id);
            config.resolver = names.resolver();
            let listener = network.listen(*addr).expect("a free address");
            spawn(
                "batcher",
                horoscoper_batcher::run(config, listener, never()),
            );
        }

        let gateway_metrics = horoscoper_gateway::Metrics::default();
        let mut clients = Vec::new();
        for gateway in 0..spec.gateways {
            let config = horoscoper_gateway::Config {
                batchers: vec!["http://batcher:50052".parse().unwrap()],
                resolve_interval: Duration::from_secs(5),
                resolver: names.resolver(),
                metrics: gateway_metrics.clone(),
                registry: None,
                drain_grace: Duration::from_secs(25),
                access: Default::default(),
                tls: None,
                mesh_tls: None,
            };
            let listener = network
                .listen(gateway_addr(gateway))
                .expect("a free address");
            spawn(
                "gateway",
                horoscoper_gateway::run(config, listener, never()),
            );
            let url = format!("http://{}", gateway_addr(gateway));
            for index in 0..CLIENT_CONNECTIONS {
                let dialer = Dialer::Memory(network.client(client_addr(gateway, index)));
                let channel = dialer.connect_lazy(net::endpoint(url.parse().unwrap()));
                clients.push(HoroscoperClient::new(channel));
            }
        }
        let mesh = Mesh {
            spec,
            network,
            names,
            workers,
            batchers,
            meters,
            gateway_metrics,
            clients,
        };
        // Every batcher knows every worker before the load starts.
        while mesh
            .meters
            .iter()
            .any(|meters| meters.workers.get() < mesh.spec.workers as i64)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        mesh
    }

    /// Requests moved from a lost batcher by the gateways, and run again
    /// after their worker was lost by the batchers.
    pub fn recovered(&self) -> (u64, u64) {
        let rerun = self.meters.iter().map(|m| m.redispatched.get()).sum();
        (self.gateway_metrics.moved.get(), rerun)
    }

    pub fn kill(&self, fault: Fault) {
        match fault {
            Fault::Batcher(index) => self.kill_batcher(index),
            Fault::Workers(count) => self.kill_workers(count),
        }
    }

    /// Kills batcher `index` (from 0): its host is cut off, and its name no
    /// longer resolves to it.
    fn kill_batcher(&self, index: usize) {
        self.names.remove("batcher", &self.batchers[index..=index]);
        self.network.cut(self.batchers[index]);
    }

    /// Kills `count` workers at once, spread over the range.
    fn kill_workers(&self, count: usize) {
        let step = self.workers.len() / count.max(1);
        let killed: Vec<_> = (0..count).map(|i| self.workers[i * step]).collect();
        self.names.remove("worker", &killed);
        for addr in killed {
            self.network.cut(addr);
        }
    }
}

/// Runs a service until the simulation's runtime is dropped; a service that
/// fails to start ends the simulation.
fn spawn(
    service: &'static str,
    run: impl std::future::Future<Output = Result<(), horoscoper_runtime::StartError>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(error) = run.await {
            panic!("the simulated {service} failed: {error}");
        }
    });
}

/// A shutdown that never comes: a run ends when its runtime is dropped.
fn never() -> std::future::Pending<()> {
    std::future::pending()
}
