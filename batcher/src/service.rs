//! `BatcherService.Session`: each gateway's session runs in a task of its
//! own ([`crate::session`]), admitting its requests through
//! [`crate::admission`].

use crate::{Error, admission::Admission, session::GatewaySession};
use horoscoper_proto::mesh::{
    SessionRequest, SessionResponse, batcher_service_server::BatcherService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Messages a session may have encoded but not yet sent; past that it waits
/// for the gateway to read.
const SESSION_BACKLOG: usize = 16;

/// The batcher's gRPC service.
#[derive(Clone)]
pub struct Batcher {
    admission: Admission,
}

impl Batcher {
    pub fn new(admission: Admission) -> Batcher {
        Batcher { admission }
    }
}

#[tonic::async_trait]
impl BatcherService for Batcher {
    type SessionStream = ReceiverStream<Result<SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.admission.drain().is_draining() {
            return Err(Error::Draining.into());
        }
        let (out, replies) = mpsc::channel(SESSION_BACKLOG);
        tokio::spawn(GatewaySession::new(self.admission.clone(), request.into_inner(), out).run());
        Ok(Response::new(ReceiverStream::new(replies)))
    }
}
