//! The batchers, as the gateway's requests reach them.
//!
//! Each `--batcher` URL's host is resolved at start and every
//! `--resolve-interval-ms`; each address is a batcher of its own, with one
//! session at a time ([`crate::session`]). A batcher that appears takes
//! requests at once; one no longer resolved takes no new one (its open
//! requests finish on it).
//!
//! Each request goes to one batcher, chosen by power of two choices over
//! their queues (as each last reported it, plus what this gateway sent it
//! since): of two batchers picked at random, and the one chosen last, a
//! batch still filling (fewer requests than a batch) comes first, the
//! fullest; else the shortest queue, then the fewest of this gateway's
//! requests open there. Splitting a light load evenly would leave every
//! batcher a partial batch; filling one batch at a time keeps batches as
//! full as with one batcher, and under load, when every queue holds a batch,
//! it is plain power of two choices. A batcher that drains, or whose session
//! failed within the last [`AVOID`], is chosen only when no other is left.
//!
//! When a batcher is lost (its session breaks, is refused, or closes with
//! requests open), each of its requests moves to another batcher with the
//! count of tokens its client already has, and goes on there where its
//! client is: the text is deterministic, so the client sees one whole
//! stream. A request moves at most [`MAX_MOVES`] times; with no other
//! batcher it ends with UNAVAILABLE, as it always did with one.

use crate::{
    Error,
    route::{Route, Tokens},
    session::{self, BatcherSession, Ended, Queue},
};
use horoscoper_proto::{deadline::ClientDeadline, limits, mesh::SubmitRequest};
use horoscoper_runtime::{
    resolve::{Resolver, endpoint},
    tls::MeshTls,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};
use tokio::time::Instant;
use tonic::{
    Status,
    transport::{Channel, Uri},
};

/// Most times one request moves to another batcher.
pub const MAX_MOVES: u32 = 3;

/// How long a batcher whose session failed is chosen only for want of
/// another.
pub const AVOID: Duration = Duration::from_secs(1);

/// Where and how the batchers are found.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub urls: Vec<Uri>,
    pub interval: Duration,
    pub resolver: Resolver,
    pub tls: Option<MeshTls>,
    /// How the sessions connect: TCP, or the simulation's network.
    pub dialer: horoscoper_runtime::transport::Dialer,
    /// Counts the requests moved from a lost batcher.
    pub moved: prometheus_client::metrics::counter::Counter,
}

/// The batchers, as the gateway's requests reach them.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    discovery: Discovery,
    state: Mutex<State>,
}

struct State {
    /// The batchers resolved last, by URL (its place in the list) and
    /// address.
    batchers: BTreeMap<(usize, SocketAddr), Arc<Batcher>>,
    /// Why a name did not resolve, while it has no address.
    unresolved: Option<String>,
    /// The batcher chosen last: a candidate again, to fill its batch.
    last: Option<(usize, SocketAddr)>,
    rng: StdRng,
}

/// One batcher: its client, and the session requests go on while it lasts.
struct Batcher {
    /// Its URL's place in the list, and its address.
    key: (usize, SocketAddr),
    /// The batcher as errors and traces name it.
    url: Arc<str>,
    client: horoscoper_proto::mesh::batcher_service_client::BatcherServiceClient<Channel>,
    current: Mutex<Option<Arc<BatcherSession>>>,
    /// Until when it is avoided: its last session failed.
    avoid_until: Mutex<Option<Instant>>,
}

