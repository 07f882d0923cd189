//! Finding workers by name. Every `--worker` URL's host is resolved now and
//! every `--resolve-interval-ms`; each address it resolves to gets a
//! connection of its own (so a headless Service or a Compose service name
//! with replicas fans out to every replica). An address that appears joins
//! without a restart; one that is no longer resolved is retired: it takes no
//! new batch and leaves when its batch ends. An address that resolves again
//! while its connection is still there (its last batch runs) keeps that one
//! connection: a worker never has two from one batcher. A failed lookup
//! keeps the addresses the name had.

use crate::{connection::Connection, dispatcher::Dispatcher};
use horoscoper_runtime::{
    resolve::{Resolver, endpoint},
    tls::MeshTls,
    transport::Dialer,
};
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Uri;

/// The task that keeps one connection per resolved worker address.
pub struct Discovery {
    pub urls: Vec<Uri>,
    pub interval: Duration,
    pub resolver: Resolver,
    /// Mutual TLS with the workers, if configured.
    pub tls: Option<MeshTls>,
    /// How the worker connections are made: TCP, or the simulation's network.
    pub dialer: Dialer,
    pub dispatcher: Dispatcher,
    pub stop: CancellationToken,
    /// Where the worker connections run, so that a stopping batcher can wait
    /// for them to say goodbye.
    pub connections: TaskTracker,
}

impl Discovery {
    /// Runs until `stop` is cancelled.
    pub async fn run(self) {
        // Per URL, the addresses it resolved to last; per address with a
        // connection, the switch that retires it (true) or keeps it.
        let mut resolved: Vec<BTreeSet<SocketAddr>> = vec![BTreeSet::new(); self.urls.len()];
        let mut connections: HashMap<(usize, SocketAddr), watch::Sender<bool>> = HashMap::new();
        let mut failing = vec![false; self.urls.len()];
        let mut next_index = 0;
        loop {
            for (at, url) in self.urls.iter().enumerate() {
                match self.resolver.resolve(url).await {
                    Ok(addrs) => {
                        if failing[at] {
                            tracing::info!(worker = %url, "worker name resolves again");
                        }
                        failing[at] = false;
                        resolved[at] = addrs;
                    }
                    Err(error) => {
                        // Say it once per outage; keep the known addresses.
                        if !failing[at] {
                            tracing::warn!(worker = %url, %error, "cannot resolve the worker name; keeping its known addresses");
                        }
                        failing[at] = true;
                    }
                }
            }
            let wanted: BTreeSet<(usize, SocketAddr)> = resolved
                .iter()
                .enumerate()
                .flat_map(|(at, addrs)| addrs.iter().map(move |addr| (at, *addr)))
                .collect();
            // A connection that has ended let go of its receiver.
            connections.retain(|_, retire| !retire.is_closed());
            for (key, retire) in &connections {
                let retired = !wanted.contains(key);
                retire.send_if_modified(|was| {
                    let changed = *was != retired;
                    if changed && retired {
                        tracing::info!(worker = %key.1, "worker address no longer resolved; draining it");
                    }
                    *was = retired;
                    changed
                });
            }
            for key in wanted {
                if connections.contains_key(&key) {
                    continue;
                }
                let endpoint = match endpoint(&self.urls[key.0], key.1, self.tls.as_ref()) {
                    Ok(endpoint) => endpoint,
                    Err(error) => {
                        tracing::error!(worker = %self.urls[key.0], %error, "cannot set up TLS to the worker");
                        continue;
                    }
                };
                let (retire, retired) = watch::channel(false);
                connections.insert(key, retire);
                let connection = Connection {
                    index: next_index,
                    endpoint,
                    dialer: self.dialer.clone(),
                    dispatcher: self.dispatcher.clone(),
                    stop: self.stop.clone(),
                    retire: retired,
                };
                next_index += 1;
                tracing::debug!(worker = %self.urls[key.0], addr = %key.1, "worker address found");
                self.connections.spawn(connection.run());
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
