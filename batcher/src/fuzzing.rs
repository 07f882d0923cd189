//! A gateway's session driven from memory, for the fuzz targets (feature
//! `fuzzing`): commands go through the same session and admission code as
//! over gRPC, into a queue with no worker, whose requests then expire.

use crate::{
    Batching, Metrics, admission::Admission, dispatcher::Dispatcher, session::GatewaySession,
};
use horoscoper_proto::mesh::{SessionRequest, SessionResponse};
use horoscoper_runtime::drain::Drain;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Runs one session of `commands` to its end and returns what it sent the
/// gateway, its last item the status that ended it if it failed. Call it on
/// a runtime whose clock is paused: the requests wait out their time to
/// live at once.
pub async fn session(
    batching: Batching,
    commands: Vec<SessionRequest>,
) -> Vec<Result<SessionResponse, Status>> {
    let stop = CancellationToken::new();
    let dispatcher =
        Dispatcher::spawn(batching.policy, Metrics::default().of("fuzz"), stop.clone());
    let drain = Drain::start(std::future::pending(), Duration::from_secs(1));
    let admission = Admission::new(dispatcher, batching, drain, "fuzz".into());
    let (out, mut replies) = mpsc::channel(16);
    let commands = tokio_stream::iter(commands.into_iter().map(Ok));
    tokio::spawn(GatewaySession::new(admission, commands, out).run());
    let mut sent = Vec::new();
    while let Some(reply) = replies.recv().await {
        sent.push(reply);
    }
    stop.cancel();
    sent
}
