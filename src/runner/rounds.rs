//! Checkpoint rounds of a multi-process cluster (docs/guarantees.md,
//! "Checkpoints of a cluster").
//!
//! A process checkpoints only its own workers' keys and partitions, so a
//! restart is exact only if every process resumes from a cut at the same
//! epoch. Timely's progress tracking is what the processes share, so the
//! rounds are [`Progress`] agreements, a two-phase commit:
//! - **propose**: the leader (global worker 0) advances `proposal` to an
//!   epoch every worker has acknowledged; the others closed theirs, so its
//!   least is the leader's. A new epoch there is a new round.
//! - **stage**: each process cuts exactly below that epoch (even if nothing
//!   changed) and stages the cut beside its checkpoint, numbered one past
//!   the last; its workers advance `staged` past that number.
//! - **apply**: once `staged`'s least passes the number, every process has
//!   staged it, and each makes its staged cut its checkpoint. The leader
//!   proposes the next round only after applying this one, so no process
//!   can miss a round.
//!
//! A start first agrees which cut is the checkpoint (`boot`): the newest any
//! process applied. A process that applied one fewer has that cut staged
//! (nobody applies before everyone staged), applies it, and one that staged
//! a newer cut discards it. Anything else — a lost state directory, a
//! process that failed while the others checkpointed (its closed inputs no
//! longer hold `staged` back) — leaves cuts that no longer meet, and every
//! process refuses to start until started with `--rebuild`.

use std::time::{Duration, Instant};

use super::checkpoint::Checkpointer;
use super::progress::Progress;

/// One worker's part in the rounds.
pub struct Rounds {
    /// The start's agreement: `u64::MAX - 1 - checkpointed` (so its least
    /// gives the newest) and `reachable + 1`; 0 until a worker reported.
    /// Open for the whole run: a closed input would change the least that
    /// a slower peer reads.
    newest: Progress,
    reachable: Progress,
    proposal: Progress,
    staged: Progress,
    /// At a stop: `1 +` the epoch below which this worker's process has
    /// everything handed over, reported once, so the last round's epoch
    /// (the least) is one every process can cut at.
    through: Progress,
    leader: bool,
    /// The leader's last proposal: its epoch and the cut it becomes.
    proposed: Option<(u64, u64)>,
}

impl Rounds {
    pub fn new(worker: &mut timely::worker::Worker) -> Rounds {
        let leader = worker.index() == 0;
        let mut proposal = Progress::new(worker);
        if !leader {
            proposal.close();
        }
        Rounds {
            newest: Progress::new(worker),
            reachable: Progress::new(worker),
            proposal,
            staged: Progress::new(worker),
            through: Progress::new(worker),
            leader,
            proposed: None,
        }
    }

    /// Reports this process's (checkpointed, reachable) cuts and returns the
    /// cluster's (newest checkpointed, oldest reachable), once every worker
    /// has reported.
    pub fn agree(&mut self, worker: &mut timely::worker::Worker, (checkpointed, reachable): (u64, u64)) -> (u64, u64) {
        self.newest.advance_to(u64::MAX - 1 - checkpointed);
        self.reachable.advance_to(reachable + 1);
        worker.step_or_park_while(Some(Duration::from_millis(1)), || {
            self.newest.least() == 0 || self.reachable.least() == 0
        });
        (u64::MAX - 1 - self.newest.least(), self.reachable.least() - 1)
    }

    /// One turn: reports what this process staged, applies what every
    /// process staged, cuts a proposed round, and (leader) proposes the next
    /// once the last is applied and the interval has passed; `acked` is the
    /// epoch below which every worker has acknowledged everything.
    pub fn turn(&mut self, cp: &Checkpointer, acked: u64) {
        self.follow(cp);
        let Some(state) = cp.round_state() else { return };
        let last_applied = self.proposed.is_none_or(|(_, seq)| state.applied >= seq);
        if self.leader && last_applied && state.idle && cp.round_due() && acked != u64::MAX {
            self.propose(cp, acked, state.applied);
        }
    }

    fn follow(&mut self, cp: &Checkpointer) {
        let Some(state) = cp.round_state() else { return };
        self.staged.advance_to(state.staged + 1);
        let at = self.proposal.least();
        // Once the leader closed `proposal` (a stop), a process that stops
        // early has closed its `staged` input too, which no longer holds the
        // least back: apply nothing then. A cut staged everywhere but not
        // applied is applied at the next start.
        if at == u64::MAX {
            return;
        }
        if state.staged > state.applied && self.staged.least() > state.staged {
            cp.apply(state.staged);
        }
        if at != 0 {
            cp.propose(at);
        }
    }

    fn propose(&mut self, cp: &Checkpointer, at: u64, applied: u64) {
        // 0 is every input's start: not a proposal anyone could tell apart.
        if at == 0 || self.proposed.is_some_and(|(last, _)| at <= last) {
            return;
        }
        self.proposal.advance_to(at);
        self.proposed = Some((at, applied + 1));
        cp.proposed();
    }

    /// At a clean stop, after every worker acknowledged everything: a last
    /// round at the least epoch every worker has handed over (`refresh`
    /// hands this worker's remaining epochs over; it reports once its
    /// upsert log is complete, or at the deadline), then the leader closes
    /// `proposal`; followers wait for that — also when their own writes
    /// failed, so that their open `staged` input keeps the others from
    /// applying a cut they did not stage. Gives up after `within`.
    pub fn finish(
        &mut self,
        worker: &mut timely::worker::Worker,
        (cp, local): (&Checkpointer, usize),
        within: Duration,
        mut refresh: impl FnMut(),
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            refresh();
            if cp.worker_through(local) == u64::MAX || Instant::now() >= deadline {
                break;
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        self.through.advance_to(cp.worker_through(local).saturating_add(1));
        let mut last = None;
        let done = loop {
            refresh();
            self.follow(cp);
            let Some(state) = cp.round_state() else {
                if self.proposal.all_closed() || Instant::now() >= deadline {
                    break false;
                }
                worker.step_or_park(Some(Duration::from_millis(1)));
                continue;
            };
            let through = self.through.least();
            if self.leader {
                let applied = self.proposed.is_none_or(|(_, seq)| state.applied >= seq);
                match last {
                    None if applied && state.idle && through != 0 => {
                        // Nothing new since the last round: it is the last.
                        let at = (through - 1).min(u64::MAX - 1);
                        if self.proposed.is_some_and(|(p, _)| p >= at) || at == 0 {
                            break true;
                        }
                        self.propose(cp, at, state.applied);
                        last = self.proposed.map(|(_, seq)| seq);
                    }
                    Some(seq) if state.applied >= seq => break true,
                    _ => {}
                }
            } else if self.proposal.least() == u64::MAX && state.idle {
                break true;
            }
            if Instant::now() >= deadline {
                tracing::debug!(
                    ?state,
                    through,
                    proposal = self.proposal.least(),
                    staged = self.staged.least(),
                    local = cp.worker_through(local),
                    "last round timed out"
                );
                break false;
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
        };
        self.proposal.close();
        done
    }
}
