//! The commit tracker: which Kafka positions may be committed, and with
//! which watermark.
//!
//! Every epoch that read messages (or raised the watermark) records the
//! source's positions after it and the watermark it was processed with.
//! An epoch whose rows went to the sink stays unacknowledged until the
//! sink's driver acknowledges it. Positions of epoch `e` are committable
//! once every worker has acknowledged every epoch up to `e`, since rows
//! derived from a worker's messages may be written by any worker; only
//! the newest committable positions are committed.

use std::collections::VecDeque;

use revpulse_connectors::kafka::Offsets;
use revpulse_pipelines::retention::NO_WATERMARK;
use revpulse_pipelines::time::Micros;

#[derive(Debug)]
pub struct CommitTracker {
    /// Epochs sent to the sink and not yet acknowledged, oldest first.
    unacked: VecDeque<u64>,
    /// Source positions after each recorded epoch, with the watermark it
    /// was processed with, oldest first.
    positions: VecDeque<(u64, Offsets, Micros)>,
    recorded_watermark: Micros,
    /// Committable positions whose commit failed, until newer ones replace them.
    pending: Option<(Offsets, Option<Micros>)>,
}

impl CommitTracker {
    /// `initial_watermark`: the one the previous run committed.
    pub fn new(initial_watermark: Micros) -> CommitTracker {
        CommitTracker {
            unacked: VecDeque::new(),
            positions: VecDeque::new(),
            recorded_watermark: initial_watermark,
            pending: None,
        }
    }

    /// Epoch `epoch` completed: records `positions` if it read messages or
    /// its watermark `applied` rose (a risen watermark is committed too,
    /// even with no new message).
    pub fn record(&mut self, epoch: u64, read: bool, positions: &Offsets, applied: Micros) {
        if read || self.recorded_watermark < applied {
            self.positions.push_back((epoch, positions.clone(), applied));
            self.recorded_watermark = applied;
        }
    }

    /// Epoch `epoch`'s rows went to the sink.
    pub fn sent(&mut self, epoch: u64) {
        self.unacked.push_back(epoch);
    }

    /// The sink acknowledged every epoch up to `acked` (acks are in order).
    pub fn acknowledge(&mut self, acked: u64) {
        while self.unacked.front().is_some_and(|u| *u <= acked) {
            self.unacked.pop_front();
        }
    }

    /// The oldest epoch this worker's sink has not acknowledged, or `next`
    /// when it has acknowledged everything.
    pub fn oldest_unacked(&self, next: u64) -> u64 {
        self.unacked.front().copied().unwrap_or(next)
    }

    pub fn all_acknowledged(&self) -> bool {
        self.unacked.is_empty()
    }

    /// The newest positions of an epoch below `all_acked_below` (every
    /// worker acknowledged it), with the watermark to commit with them
    /// (`None` without retention: nothing raises it). Older ones are
    /// dropped; without newer ones, those of a failed commit come back.
    pub fn committable(&mut self, all_acked_below: u64) -> Option<(Offsets, Option<Micros>)> {
        let mut newest = None;
        while self.positions.front().is_some_and(|(e, _, _)| *e < all_acked_below) {
            newest = self.positions.pop_front();
        }
        match newest {
            Some((_, offsets, w)) => {
                self.pending = None;
                Some((offsets, (w != NO_WATERMARK).then_some(w)))
            }
            None => self.pending.take(),
        }
    }

    /// The commit of what [`Self::committable`] returned failed: offer it
    /// again unless newer positions become committable first.
    pub fn commit_failed(&mut self, offsets: Offsets, watermark: Option<Micros>) {
        self.pending = Some((offsets, watermark));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Offsets {
        Offsets::from([(("payments".to_owned(), 0), offset)])
    }

    #[test]
    fn positions_wait_for_every_epoch_up_to_theirs() {
        let mut t = CommitTracker::new(NO_WATERMARK);
        t.record(1, true, &at(10), NO_WATERMARK);
        t.sent(1);
        t.record(2, true, &at(20), NO_WATERMARK);
        t.sent(2);
        assert_eq!(t.oldest_unacked(3), 1);
        // No worker has acknowledged epoch 1 yet.
        assert_eq!(t.committable(1), None);
        t.acknowledge(1);
        assert_eq!(t.oldest_unacked(3), 2);
        assert_eq!(t.committable(2), Some((at(10), None)));
        t.acknowledge(2);
        assert!(t.all_acknowledged());
        assert_eq!(t.committable(3), Some((at(20), None)));
        assert_eq!(t.committable(3), None);
    }

    #[test]
    fn only_the_newest_committable_positions_are_committed() {
        let mut t = CommitTracker::new(NO_WATERMARK);
        for e in 1..=3 {
            t.record(e, true, &at(e as i64), NO_WATERMARK);
        }
        assert_eq!(t.committable(4), Some((at(3), None)));
    }

    #[test]
    fn a_failed_commit_is_offered_again_until_newer_positions_replace_it() {
        let mut t = CommitTracker::new(NO_WATERMARK);
        t.record(1, true, &at(1), NO_WATERMARK);
        let (offsets, w) = t.committable(2).expect("committable");
        t.commit_failed(offsets, w);
        assert_eq!(t.committable(2), Some((at(1), None)));
        t.commit_failed(at(1), None);
        t.record(2, true, &at(2), NO_WATERMARK);
        assert_eq!(t.committable(3), Some((at(2), None)));
        assert_eq!(t.committable(3), None);
    }

    #[test]
    fn a_risen_watermark_is_recorded_without_messages() {
        let mut t = CommitTracker::new(5);
        t.record(1, false, &at(7), 5);
        assert_eq!(t.committable(2), None);
        t.record(2, false, &at(7), 9);
        assert_eq!(t.committable(3), Some((at(7), Some(9))));
    }
}
