//! One batch on a worker: its requests and the tokens each step emits.
//!
//! Tokens are the text split on single spaces; every token but the last keeps
//! its trailing space, so concatenating them gives the text back. Each step
//! emits the next token of every live request; a request ends with its own
//! last token, and a cancelled one emits nothing more. A request that runs
//! again after its worker was lost starts after the tokens its client has
//! (`BatchItem.delivered`): the batch takes only the steps still to come.

use crate::{Error, choice, corpus::Corpus};
use horoscoper_proto::mesh::{Batch, BatchItem, StepToken};
use std::sync::Arc;

/// A request of the running batch.
#[derive(Debug)]
pub(crate) struct Live {
    request_id: u64,
    text: Arc<str>,
    /// Byte offset of the next token in `text`.
    next: usize,
}

impl Live {
    /// A request's horoscope, after the `delivered` tokens its client has;
    /// `None` when the text has no more, with the text's token count.
    pub(crate) fn start(item: &BatchItem, corpus: &Corpus) -> (Option<Live>, usize) {
        let (_, text) = choice::choose(corpus, &item.prefix);
        let whole = token_count(&text);
        let live = skip(&text, item.delivered).map(|next| Live {
            request_id: item.request_id,
            text,
            next,
        });
        (live, whole)
    }

    pub(crate) fn request_id(&self) -> u64 {
        self.request_id
    }

    /// How many tokens are still to come.
    pub(crate) fn left(&self) -> usize {
        self.text[self.next..].split(' ').count()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.next == self.text.len()
    }

    pub(crate) fn next_token(&mut self) -> StepToken {
        let rest = &self.text[self.next..];
        let len = rest.find(' ').map_or(rest.len(), |space| space + 1);
        self.next += len;
        StepToken {
            request_id: self.request_id,
            text: rest[..len].to_owned(),
            last: self.next == self.text.len(),
            shared: 0,
        }
    }
}

/// A batch generating in lockstep: each step, the next token of every
/// request still live.
#[derive(Debug)]
pub struct Lockstep {
    pub batch_id: u64,
    live: Vec<Live>,
    steps: usize,
    whole: usize,
}

impl Lockstep {
    /// Starts a batch: chooses each request's horoscope.
    pub fn start(batch: Batch, corpus: &Corpus) -> Result<Lockstep, Error> {
        if batch.items.is_empty() {
            return Err(Error::EmptyBatch(batch.batch_id));
        }
        let mut live: Vec<Live> = Vec::with_capacity(batch.items.len());
        let (mut steps, mut whole) = (0, 0);
        for item in batch.items {
            if live.iter().any(|l| l.request_id == item.request_id) {
                return Err(Error::DuplicateRequest {
                    batch_id: batch.batch_id,
                    request_id: item.request_id,
                });
            }
            let (started, tokens) = Live::start(&item, corpus);
            whole = whole.max(tokens);
            // A text of no more tokens than its client has gives nothing:
            // the request ends open, and its batcher says why.
            if let Some(started) = started {
                steps = steps.max(started.left());
                live.push(started);
            }
        }
        Ok(Lockstep {
            batch_id: batch.batch_id,
            live,
            steps,
            whole,
        })
    }

    /// How many steps the batch takes: the most tokens a request still lacks.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// How many steps the batch would take were every text run from its
    /// start: its longest text's token count. A batch's pace is drawn over
    /// these, so that a re-run's remaining steps take what they would have.
    pub fn whole_steps(&self) -> usize {
        self.whole
    }

    /// The next token of every live request; requests that emit their last
    /// token leave the batch.
    pub fn step(&mut self) -> Vec<StepToken> {
        let tokens: Vec<StepToken> = self.live.iter_mut().map(Live::next_token).collect();
        self.live.retain(|l| !l.is_done());
        tokens
    }

    /// Stops generating for a request; false when it is not live.
    pub fn cancel(&mut self, request_id: u64) -> bool {
        let before = self.live.len();
        self.live.retain(|l| l.request_id != request_id);
        self.live.len() < before
    }

    /// True once every request has finished or been cancelled.
    pub fn is_done(&self) -> bool {
        self.live.is_empty()
    }
}

/// How many tokens `text` splits into.
pub fn token_count(text: &str) -> usize {
    text.split(' ').count()
}

