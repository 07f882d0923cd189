//! Continuous batching on one worker (`--batching continuous`): requests
//! join and leave at step boundaries, as in iteration-level scheduling.
//!
//! Every step emits the next token of every request in the engine, however
//! and whenever it joined. A request leaves with its own last token, its
//! cancellation or its client's deadline, and its slot is free for the next
//! step; one that joins while a step runs takes part from the next.
//!
//! Each request brings its own pace, drawn as a static batch of that one
//! request would draw it ([`DelayRange::pace`]), and a step lasts the mean
//! of the next step lengths of those in it ([`shared_step`]): a request
//! alone takes the same time in both modes.
//!
//! Requests join in groups (one Batch from one batcher stream); a group is
//! done once its last request has left. A request's last token says how
//! many requests shared a step with it at most.

use crate::{
    Error,
    batch::Live,
    corpus::Corpus,
    schedule::{DelayRange, shared_step},
};
use horoscoper_proto::mesh::{Batch, StepToken};
use rand::RngCore;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};
use tokio::time::Instant;

/// Where a group came from: a batcher stream, and the batch id it gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    pub stream: u64,
    pub batch_id: u64,
}

/// The requests generating on the worker.
#[derive(Debug, Default)]
pub struct Engine {
    members: Vec<Member>,
    /// How many requests of each group generate.
    groups: HashMap<Group, usize>,
}

#[derive(Debug)]
struct Member {
    group: Group,
    live: Live,
    /// The lengths of its steps still to come.
    pace: VecDeque<Duration>,
    /// When its client's deadline passes.
    deadline: Option<Instant>,
    /// The most requests in one step with it so far.
    shared: u32,
}

/// What a step (or a join, a cancellation, a deadline) produced for one
/// group.
#[derive(Debug, Default, PartialEq)]
pub struct Emitted {
    pub tokens: Vec<StepToken>,
    /// Its last request has left: the group is done.
    pub done: bool,
}

impl Engine {
    /// Adds a group's requests, each with its own pace; those whose clients
    /// already have their whole text take no part. `Some` when nothing of
    /// the group is left to generate: it is done at once.
    pub fn join(
        &mut self,
        group: Group,
        batch: &Batch,
        corpus: &Corpus,
        delays: &DelayRange,
        rng: &mut impl RngCore,
        deadlines: impl Fn(u64) -> Option<Instant>,
    ) -> Result<Option<Emitted>, Error> {
        if batch.items.is_empty() {
            return Err(Error::EmptyBatch(batch.batch_id));
        }
        if self.has(group) {
            return Err(Error::DuplicateBatch(batch.batch_id));
        }
        let mut joined = Vec::with_capacity(batch.items.len());
        for item in &batch.items {
            let duplicate = joined
                .iter()
                .any(|member: &Member| member.live.request_id() == item.request_id);
            if duplicate {
                return Err(Error::DuplicateRequest {
                    batch_id: batch.batch_id,
                    request_id: item.request_id,
                });
            }
            let (live, whole) = Live::start(item, corpus);
            if let Some(live) = live {
                let pace = delays.pace(whole, live.left(), rng).into();
                joined.push(Member {
                    group,
                    deadline: deadlines(item.request_id),
                    live,
                    pace,
                    shared: 0,
                });
            }
        }
        if joined.is_empty() {
            return Ok(Some(Emitted {
                tokens: Vec::new(),
                done: true,
            }));
        }
        self.groups.insert(group, joined.len());
        self.members.extend(joined);
        Ok(None)
    }

    /// How many requests generate.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How long the next step takes, with the requests in it now.
    pub fn step_length(&self) -> Duration {
        shared_step(
            self.members
                .iter()
                .map(|member| member.pace.front().copied().unwrap_or_default()),
        )
    }

    /// Ends those whose client's deadline has passed by `now`; the groups
    /// that this ends.
    pub fn expire(&mut self, now: Instant) -> Vec<(Group, Emitted)> {
        self.leave(|member| member.deadline.is_some_and(|at| at <= now))
    }

    /// One step: the next token of every request, grouped; those that emit
    /// their last token leave.
    pub fn step(&mut self) -> Vec<(Group, Emitted)> {
        let together = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        let mut out: Vec<(Group, Emitted)> = Vec::new();
        // Each group's place in `out`.
        let mut places: HashMap<Group, usize> = HashMap::new();
        for member in &mut self.members {
            member.shared = member.shared.max(together);
            member.pace.pop_front();
            let mut token = member.live.next_token();
            if token.last {
                token.shared = member.shared;
            }
            match places.get(&member.group) {
                Some(&place) => out[place].1.tokens.push(token),
                None => {
                    places.insert(member.group, out.len());
                    let emitted = Emitted {
                        tokens: vec![token],
                        done: false,
                    };
                    out.push((member.group, emitted));
                }
            }
        }
        let groups = &mut self.groups;
        self.members.retain(|member| {
            let done = member.live.is_done();
            if done {
                uncount(groups, member.group);
            }
            !done
        });
        for (group, emitted) in &mut out {
            emitted.done = !self.groups.contains_key(group);
        }
        out
    }

