//! What a standby keeps, and what it publishes when it becomes active (docs/ha.md).

use std::collections::VecDeque;
use std::fmt;

use crate::OutputId;

/// The last `numbufferedmsgs` output blocks of a standby instance, each with its [`OutputId`],
/// and the takeover decision made from them.
///
/// Every output block the instance produces while it does not publish (standby, or role
/// unknown) must be [`push`](Self::push)ed, in increasing ID order; the oldest are dropped once
/// `capacity` blocks are held. The buffer remembers the newest ID it no longer holds, so
/// [`takeover`](Self::takeover) knows exactly whether it still reaches back to the last block on
/// the topic.
#[derive(Debug, Clone)]
pub struct StandbyBuffer<T> {
    capacity: usize,
    blocks: VecDeque<(OutputId, T)>,
    /// Newest ID ever pushed.
    newest: Option<OutputId>,
    /// Newest ID pushed that is no longer held (dropped for capacity or handed out at takeover).
    newest_gone: Option<OutputId>,
    /// Set by a takeover of a lagging instance: outputs up to this ID are already on the topic.
    hold: Option<OutputId>,
    dropped: u64,
    gaps: u64,
}

/// A block pushed out of order (its ID is not greater than every ID pushed before).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output block {id} is not after {newest}, the newest block buffered: blocks must come in increasing ID order")]
pub struct OutOfOrder {
    pub id: OutputId,
    pub newest: OutputId,
}

/// What a new active instance publishes, decided from its buffer and the last output ID on
/// the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover<T> {
    /// Publish these blocks, in order, then live output. Empty when the topic already holds
    /// everything this instance produced.
    Publish(Vec<(OutputId, T)>),
    /// The buffer does not reach back to the last block on the topic: output blocks with IDs
    /// strictly between `missing_from` (the last ID on the topic; `None`: the topic is empty)
    /// and `missing_to` (the first ID this instance can still publish) may never reach the
    /// topic. `publish` is what the buffer still has (publishing it is the default; the caller
    /// decides). Already logged as an error and counted in [`StandbyBuffer::gaps`].
    Gap {
        missing_from: Option<OutputId>,
        missing_to: OutputId,
        publish: Vec<(OutputId, T)>,
    },
    /// This instance lags behind the topic: publish nothing until it produces IDs greater than
    /// `until` ([`StandbyBuffer::release`] says which outputs to publish).
    Hold { until: OutputId },
}

impl<T> Takeover<T> {
    /// The blocks to publish now (none for [`Takeover::Hold`]).
    pub fn into_blocks(self) -> Vec<(OutputId, T)> {
        match self {
            Takeover::Publish(blocks)
            | Takeover::Gap {
                publish: blocks, ..
            } => blocks,
            Takeover::Hold { .. } => Vec::new(),
        }
    }
}

/// A gap's range for messages: `after 4.1 and before 7.0`.
pub struct GapRange(pub Option<OutputId>, pub OutputId);

impl fmt::Display for GapRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(from) => write!(f, "after {from} and before {}", self.1),
            None => write!(f, "before {} (the output topic is empty)", self.1),
        }
    }
}

