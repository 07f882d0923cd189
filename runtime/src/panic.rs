//! Panics caught where one request's trouble must stay its own: a task that
//! serves many requests (a session, a worker connection) catches a panic in
//! the handling of one message, fails what that message concerned, and goes
//! on serving the rest.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    task::Poll,
};

/// Runs `f`; a panic becomes its message.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| message(&*payload))
}

/// Awaits `future`; a panic in any of its polls ends it with its message.
pub async fn caught<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match catch(|| future.as_mut().poll(cx)) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(message) => Poll::Ready(Err(message)),
    })
    .await
}

/// What a panic said, when it said it with a string.
fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(catch(|| panic!("at {}", 3)), Err::<(), _>("at 3".into()));
        assert_eq!(
            catch(|| std::panic::panic_any(5u8)),
            Err::<(), _>("a panic with no message".into())
        );
    }

    #[tokio::test]
    async fn a_future_that_panics_after_waiting_ends_with_its_message() {
        let ended = caught(async {
            tokio::task::yield_now().await;
            panic!("late");
        })
        .await;
        assert_eq!(ended, Err::<(), _>("late".into()));
        assert_eq!(caught(async { 1 }).await, Ok(1));
    }
}
