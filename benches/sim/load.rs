//! Open-loop load: requests arrive as a Poisson process at a set rate,
//! whatever the mesh's pace (so queueing shows, rather than hiding behind
//! clients that wait), each a call of the client generated from the public
//! proto; what each request saw is kept, and its text is checked against the
//! determinism rule.

use crate::mesh::{Fault, Mesh};
use horoscoper_proto::v1::InferRequest;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::{sync::Arc, time::Duration};
use tokio::time::Instant;

/// What one request saw, in simulated time.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// Time to its first token, once it had one.
    pub first: Option<Duration>,
    /// Time to its whole response, when it ended well.
    pub whole: Option<Duration>,
    /// Its wait in the batcher's queue, and its batch's size (the last
    /// message's `BatchInfo`).
    pub queue: Duration,
    pub batch_size: u32,
    /// How it ended: `None` is OK.
    pub status: Option<tonic::Code>,
    /// Whether its text is whole and the one the determinism rule gives.
    pub right: bool,
}

/// Requests arriving at `rate` per second, `count` of them.
#[derive(Clone, Copy, Debug)]
pub struct Arrivals {
    pub rate: f64,
    pub count: usize,
    pub seed: u64,
}

/// What a load's requests saw, and how long the arrivals took.
pub struct Run {
    pub seen: Vec<Seen>,
    pub arriving: Duration,
    pub lasted: Duration,
}

/// Sends the arrivals through the mesh's gateways (round robin, one
/// client connection after another) and waits for every request to end.
/// `fault` strikes once its share of the arrival period has passed.
pub async fn run(mesh: &Mesh, arrivals: Arrivals, tag: &str, fault: Option<(f64, Fault)>) -> Run {
    let corpus = Arc::new(horoscoper_worker::Corpus::built_in());
    let mut rng = StdRng::seed_from_u64(arrivals.seed);
    let gateways = mesh.spec.gateways;
    let per_gateway = mesh.clients.len() / gateways;
    let start = Instant::now();
    let mut fault = fault.map(|(share, fault)| {
        let at = start + Duration::from_secs_f64(share * arrivals.count as f64 / arrivals.rate);
        (at, fault)
    });
    let mut next = start;
    let mut calls = Vec::with_capacity(arrivals.count);
    for i in 0..arrivals.count {
        // Exponential gaps: a Poisson process.
        let gap = -(1.0 - rng.random::<f64>()).ln() / arrivals.rate;
        next += Duration::from_secs_f64(gap);
        tokio::time::sleep_until(next).await;
        if let Some((_, kill)) = fault.take_if(|(at, _)| next >= *at) {
            mesh.kill(kill);
        }
        let client =
            mesh.clients[(i % gateways) * per_gateway + (i / gateways) % per_gateway].clone();
        let prefix = format!("{tag} {i}");
        let corpus = corpus.clone();
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let mut seen = Seen {
                sent: sent - start,
                first: None,
                whole: None,
                queue: Duration::ZERO,
                batch_size: 0,
                status: None,
                right: false,
            };
            let mut text = String::new();
            let mut client = client;
            let ended = async {
                let mut stream = client
                    .infer(InferRequest {
                        prefix: prefix.clone(),
                    })
                    .await?
                    .into_inner();
                while let Some(message) = stream.message().await? {
                    seen.first.get_or_insert_with(|| sent.elapsed());
                    text.push_str(&message.text);
                    if let Some(batch) = message.batch {
                        seen.batch_size = batch.batch_size;
                        seen.queue = batch
                            .queue_time
                            .and_then(|time| Duration::try_from(time).ok())
                            .unwrap_or_default();
                    }
                }
                Ok::<_, tonic::Status>(())
            }
            .await;
            match ended {
                Ok(()) => {
                    seen.whole = Some(sent.elapsed());
                    seen.right = text == *horoscoper_worker::choose(&corpus, &prefix).1;
                }
                Err(status) => seen.status = Some(status.code()),
            }
            seen
        }));
    }
    let arriving = next - start;
    let mut seen = Vec::with_capacity(calls.len());
    for call in calls {
        seen.push(call.await.expect("a request task does not panic"));
    }
    Run {
        seen,
        arriving,
        lasted: start.elapsed(),
    }
}

/// How many workers each batcher keeps busy (its `workers_busy` gauge),
/// sampled every 10 ms of simulated time while it runs.
pub struct Busy {
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Time from the start of the sampling, and each batcher's busy workers.
pub type Sample = (Duration, Vec<i64>);

impl Busy {
    pub fn sample(mesh: &Mesh) -> Busy {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let meters = mesh.meters.clone();
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                loop {
                    tick.tick().await;
                    let busy = meters.iter().map(|m| m.workers_busy.get()).collect();
                    samples.lock().unwrap().push((start.elapsed(), busy));
                }
            }
        });
        Busy { samples, task }
    }

    /// The samples taken.
    pub fn stop(self) -> Vec<Sample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}