impl<T> StandbyBuffer<T> {
    /// A buffer that holds at most `capacity` blocks (`numbufferedmsgs`; 0 keeps none).
    pub fn new(capacity: usize) -> StandbyBuffer<T> {
        StandbyBuffer {
            capacity,
            blocks: VecDeque::with_capacity(capacity.min(4096)),
            newest: None,
            newest_gone: None,
            hold: None,
            dropped: 0,
            gaps: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks held now.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// ID of the oldest block held.
    pub fn oldest(&self) -> Option<OutputId> {
        self.blocks.front().map(|b| b.0)
    }

    /// ID of the newest block ever pushed (held or not).
    pub fn newest(&self) -> Option<OutputId> {
        self.newest
    }

    /// The blocks held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &(OutputId, T)> {
        self.blocks.iter()
    }

    /// Blocks dropped because the buffer was full (a metric).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takeovers that found a gap (a metric).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// The ID a lagging new active must pass before it publishes (after [`Takeover::Hold`]).
    pub fn holding(&self) -> Option<OutputId> {
        self.hold
    }

    /// Keeps `block`, dropping the oldest block if the buffer is full. IDs must increase.
    pub fn push(&mut self, id: OutputId, block: T) -> Result<(), OutOfOrder> {
        if let Some(newest) = self.newest {
            if id <= newest {
                return Err(OutOfOrder { id, newest });
            }
        }
        self.newest = Some(id);
        if self.capacity == 0 {
            self.newest_gone = Some(id);
            self.dropped += 1;
            return Ok(());
        }
        if self.blocks.len() == self.capacity {
            if let Some((old, _)) = self.blocks.pop_front() {
                self.newest_gone = Some(old);
                self.dropped += 1;
            }
        }
        self.blocks.push_back((id, block));
        Ok(())
    }

    /// Decides what this instance publishes on becoming active, given the output ID of the last
    /// record on the output topic (`None`: the topic is empty). Empties the buffer.
    ///
    /// | topic ends at | decision |
    /// |---|---|
    /// | nothing (empty topic) | publish everything held (a [`Takeover::Gap`] if blocks were already dropped) |
    /// | an ID the buffer reaches back to | publish exactly the blocks after it |
    /// | an ID older than the buffer reaches | [`Takeover::Gap`]: publish everything held, report the range |
    /// | the newest ID produced | publish nothing (caught up) |
    /// | an ID newer than anything produced | [`Takeover::Hold`] until output passes it |
    pub fn takeover(&mut self, last_published: Option<OutputId>) -> Takeover<T> {
        self.hold = None;
        let Some(newest) = self.newest else {
            // Nothing produced yet.
            return match last_published {
                None => Takeover::Publish(Vec::new()),
                Some(until) => self.hold_until(until),
            };
        };
        if let Some(m) = last_published {
            if m >= newest {
                self.drain_all();
                return if m == newest {
                    Takeover::Publish(Vec::new())
                } else {
                    self.hold_until(m)
                };
            }
        }
        // The buffer reaches back to `last_published` when everything after it is still held:
        // every block it no longer holds is at or before it.
        let reaches_back = match (self.newest_gone, last_published) {
            (None, None) => true,
            (Some(_), None) => false,
            (Some(gone), Some(m)) => gone <= m,
            (None, Some(m)) => self.oldest().is_some_and(|oldest| oldest <= m),
        };
        let after = |id: &OutputId| last_published.is_none_or(|m| *id > m);
        let publish: Vec<(OutputId, T)> = self
            .drain_all()
            .into_iter()
            .filter(|(id, _)| after(id))
            .collect();
        if reaches_back {
            return Takeover::Publish(publish);
        }
        let missing_to = match publish.first() {
            Some((first, _)) => *first,
            // Capacity 0: the next ID this instance can publish comes after the newest produced.
            None => newest.next(),
        };
        self.gaps += 1;
        tracing::error!(target: "esp.failover",
            "Hot failover gap: output {} is lost; the standby buffer (numbufferedmsgs={}) does not reach \
             back to the last output on the topic; publishing the {} buffered block(s) from {}",
            GapRange(last_published, missing_to),
            self.capacity,
            publish.len(),
            missing_to,
        );
        Takeover::Gap {
            missing_from: last_published,
            missing_to,
            publish,
        }
    }

    /// After a [`Takeover::Hold`], whether output block `id` is to be published: `false` for IDs
    /// up to the hold (already on the topic: drop them), `true` from the first ID after it (and
    /// for every ID when there is no hold).
    pub fn release(&mut self, id: OutputId) -> bool {
        match self.hold {
            Some(until) if id <= until => false,
            Some(_) => {
                self.hold = None;
                true
            }
            None => true,
        }
    }

    fn hold_until(&mut self, until: OutputId) -> Takeover<T> {
        self.hold = Some(until);
        tracing::warn!(target: "esp.failover",
            "Hot failover: this instance lags behind the output topic (last output {until}, newest produced here {}); \
             publishing nothing until its output passes {until}",
            self.newest.map_or_else(|| "none".to_string(), |n| n.to_string()),
        );
        Takeover::Hold { until }
    }

    fn drain_all(&mut self) -> Vec<(OutputId, T)> {
        self.newest_gone = self.newest_gone.max(self.newest);
        self.blocks.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(input: u64, seq: u32) -> OutputId {
        OutputId::new(input, seq)
    }

    /// A buffer of `cap` fed with IDs 1.0 ..= n.0 (payload: the input number).
    fn fed(cap: usize, n: u64) -> StandbyBuffer<u64> {
        let mut b = StandbyBuffer::new(cap);
        for i in 1..=n {
            b.push(id(i, 0), i).unwrap();
        }
        b
    }

    fn ids(blocks: &[(OutputId, u64)]) -> Vec<u64> {
        blocks.iter().map(|(i, _)| i.input).collect()
    }

    #[test]
    fn keeps_the_last_capacity_blocks() {
        let b = fed(3, 5);
        assert_eq!(b.len(), 3);
        assert_eq!(b.oldest(), Some(id(3, 0)));
        assert_eq!(b.newest(), Some(id(5, 0)));
        assert_eq!(b.dropped(), 2);
        assert_eq!(b.iter().map(|(_, v)| *v).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn rejects_out_of_order_and_duplicate_ids() {
        let mut b = fed(3, 2);
        assert_eq!(
            b.push(id(2, 0), 9),
            Err(OutOfOrder {
                id: id(2, 0),
                newest: id(2, 0)
            })
        );
        assert_eq!(
            b.push(id(1, 5), 9),
            Err(OutOfOrder {
                id: id(1, 5),
                newest: id(2, 0)
            })
        );
        assert_eq!(b.len(), 2);
        b.push(id(2, 1), 9).unwrap();
        assert!(b
            .push(id(2, 1), 9)
            .unwrap_err()
            .to_string()
            .contains("increasing ID order"));
    }

    #[test]
    fn empty_topic_publishes_everything_buffered() {
        let mut b = fed(10, 4);
        assert_eq!(ids(&b.takeover(None).into_blocks()), vec![1, 2, 3, 4]);
        assert!(b.is_empty());
        assert_eq!(b.gaps(), 0);
    }

    #[test]
    fn empty_topic_after_drops_is_a_gap() {
        let mut b = fed(2, 4);
        match b.takeover(None) {
            Takeover::Gap {
                missing_from,
                missing_to,
                publish,
            } => {
                assert_eq!(missing_from, None);
                assert_eq!(missing_to, id(3, 0));
                assert_eq!(ids(&publish), vec![3, 4]);
            }
            t => panic!("expected a gap, got {t:?}"),
        }
        assert_eq!(b.gaps(), 1);
    }

    #[test]
    fn inside_the_buffer_publishes_exactly_what_follows() {
        for m in 1..=5 {
            let mut b = fed(5, 5);
            let t = b.takeover(Some(id(m, 0)));
            let expected: Vec<u64> = (m + 1..=5).collect();
            assert_eq!(
                t,
                Takeover::Publish(expected.iter().map(|&i| (id(i, 0), i)).collect()),
                "m={m}"
            );
            assert_eq!(b.gaps(), 0);
        }
    }

    #[test]
    fn inside_with_several_outputs_per_input() {
        let mut b = StandbyBuffer::new(10);
        for (i, q) in [(7, 0), (7, 1), (7, 2), (9, 0), (9, 1)] {
            b.push(id(i, q), (i, q)).unwrap();
        }
        let t = b.takeover(Some(id(7, 1)));
        assert_eq!(
            t.into_blocks().iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![id(7, 2), id(9, 0), id(9, 1)]
        );
    }

    #[test]
    fn last_published_between_buffered_ids_publishes_the_later_ones() {
        // An ID this instance never produced (e.g. 4.5) but within its range: no gap, the
        // blocks after it are published.
        let mut b = StandbyBuffer::new(10);
        for i in [2u64, 4, 6, 8] {
            b.push(id(i, 0), i).unwrap();
        }
        assert_eq!(ids(&b.takeover(Some(id(4, 5))).into_blocks()), vec![6, 8]);
        assert_eq!(b.gaps(), 0);
    }

    #[test]
    fn last_published_is_the_newest_dropped_block_no_gap() {
        // Buffer holds 3..=5; 2 was dropped; the topic ends at 2: nothing is missing.
        let mut b = fed(3, 5);
        assert_eq!(
            b.takeover(Some(id(2, 0))),
            Takeover::Publish(vec![(id(3, 0), 3), (id(4, 0), 4), (id(5, 0), 5)])
        );
        assert_eq!(b.gaps(), 0);
    }

    #[test]
    fn older_than_the_buffer_reaches_is_a_gap() {
        let mut b = fed(3, 10); // holds 8..=10; 1..=7 dropped
        match b.takeover(Some(id(4, 0))) {
            Takeover::Gap {
                missing_from,
                missing_to,
                publish,
            } => {
                assert_eq!(missing_from, Some(id(4, 0)));
                assert_eq!(missing_to, id(8, 0));
                assert_eq!(ids(&publish), vec![8, 9, 10]);
            }
            t => panic!("expected a gap, got {t:?}"),
        }
        assert_eq!(b.gaps(), 1);
        assert_eq!(
            GapRange(Some(id(4, 0)), id(8, 0)).to_string(),
            "after 4.0 and before 8.0"
        );
        assert_eq!(
            GapRange(None, id(8, 0)).to_string(),
            "before 8.0 (the output topic is empty)"
        );
    }

    #[test]
    fn a_late_started_instance_that_never_saw_the_last_id_reports_a_gap() {
        // Nothing dropped, but the first block held (20.0) is after the topic's end (10.0):
        // this instance cannot tell whether output between them existed: loud, not silent.
        let mut b = StandbyBuffer::new(10);
        b.push(id(20, 0), 20).unwrap();
        b.push(id(21, 0), 21).unwrap();
        match b.takeover(Some(id(10, 0))) {
            Takeover::Gap {
                missing_from,
                missing_to,
                publish,
            } => {
                assert_eq!((missing_from, missing_to), (Some(id(10, 0)), id(20, 0)));
                assert_eq!(ids(&publish), vec![20, 21]);
            }
            t => panic!("expected a gap, got {t:?}"),
        }
    }

    #[test]
    fn caught_up_publishes_nothing() {
        let mut b = fed(3, 5);
        assert_eq!(b.takeover(Some(id(5, 0))), Takeover::Publish(vec![]));
        assert_eq!(b.holding(), None);
        assert!(b.release(id(6, 0)));
    }

    #[test]
    fn lagging_instance_holds_until_it_passes_the_topic() {
        let mut b = fed(3, 5);
        assert_eq!(
            b.takeover(Some(id(8, 1))),
            Takeover::Hold { until: id(8, 1) }
        );
        assert!(b.is_empty(), "everything held is already on the topic");
        assert_eq!(b.holding(), Some(id(8, 1)));
        assert!(!b.release(id(6, 0)));
        assert!(!b.release(id(8, 0)));
        assert!(!b.release(id(8, 1)));
        assert!(b.release(id(8, 2)));
        assert_eq!(b.holding(), None);
        assert!(b.release(id(9, 0)));
        assert_eq!(b.gaps(), 0);
    }

    #[test]
    fn nothing_produced_yet() {
        let mut b: StandbyBuffer<u64> = StandbyBuffer::new(3);
        assert_eq!(b.takeover(None), Takeover::Publish(vec![]));
        assert_eq!(
            b.takeover(Some(id(3, 0))),
            Takeover::Hold { until: id(3, 0) }
        );
        assert!(!b.release(id(3, 0)));
        assert!(b.release(id(4, 0)));
    }

    #[test]
    fn capacity_zero_keeps_nothing_and_knows_what_it_dropped() {
        let mut b = fed(0, 3);
        assert_eq!(b.len(), 0);
        assert_eq!(b.dropped(), 3);
        assert_eq!(
            b.clone().takeover(Some(id(3, 0))),
            Takeover::Publish(vec![])
        );
        match b.takeover(Some(id(1, 0))) {
            Takeover::Gap {
                missing_from,
                missing_to,
                publish,
            } => {
                assert_eq!((missing_from, missing_to), (Some(id(1, 0)), id(3, 1)));
                assert!(publish.is_empty());
            }
            t => panic!("expected a gap, got {t:?}"),
        }
    }

    #[test]
    fn back_to_standby_after_a_takeover_continues_without_false_gaps() {
        // Takeover at 5, then (as active) 6..=7 were published live, then standby again,
        // buffering from 8. The next takeover finds the topic at 7: nothing missing.
        let mut b = fed(3, 5);
        assert_eq!(ids(&b.takeover(Some(id(3, 0))).into_blocks()), vec![4, 5]);
        for i in 8..=9 {
            b.push(id(i, 0), i).unwrap();
        }
        assert_eq!(ids(&b.takeover(Some(id(7, 0))).into_blocks()), vec![8, 9]);
        assert_eq!(b.gaps(), 0);
    }

    #[test]
    fn no_gap_and_no_duplicate_for_every_cut() {
        // Exhaustive over small sizes: whatever the topic's end inside what the buffer
        // reaches, topic + published is exactly 1..=n with no duplicate.
        for cap in 1..6usize {
            for n in 0..8u64 {
                let first_held = n.saturating_sub(cap as u64) + 1;
                for m in (first_held - 1)..=n {
                    let mut b = fed(cap, n);
                    let last = (m > 0).then(|| id(m, 0));
                    let t = b.takeover(last);
                    assert!(
                        matches!(t, Takeover::Publish(_)),
                        "cap={cap} n={n} m={m}: {t:?}"
                    );
                    let mut all: Vec<u64> = (1..=m).collect();
                    all.extend(ids(&t.into_blocks()));
                    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "cap={cap} n={n} m={m}");
                }
            }
        }
    }
}