impl Upstream {
    /// Resolves the batchers now, and again every interval for as long as
    /// the upstream is in use.
    pub async fn start(discovery: Discovery) -> Upstream {
        let upstream = Upstream {
            inner: Arc::new(Inner {
                discovery,
                state: Mutex::new(State {
                    batchers: BTreeMap::new(),
                    unresolved: None,
                    last: None,
                    rng: StdRng::from_os_rng(),
                }),
            }),
        };
        upstream.resolve().await;
        tokio::spawn(refresh(Arc::downgrade(&upstream.inner)));
        upstream
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks the names up; new addresses join, vanished ones leave. A
    /// failed lookup keeps the addresses its name had.
    async fn resolve(&self) {
        let discovery = &self.inner.discovery;
        let mut resolved = Vec::with_capacity(discovery.urls.len());
        for url in &discovery.urls {
            resolved.push(discovery.resolver.resolve(url).await);
        }
        let mut state = self.state();
        let mut wanted = BTreeSet::new();
        let mut unresolved = None;
        for (at, (url, addrs)) in discovery.urls.iter().zip(resolved).enumerate() {
            match addrs {
                Ok(addrs) if !addrs.is_empty() => {
                    wanted.extend(addrs.into_iter().map(|addr| (at, addr)));
                }
                failed => {
                    let why = match failed {
                        Err(error) => format!("its name does not resolve: {error}"),
                        Ok(_) => "its name resolves to no address".to_string(),
                    };
                    let known: Vec<_> = state
                        .batchers
                        .keys()
                        .filter(|(index, _)| *index == at)
                        .copied()
                        .collect();
                    if known.is_empty() && state.unresolved.is_none() {
                        tracing::warn!(batcher = %url, %why, "cannot resolve the batcher name");
                    }
                    wanted.extend(known);
                    unresolved = Some(why);
                }
            }
        }
        state.unresolved = unresolved;
        state.batchers.retain(|key, batcher| {
            let kept = wanted.contains(key);
            if !kept {
                tracing::info!(batcher = %batcher.url, "batcher address no longer resolved; it gets no new request");
            }
            kept
        });
        for (at, addr) in wanted {
            if state.batchers.contains_key(&(at, addr)) {
                continue;
            }
            match self.batcher((at, addr), &discovery.urls[at]) {
                Ok(batcher) => {
                    tracing::info!(batcher = %batcher.url, "batcher found");
                    state.batchers.insert((at, addr), Arc::new(batcher));
                }
                Err(error) => {
                    tracing::error!(batcher = %addr, %error, "cannot set up TLS to the batcher");
                }
            }
        }
    }

    fn batcher(
        &self,
        key: (usize, SocketAddr),
        url: &Uri,
    ) -> Result<Batcher, tonic::transport::Error> {
        let addr = key.1;
        let discovery = &self.inner.discovery;
        // Lazy: a batcher that is down answers UNAVAILABLE at once, and is
        // reconnected to when it is back.
        let channel = discovery
            .dialer
            .connect_lazy(endpoint(url, addr, discovery.tls.as_ref())?);
        let host = horoscoper_runtime::net::host(url);
        let url = if host.parse::<std::net::IpAddr>().is_ok() {
            url.to_string()
        } else {
            format!("{url} ({addr})")
        };
        Ok(Batcher {
            key,
            url: url.into(),
            client: horoscoper_proto::mesh::batcher_service_client::BatcherServiceClient::new(
                channel,
            )
            .max_encoding_message_size(limits::MAX_REQUEST_BYTES)
            .max_decoding_message_size(limits::MAX_STEP_BYTES),
            current: Mutex::default(),
            avoid_until: Mutex::default(),
        })
    }

    /// Sends `request` to a batcher; its tokens come back on the stream
    /// returned, which ends with its last token or its status.
    pub fn submit(
        &self,
        request: SubmitRequest,
        deadline: Option<ClientDeadline>,
        span: tracing::Span,
    ) -> Tokens {
        let route = Arc::new(Route::new(request, deadline, span));
        if let Err(error) = self.send(&route, None, 0) {
            route.push(Err(error.into()));
        }
        Tokens::new(route)
    }

    /// Sends the route's request to a batcher other than `not`, saying that
    /// its client has `delivered` tokens.
    fn send(
        &self,
        route: &Arc<Route>,
        not: Option<&Arc<Batcher>>,
        delivered: u32,
    ) -> Result<Arc<Batcher>, Error> {
        loop {
            let batcher = self.choose(not)?;
            let session = self.session(&batcher);
            let mut request = route.request.clone();
            request.delivered = delivered;
            if let Some(deadline) = route.deadline {
                request.time_left = Some(deadline.time_left(Instant::now()));
            }
            route.span.record("batcher", &*batcher.url);
            if session.submit(route, request) {
                return Ok(batcher);
            }
            // It ended just now: the next turn opens another.
        }
    }

    /// The batcher for a request, other than `not`: of two picked at
    /// random and the one chosen last, the one that wants it most (see
    /// [`Batcher::preference`]), among those that take requests; any when
    /// none does.
    fn choose(&self, not: Option<&Arc<Batcher>>) -> Result<Arc<Batcher>, Error> {
        let mut state = self.state();
        let state = &mut *state;
        let now = Instant::now();
        let others: Vec<&Arc<Batcher>> = state
            .batchers
            .values()
            .filter(|batcher| not.is_none_or(|not| !Arc::ptr_eq(batcher, not)))
            .collect();
        // One is the choice, whatever it says.
        let welcoming: Vec<&Arc<Batcher>> = if others.len() > 1 {
            others
                .iter()
                .copied()
                .filter(|batcher| batcher.welcomes(now))
                .collect()
        } else {
            Vec::new()
        };
        let pool = if welcoming.is_empty() {
            &others
        } else {
            &welcoming
        };
        let chosen = match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            n => {
                let a = state.rng.random_range(0..n);
                let b = (a + state.rng.random_range(1..n)) % n;
                let last = pool.iter().find(|batcher| Some(batcher.key) == state.last);
                [pool[a], pool[b]]
                    .into_iter()
                    .chain(last.copied())
                    .max_by_key(|batcher| batcher.preference())
            }
        };
        if let Some(batcher) = chosen {
            state.last = Some(batcher.key);
        }
        match chosen {
            Some(batcher) => Ok(batcher.clone()),
            None => Err(Error::BatcherUnavailable {
                url: self
                    .inner
                    .discovery
                    .urls
                    .iter()
                    .map(Uri::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                message: match (&state.unresolved, not) {
                    (Some(why), _) => why.clone(),
                    (None, Some(_)) => "no other batcher is known".into(),
                    (None, None) => "no batcher is known".into(),
                },
            }),
        }
    }

    /// What every batcher last said of itself (its load), opening a
    /// session to any that has none, as a request would; one that says
    /// nothing within `within` is left out.
    pub async fn survey(&self, within: Duration) -> Vec<horoscoper_proto::mesh::Load> {
        let batchers: Vec<Arc<Batcher>> = self.state().batchers.values().cloned().collect();
        let mut reports = tokio::task::JoinSet::new();
        for batcher in &batchers {
            let mut report = self.session(batcher).report();
            reports.spawn(async move {
                let heard = tokio::time::timeout(within, report.wait_for(Option::is_some)).await;
                heard.ok()?.ok()?.clone()
            });
        }
        let mut loads: Vec<_> = reports.join_all().await.into_iter().flatten().collect();
        loads.sort_by(|a, b| a.batcher_id.cmp(&b.batcher_id));
        loads
    }

    /// The batcher's session in use, or a new one when there is none or it
    /// ended.
    fn session(&self, batcher: &Arc<Batcher>) -> Arc<BatcherSession> {
        let mut current = batcher
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(session) = current.as_ref().filter(|session| !session.has_ended()) {
            return session.clone();
        }
        let (session, commands) = BatcherSession::new();
        let upstream = self.clone();
        // A request the batcher refused untaken (it drains, and this
        // gateway had not heard yet) goes to another, as from a lost one.
        let refused = {
            let (upstream, batcher) = (self.clone(), batcher.clone());
            move |route: Arc<Route>, status: Status| {
                if let Err(status) = upstream.moved(&batcher, &route, &status) {
                    route.push(Err(status));
                }
            }
        };
        let ran = session::run(
            session.clone(),
            batcher.client.clone(),
            commands,
            batcher.url.clone(),
            refused,
        );
        let batcher_ = batcher.clone();
        tokio::spawn(async move {
            let (routes, ended) = ran.await;
            upstream.ended(&batcher_, routes, ended);
        });
        *current = Some(session.clone());
        session
    }

    /// A session ended with `routes` open on it: each moves to another
    /// batcher when this one is gone, or ends with the status.
    fn ended(&self, batcher: &Arc<Batcher>, routes: Vec<Arc<Route>>, ended: Ended) {
        let error = match ended {
            Ended::Failed(status) => {
                tracing::debug!(batcher = %batcher.url, %status, "batcher session failed");
                for route in routes {
                    route.push(Err(status.clone()));
                }
                return;
            }
            Ended::Batcher(error) => error,
        };
        tracing::debug!(batcher = %batcher.url, %error, "batcher session ended");
        *batcher
            .avoid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + AVOID);
        let status = Status::from(error);
        for route in routes {
            if let Err(status) = self.moved(batcher, &route, &status) {
                route.push(Err(status));
            }
        }
    }