/// The byte offset of token `tokens` of `text` (the first not yet sent);
/// None when the text has no token past those.
fn skip(text: &str, tokens: u32) -> Option<usize> {
    if tokens == 0 {
        return Some(0);
    }
    let (at, _) = text.match_indices(' ').nth(tokens as usize - 1)?;
    Some(at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::corpus::sky_corpus as corpus;

    fn batch(prefixes: &[&str]) -> Batch {
        Batch {
            batch_id: 9,
            items: prefixes
                .iter()
                .enumerate()
                .map(|(i, prefix)| BatchItem {
                    request_id: i as u64 + 100,
                    prefix: prefix.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn texts(tokens: &[StepToken]) -> Vec<(&str, bool)> {
        tokens.iter().map(|t| (t.text.as_str(), t.last)).collect()
    }

    #[test]
    fn requests_step_in_lockstep_and_end_with_their_own_last_token() {
        let corpus = corpus();
        let (_, long) = choice::choose(&corpus, "aries");
        let (_, short) = choice::choose(&corpus, "hello");
        assert_eq!(&*long, "The ARIES sky is wide.");
        assert_eq!(&*short, "Short one.");

        let mut running = Lockstep::start(batch(&["aries", "hello"]), &corpus).unwrap();
        assert_eq!(running.steps(), 5);
        assert_eq!(texts(&running.step()), [("The ", false), ("Short ", false)]);
        assert_eq!(texts(&running.step()), [("ARIES ", false), ("one.", true)]);
        assert_eq!(texts(&running.step()), [("sky ", false)]);
        assert_eq!(texts(&running.step()), [("is ", false)]);
        assert!(!running.is_done());
        let last = running.step();
        assert_eq!(texts(&last), [("wide.", true)]);
        assert_eq!(last[0].request_id, 100);
        assert!(running.is_done());
    }

    #[test]
    fn concatenated_tokens_give_the_text_back() {
        let corpus = Corpus::built_in();
        let mut running = Lockstep::start(batch(&["hello"]), &corpus).unwrap();
        let mut text = String::new();
        while !running.is_done() {
            text.extend(running.step().into_iter().map(|t| t.text));
        }
        assert_eq!(text, &*choice::choose(&corpus, "hello").1);
    }

    #[test]
    fn a_cancelled_request_emits_nothing_more() {
        let corpus = corpus();
        let mut running = Lockstep::start(batch(&["aries", "aries"]), &corpus).unwrap();
        running.step();
        assert!(running.cancel(101));
        assert!(!running.cancel(101));
        assert_eq!(
            running
                .step()
                .iter()
                .map(|t| t.request_id)
                .collect::<Vec<_>>(),
            [100]
        );
        assert!(running.cancel(100));
        assert!(running.is_done());
    }

    #[test]
    fn a_rerun_starts_after_the_tokens_its_client_has() {
        let corpus = corpus();
        let mut resumed = batch(&["aries", "hello"]);
        resumed.items[0].delivered = 3; // "The ARIES sky " of five tokens
        let mut running = Lockstep::start(resumed, &corpus).unwrap();
        assert_eq!((running.steps(), running.whole_steps()), (2, 5));
        assert_eq!(texts(&running.step()), [("is ", false), ("Short ", false)]);
        assert_eq!(texts(&running.step()), [("wide.", true), ("one.", true)]);
        assert!(running.is_done());
    }

    #[test]
    fn a_rerun_whose_client_has_the_whole_text_gets_nothing() {
        let corpus = corpus();
        for delivered in [5, 6, u32::MAX] {
            let mut resumed = batch(&["aries", "hello"]);
            resumed.items[0].delivered = delivered;
            let mut running = Lockstep::start(resumed, &corpus).unwrap();
            assert_eq!(running.steps(), 2, "the other request's");
            assert_eq!(texts(&running.step()), [("Short ", false)]);
        }
        let mut alone = batch(&["aries"]);
        alone.items[0].delivered = 5;
        let running = Lockstep::start(alone, &corpus).unwrap();
        assert!(running.is_done());
        assert_eq!(running.steps(), 0);
    }

    #[test]
    fn skip_finds_the_first_token_not_sent() {
        assert_eq!(skip("a bb c", 0), Some(0));
        assert_eq!(skip("a bb c", 1), Some(2));
        assert_eq!(skip("a bb c", 2), Some(5));
        assert_eq!(skip("a bb c", 3), None);
        assert_eq!(skip("a", 1), None);
    }

    #[test]
    fn refuses_empty_batches_and_duplicate_requests() {
        let corpus = corpus();
        assert!(matches!(
            Lockstep::start(batch(&[]), &corpus),
            Err(Error::EmptyBatch(9))
        ));
        let mut twice = batch(&["a", "b"]);
        twice.items[1].request_id = 100;
        assert!(matches!(
            Lockstep::start(twice, &corpus),
            Err(Error::DuplicateRequest {
                request_id: 100,
                ..
            })
        ));
    }
}