    /// Stops a request (its client left); `Some` with its group's end when
    /// it was the group's last. `None` also when it was not generating.
    pub fn cancel(&mut self, group: Group, request_id: u64) -> Option<Emitted> {
        let ended =
            self.leave(|member| member.group == group && member.live.request_id() == request_id);
        ended.into_iter().next().map(|(_, emitted)| emitted)
    }

    /// Drops every request of a stream that ended.
    pub fn drop_stream(&mut self, stream: u64) {
        self.members.retain(|member| member.group.stream != stream);
        self.groups.retain(|group, _| group.stream != stream);
    }

    /// Whether a group is generating.
    pub fn has(&self, group: Group) -> bool {
        self.groups.contains_key(&group)
    }

    /// Removes the members `leaves` picks; the groups that this empties.
    fn leave(&mut self, leaves: impl Fn(&Member) -> bool) -> Vec<(Group, Emitted)> {
        let mut touched: Vec<Group> = Vec::new();
        let mut seen: HashSet<Group> = HashSet::new();
        let groups = &mut self.groups;
        self.members.retain(|member| {
            let gone = leaves(member);
            if gone {
                uncount(groups, member.group);
                if seen.insert(member.group) {
                    touched.push(member.group);
                }
            }
            !gone
        });
        touched
            .into_iter()
            .filter(|group| !self.has(*group))
            .map(|group| {
                (
                    group,
                    Emitted {
                        tokens: Vec::new(),
                        done: true,
                    },
                )
            })
            .collect()
    }
}