    /// Moves a route from a lost batcher to another, if it may go and
    /// another is there; the status that ends it otherwise.
    fn moved(&self, from: &Arc<Batcher>, route: &Arc<Route>, lost: &Status) -> Result<(), Status> {
        // With no other batcher it fails, as it ever did with one.
        let delivered = route.may_move(MAX_MOVES).ok_or_else(|| lost.clone())?;
        let to = self
            .send(route, Some(from), delivered)
            .map_err(|_| lost.clone())?;
        self.inner.discovery.moved.inc();
        route.span.in_scope(|| {
            tracing::info!(
                from = %from.url,
                to = %to.url,
                delivered,
                reason = lost.message(),
                "request moved to another batcher"
            );
        });
        Ok(())
    }
}

impl Batcher {
    /// How much a request is wanted here, the most first: a batch filling
    /// (the fuller the better), else a short queue, then few of this
    /// gateway's requests open.
    fn preference(&self) -> (bool, i64, i64) {
        let (queue, open) = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|session| !session.has_ended())
            .map_or((Queue::default(), 0), |session| {
                (session.queue(), session.open())
            });
        let queued = i64::from(queue.queued);
        let filling = queue.filling();
        (
            filling,
            if filling { queued } else { -queued },
            -(open as i64),
        )
    }

    /// Whether it takes new requests: it does not drain, and its last
    /// session did not fail within [`AVOID`].
    fn welcomes(&self, now: Instant) -> bool {
        let draining = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|session| !session.has_ended() && session.is_draining());
        let avoided = self
            .avoid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| now < until);
        !draining && !avoided
    }
}

/// Resolves the batchers again every interval, while the upstream is used.
async fn refresh(inner: Weak<Inner>) {
    loop {
        let Some(interval) = inner.upgrade().map(|inner| inner.discovery.interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        Upstream { inner }.resolve().await;
    }
}
