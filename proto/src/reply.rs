//! A request's reply on a session (`mesh::Reply`) as the services hold it:
//! a token, or the status that ends the request. The batcher encodes it,
//! the gateway decodes it; both ask whether it is the request's last.

use crate::mesh::{Failure, Reply, SubmitResponse, reply::Outcome};
use tonic::Status;

/// A token, or the status that ends the request.
pub type Message = Result<SubmitResponse, Status>;

/// Whether `message` is its request's last: a token marked last, or a status.
pub fn is_last(message: &Message) -> bool {
    match message {
        Ok(token) => token.last,
        Err(_) => true,
    }
}

/// `message` for request `id` of the session, as it travels.
pub fn encode(id: u64, message: Message) -> Reply {
    let outcome = match message {
        Ok(token) => Outcome::Token(token),
        Err(status) => Outcome::Failure(Failure {
            code: status.code() as i32,
            message: status.message().to_string(),
        }),
    };
    Reply {
        id,
        outcome: Some(outcome),
    }
}

/// The request's id in the session and its message; a reply with neither a
/// token nor a status is INTERNAL.
pub fn decode(reply: Reply) -> (u64, Message) {
    let message = match reply.outcome {
        Some(Outcome::Token(token)) => Ok(token),
        Some(Outcome::Failure(failure)) => Err(Status::new(failure.code.into(), failure.message)),
        None => Err(Status::internal(
            "the batcher sent a reply with neither a token nor a status",
        )),
    };
    (reply.id, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_reply_decodes_to_what_was_encoded() {
        let token = SubmitResponse {
            text: "word ".into(),
            last: false,
            batch: None,
        };
        let (id, message) = decode(encode(7, Ok(token.clone())));
        assert_eq!((id, message.unwrap()), (7, token));

        let (id, message) = decode(encode(8, Err(Status::unavailable("gone"))));
        let status = message.unwrap_err();
        assert_eq!(
            (id, status.code(), status.message()),
            (8, Code::Unavailable, "gone")
        );

        let (_, message) = decode(Reply {
            id: 9,
            outcome: None,
        });
        assert_eq!(message.unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn a_status_or_a_token_marked_last_ends_the_request() {
        let token = |last| SubmitResponse {
            last,
            ..SubmitResponse::default()
        };
        assert!(!is_last(&Ok(token(false))));
        assert!(is_last(&Ok(token(true))));
        assert!(is_last(&Err(Status::internal("x"))));
    }
}