/// One request of `group` left.
fn uncount(groups: &mut HashMap<Group, usize>, group: Group) {
    if let Some(count) = groups.get_mut(&group) {
        *count -= 1;
        if *count == 0 {
            groups.remove(&group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choice;
    use horoscoper_proto::mesh::BatchItem;
    use rand::{SeedableRng, rngs::StdRng};

    use crate::corpus::sky_corpus as corpus;

    fn batch(batch_id: u64, prefixes: &[(u64, &str)]) -> Batch {
        Batch {
            batch_id,
            items: prefixes
                .iter()
                .map(|(request_id, prefix)| BatchItem {
                    request_id: *request_id,
                    prefix: prefix.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn group(batch_id: u64) -> Group {
        Group {
            stream: 1,
            batch_id,
        }
    }

    fn fixed(ms: u64) -> DelayRange {
        DelayRange {
            min: Duration::from_millis(ms),
            max: Duration::from_millis(ms),
        }
    }

    fn join(engine: &mut Engine, batch: &Batch, delays: &DelayRange) -> Option<Emitted> {
        let mut rng = StdRng::seed_from_u64(1);
        engine
            .join(
                group(batch.batch_id),
                batch,
                &corpus(),
                delays,
                &mut rng,
                |_| None,
            )
            .unwrap()
    }

    fn words(out: &[(Group, Emitted)]) -> Vec<(u64, Vec<&str>, bool)> {
        out.iter()
            .map(|(group, emitted)| {
                let words = emitted.tokens.iter().map(|t| t.text.as_str()).collect();
                (group.batch_id, words, emitted.done)
            })
            .collect()
    }

    #[test]
    fn a_request_that_joins_takes_part_from_the_next_step_and_a_freed_slot_is_reused() {
        let corpus = corpus();
        assert_eq!(&*choice::choose(&corpus, "hello").1, "Short one.");
        let mut engine = Engine::default();
        join(
            &mut engine,
            &batch(1, &[(10, "aries"), (11, "hello")]),
            &DelayRange::ZERO,
        );
        assert_eq!(words(&engine.step()), [(1, vec!["The ", "Short "], false)]);
        assert_eq!(words(&engine.step()), [(1, vec!["ARIES ", "one."], false)]);
        // "hello" left with its last token: its slot takes a newcomer.
        assert_eq!(engine.len(), 1);
        join(&mut engine, &batch(2, &[(20, "hello")]), &DelayRange::ZERO);
        assert_eq!(
            words(&engine.step()),
            [(1, vec!["sky "], false), (2, vec!["Short "], false)]
        );
        assert_eq!(
            words(&engine.step()),
            [(1, vec!["is "], false), (2, vec!["one."], true)]
        );
        assert_eq!(words(&engine.step()), [(1, vec!["wide."], true)]);
        assert!(engine.is_empty());
    }

    #[test]
    fn a_last_token_says_how_many_shared_a_step_with_it_at_most() {
        let mut engine = Engine::default();
        join(&mut engine, &batch(1, &[(10, "aries")]), &DelayRange::ZERO);
        engine.step();
        join(
            &mut engine,
            &batch(2, &[(20, "hello"), (21, "hello")]),
            &DelayRange::ZERO,
        );
        engine.step();
        let out = engine.step();
        let shared: Vec<(u64, u32)> = out
            .iter()
            .flat_map(|(_, emitted)| &emitted.tokens)
            .filter(|token| token.last)
            .map(|token| (token.request_id, token.shared))
            .collect();
        assert_eq!(shared, [(20, 3), (21, 3)]);
        engine.step();
        let last = engine.step();
        assert_eq!(last[0].1.tokens[0].shared, 3, "aries ran with both");
        assert!(!last[0].1.tokens[0].text.is_empty());
    }

    #[test]
    fn alone_a_request_keeps_the_pace_of_a_static_batch_of_one() {
        let delays = DelayRange {
            min: Duration::from_millis(500),
            max: Duration::from_millis(3000),
        };
        let mut engine = Engine::default();
        join(&mut engine, &batch(1, &[(10, "aries")]), &delays);
        let mut total = Duration::ZERO;
        while !engine.is_empty() {
            total += engine.step_length();
            engine.step();
        }
        let offsets = delays.offsets(5, &mut StdRng::seed_from_u64(1));
        assert_eq!(total, offsets[4], "the same draw as a static batch");
    }

    #[test]
    fn a_shared_step_lasts_the_mean_of_its_requests_steps() {
        let mut engine = Engine::default();
        // "Short one." in 200 ms, "The ARIES sky is wide." in 1 s.
        join(&mut engine, &batch(1, &[(10, "hello")]), &fixed(200));
        let alone = engine.step_length();
        join(&mut engine, &batch(2, &[(20, "aries")]), &fixed(1000));
        let together = engine.step_length();
        let aries = {
            let mut only = Engine::default();
            join(&mut only, &batch(2, &[(20, "aries")]), &fixed(1000));
            only.step_length()
        };
        assert_eq!(together, (alone + aries) / 2);
    }

    #[test]
    fn cancellation_and_deadlines_free_slots_and_end_groups() {
        let mut engine = Engine::default();
        join(
            &mut engine,
            &batch(1, &[(10, "aries"), (11, "aries")]),
            &DelayRange::ZERO,
        );
        assert_eq!(engine.cancel(group(1), 10), None, "its group goes on");
        assert_eq!(engine.cancel(group(1), 10), None, "not generating");
        assert_eq!(
            engine.cancel(group(1), 11),
            Some(Emitted {
                tokens: vec![],
                done: true
            })
        );
        assert!(engine.is_empty());

        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let b = batch(2, &[(20, "aries"), (21, "aries")]);
        engine
            .join(group(2), &b, &corpus(), &DelayRange::ZERO, &mut rng, |id| {
                (id == 20).then_some(now)
            })
            .unwrap();
        assert!(engine.expire(now).is_empty(), "21 goes on");
        assert_eq!(engine.len(), 1);
        assert_eq!(words(&engine.step()), [(2, vec!["The "], false)]);
    }

    #[test]
    fn a_group_with_nothing_left_is_done_at_once_and_bad_groups_are_refused() {
        let mut engine = Engine::default();
        let mut resumed = batch(1, &[(10, "aries")]);
        resumed.items[0].delivered = 5;
        assert_eq!(
            join(&mut engine, &resumed, &DelayRange::ZERO),
            Some(Emitted {
                tokens: vec![],
                done: true
            })
        );
        let mut rng = StdRng::seed_from_u64(1);
        let corpus = corpus();
        let mut refuse = |b: &Batch| {
            engine.join(
                group(b.batch_id),
                b,
                &corpus,
                &DelayRange::ZERO,
                &mut rng,
                |_| None,
            )
        };
        assert!(matches!(refuse(&batch(3, &[])), Err(Error::EmptyBatch(3))));
        assert!(matches!(
            refuse(&batch(4, &[(1, "a"), (1, "b")])),
            Err(Error::DuplicateRequest { request_id: 1, .. })
        ));
        refuse(&batch(5, &[(1, "a")])).unwrap();
        assert!(matches!(
            refuse(&batch(5, &[(2, "a")])),
            Err(Error::DuplicateBatch(5))
        ));
    }

    #[test]
    fn a_stream_that_ends_takes_its_requests_along() {
        let mut engine = Engine::default();
        join(&mut engine, &batch(1, &[(10, "aries")]), &DelayRange::ZERO);
        let mut rng = StdRng::seed_from_u64(1);
        let other = Group {
            stream: 2,
            batch_id: 1,
        };
        engine
            .join(
                other,
                &batch(1, &[(10, "aries")]),
                &corpus(),
                &DelayRange::ZERO,
                &mut rng,
                |_| None,
            )
            .unwrap();
        assert_eq!(engine.len(), 2, "the same ids from another stream");
        engine.drop_stream(2);
        assert_eq!(engine.len(), 1);
        assert!(engine.has(group(1)));
    }
}
