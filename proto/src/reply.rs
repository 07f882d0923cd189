//! A request's reply on a session (`mesh::Reply`) as the services hold it:
//! tokens that were ready together, or the status that ends the request. The
//! batcher encodes it, the gateway decodes it; both ask whether it ends the
//! request.

use crate::mesh::{Failure, Reply, SubmitResponse, Tokens, reply::Outcome};
use tonic::{Status, metadata::MetadataValue};

/// Marks a status as a refusal (`Failure.refused`) while it travels inside
/// a service; never sent to a client.
const REFUSED: &str = "x-horoscoper-refused";

/// `status`, as the refusal of a request the batcher did not take: a
/// gateway may send the request to another batcher.
pub fn refused(mut status: Status) -> Status {
    status
        .metadata_mut()
        .insert(REFUSED, MetadataValue::from_static("1"));
    status
}

/// Whether `status` refused its request before it was taken (see
/// [`refused`]).
pub fn is_refused(status: &Status) -> bool {
    status.metadata().contains_key(REFUSED)
}

/// A token, or the status that ends the request.
pub type Message = Result<SubmitResponse, Status>;

/// One or more consecutive tokens of a request, or the status that ends it:
/// what one reply carries.
pub type Messages = Result<Vec<SubmitResponse>, Status>;

/// Whether `message` is its request's last: a token marked last, or a status.
pub fn is_last(message: &Message) -> bool {
    match message {
        Ok(token) => token.last,
        Err(_) => true,
    }
}

/// Whether `messages` end their request: their last token is marked last,
/// or they are a status.
pub fn ends(messages: &Messages) -> bool {
    match messages {
        Ok(tokens) => tokens.last().is_some_and(|token| token.last),
        Err(_) => true,
    }
}

/// `messages` for request `id` of the session, as they travel.
pub fn encode(id: u64, messages: Messages) -> Reply {
    let outcome = match messages {
        Ok(tokens) => Outcome::Tokens(Tokens { tokens }),
        Err(status) => Outcome::Failure(Failure {
            code: status.code() as i32,
            message: status.message().to_string(),
            refused: is_refused(&status),
        }),
    };
    Reply {
        id,
        outcome: Some(outcome),
    }
}

/// The request's id in the session and its messages (a single `token`, as
/// older batchers send it, is one). A reply with neither a token nor a
/// status is INTERNAL.
pub fn decode(reply: Reply) -> (u64, Messages) {
    let messages = match reply.outcome {
        Some(Outcome::Token(token)) => Ok(vec![token]),
        Some(Outcome::Tokens(Tokens { tokens })) if !tokens.is_empty() => Ok(tokens),
        Some(Outcome::Failure(failure)) => {
            let status = Status::new(failure.code.into(), failure.message);
            Err(if failure.refused {
                refused(status)
            } else {
                status
            })
        }
        Some(Outcome::Tokens(_)) | None => Err(Status::internal(
            "the batcher sent a reply with neither a token nor a status",
        )),
    };
    (reply.id, messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn token(text: &str, last: bool) -> SubmitResponse {
        SubmitResponse {
            text: text.into(),
            last,
            batch: None,
        }
    }

    #[test]
    fn a_reply_decodes_to_what_was_encoded() {
        let tokens = vec![token("two ", false), token("words", true)];
        let (id, messages) = decode(encode(7, Ok(tokens.clone())));
        assert_eq!((id, messages.unwrap()), (7, tokens));

        let (id, messages) = decode(encode(8, Err(Status::unavailable("gone"))));
        let status = messages.unwrap_err();
        assert_eq!(
            (id, status.code(), status.message()),
            (8, Code::Unavailable, "gone")
        );
        assert!(!is_refused(&status));

        let draining = refused(Status::unavailable("draining"));
        let (_, messages) = decode(encode(9, Err(draining)));
        let status = messages.unwrap_err();
        assert!(is_refused(&status), "a refusal stays one on the way");
        assert_eq!(status.message(), "draining");
    }

    #[test]
    fn a_single_token_as_older_batchers_send_it_is_read_too() {
        let reply = Reply {
            id: 3,
            outcome: Some(Outcome::Token(token("word ", false))),
        };
        let (id, messages) = decode(reply);
        assert_eq!((id, messages.unwrap()), (3, vec![token("word ", false)]));
    }

    #[test]
    fn a_reply_with_no_token_and_no_status_is_internal() {
        for outcome in [None, Some(Outcome::Tokens(Tokens::default()))] {
            let (id, messages) = decode(Reply { id: 9, outcome });
            assert_eq!(id, 9);
            assert_eq!(messages.unwrap_err().code(), Code::Internal);
        }
    }

    #[test]
    fn a_status_or_a_token_marked_last_ends_the_request() {
        assert!(!is_last(&Ok(token("a ", false))));
        assert!(is_last(&Ok(token("a", true))));
        assert!(is_last(&Err(Status::internal("x"))));

        assert!(!ends(&Ok(vec![token("a ", false), token("b ", false)])));
        assert!(ends(&Ok(vec![token("a ", false), token("b", true)])));
        assert!(ends(&Err(Status::internal("x"))));
    }
}
