//! The reconciler: what a start owes to what the previous run left behind.
//!
//! - **State restore**: with retention, the retention state rows that the
//!   committed watermark covers are taken back into the dataflow, and those
//!   written after the last commit (or superseded) are deleted in the
//!   first batch, before anything is committed ([`restorable`]).
//! - **Catch-up**: the dataflow starts empty (or from a checkpoint) and
//!   re-reads every partition from its start position (docs/guarantees.md).
//!   ClickHouse's live keys are listed while the state is restored and
//!   first computed, and the listing is complete before this run writes. Keys ClickHouse holds live rows for that the
//!   rebuilt state never touched are stale once every worker has read up
//!   to its start-up high watermarks, and two epochs later (a peer may be
//!   one epoch ahead), so every row of the rebuilt state has reached its
//!   owner. They are deleted then, except rows of closed periods and closed
//!   subjects, which are final (retention).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::kafka::{KafkaSource, Offsets};
use revpulse_pipelines::dataflow::row_owner;
use revpulse_pipelines::retention::{
    evidence_life, evidence_marker, finals, restorable, Finals, Restorable, NO_WATERMARK,
};
use revpulse_pipelines::row::{RowKey, RowVals, Table};
use revpulse_pipelines::subject::{key_subject, SubjectKey, SUBJECT_TABLES};
use revpulse_pipelines::time::{format_micros, Micros};

use super::progress::Progress;

/// What the previous run left behind, as one worker takes it back.
#[derive(Default)]
pub struct TakenBack {
    /// Committed offsets of every input partition (with retention only):
    /// `too_late` messages below them were handled by an earlier run.
    pub committed: Offsets,
    /// The watermark committed with them ([`NO_WATERMARK`] if none).
    pub watermark: Micros,
    /// Retention state rows to take back (worker 0 hands them over).
    pub restored: Vec<(RowKey, RowVals)>,
    /// Retention state rows this worker owns that must go before anything
    /// is committed.
    pub stale: Vec<RowKey>,
    /// Every retention state row's key, as read at start (with retention).
    pub state_keys: Option<Vec<RowKey>>,
    /// Subjects whose untouched rows stay ([`finals`]).
    pub finals: Finals,
}

impl TakenBack {
    /// Nothing to take back: retention is off.
    pub fn nothing() -> TakenBack {
        TakenBack { watermark: NO_WATERMARK, ..TakenBack::default() }
    }

    /// Reads the group's committed offsets and watermark (or takes those
    /// of the checkpoint the run resumes from) and the retention state
    /// tables, and splits the state into what to restore and what to
    /// delete (`index` of `peers`: this worker's share).
    pub fn read(
        source: &KafkaSource,
        sink: &ClickHouseSink,
        rt: &tokio::runtime::Handle,
        index: usize,
        peers: usize,
        checkpoint: Option<(&Offsets, Micros)>,
    ) -> anyhow::Result<TakenBack> {
        let (committed, watermark) = match checkpoint {
            Some((positions, watermark)) => (positions.clone(), watermark),
            None => {
                let (committed, watermark) = source
                    .committed(Duration::from_secs(30))
                    .context("reading the group's committed offsets and watermark (retention)")?;
                (committed, watermark.unwrap_or(NO_WATERMARK))
            }
        };
        if watermark != NO_WATERMARK {
            tracing::info!(worker = index, watermark = %format_micros(watermark), "retention: periods closed by the previous run stay closed");
        }
        let mut rows = Vec::new();
        for table in revpulse_pipelines::family::state_tables() {
            let state = rt
                .block_on(sink.state_rows(table))
                .with_context(|| format!("reading retention state from {}", table.name()))?;
            rows.extend(state);
        }
        let finals = finals(&rows, watermark);
        let keys: Vec<RowKey> = rows.iter().map(|(k, _)| k.clone()).collect();
        let Restorable { restore, stale, kept } = restorable(rows, watermark);
        // Kept rows are neither rewritten nor stale.
        let kept: HashSet<RowKey> = kept.into_iter().collect();
        let state_keys = Some(keys.into_iter().filter(|k| !kept.contains(k)).collect());
        let stale: Vec<RowKey> = stale.into_iter().filter(|k| row_owner(k, peers) == index).collect();
        let restored = if index == 0 { restore } else { Vec::new() };
        if !restored.is_empty() || !stale.is_empty() {
            tracing::info!(
                worker = index,
                restored = restored.len(),
                stale = stale.len(),
                "retention: state taken back"
            );
        }
        Ok(TakenBack { committed, watermark, restored, stale, state_keys, finals })
    }
}

/// ClickHouse's live keys a worker owns, as listed at start-up.
type Listing = tokio::task::JoinHandle<anyhow::Result<HashSet<RowKey>>>;

/// Start-up catch-up and stale-key deletion of one worker.
pub struct Reconciler {
    /// Read up to these offsets to have caught up.
    targets: Offsets,
    /// Keys ClickHouse holds live rows for that no row change touched yet.
    suspects: HashSet<RowKey>,
    /// The listing of live keys while it runs (with the restore and the
    /// first epoch's computation); it is awaited before this run writes
    /// its first row, so it sees ClickHouse as the previous run left it.
    listing: Option<(Listing, tokio::runtime::Handle)>,
    started: Instant,
    /// With subject retention, rows of the subject tables (leads,
    /// conversations, the watchlist) are kept here when their subject's
    /// rows are final (`finals`: its lives all closed under the committed
    /// watermark), which nothing can rebuild; any other subject's row the
    /// rebuild did not emit is stale. Conversation rows, whose key does not
    /// name the subject, are never deleted.
    keep_subject_rows: bool,
    finals: Finals,
    /// The committed watermark, which closed the lives written as evidence
    /// for a state without it ([`Finals::Legacy`]).
    watermark: revpulse_pipelines::time::Micros,
    /// The evidence ([`Reconciler::evidence`]) is still to go with the
    /// first batch.
    evidence_due: bool,
    /// Delete markers of stale retention state, sent with the first batch,
    /// which every worker acknowledges before anything is committed: state
    /// newer than the committed watermark must not become covered by a
    /// later commit.
    stale_state: Vec<(RowKey, Option<RowVals>)>,
    /// The epoch at which the suspects left are deleted.
    reconcile_at: Option<u64>,
    done: bool,
}

impl Reconciler {
    /// Reads the start-up high watermarks and starts listing ClickHouse's
    /// live keys that this worker (`index` of `peers`) owns. The state
    /// tables' keys come from `taken` when the start already read them.
    pub fn start(
        source: &KafkaSource,
        sink: &Arc<ClickHouseSink>,
        rt: &tokio::runtime::Handle,
        (index, peers): (usize, usize),
        subject_retention: bool,
        taken: &mut TakenBack,
    ) -> anyhow::Result<Reconciler> {
        let targets = source.catch_up_targets().context("reading high watermarks")?;
        let mut suspects = HashSet::new();
        let known_state = taken.state_keys.is_some();
        suspects.extend(taken.state_keys.take().into_iter().flatten().filter(|k| row_owner(k, peers) == index));
        let sink = Arc::clone(sink);
        let began = Instant::now();
        let listing = rt.spawn(async move {
            // A killed predecessor's last write may still be landing.
            let settled = sink.settle_older_inserts(began.elapsed(), Duration::from_secs(10)).await;
            if !matches!(settled, Ok(true)) {
                tracing::warn!(?settled, "listing live keys while older inserts may still run");
            }
            let mut keys = HashSet::new();
            for table in Table::all().filter(|t| !(known_state && t.is_state())) {
                let live =
                    sink.live_keys(table).await.with_context(|| format!("reading live keys of {}", table.name()))?;
                keys.extend(live.into_iter().filter(|k| row_owner(k, peers) == index));
            }
            Ok(keys)
        });
        let stale_state = std::mem::take(&mut taken.stale).into_iter().map(|k| (k, None)).collect();
        let mut r = Reconciler::new(targets, suspects, subject_retention, stale_state);
        r.finals = std::mem::take(&mut taken.finals);
        r.watermark = taken.watermark;
        r.evidence_due = subject_retention;
        r.listing = Some((listing, rt.clone()));
        Ok(r)
    }

    /// Waits for the listing of live keys, if it still runs.
    fn listed(&mut self) -> anyhow::Result<()> {
        let Some((listing, rt)) = self.listing.take() else { return Ok(()) };
        let started = Instant::now();
        let keys = rt.block_on(listing).context("listing live keys")??;
        tracing::debug!(keys = keys.len(), waited_s = started.elapsed().as_secs_f64(), "live keys listed");
        self.suspects.extend(keys);
        Ok(())
    }

    fn new(
        targets: Offsets,
        suspects: HashSet<RowKey>,
        keep_subject_rows: bool,
        stale_state: Vec<(RowKey, Option<RowVals>)>,
    ) -> Reconciler {
        Reconciler {
            targets,
            suspects,
            listing: None,
            started: Instant::now(),
            keep_subject_rows,
            finals: Finals::default(),
            watermark: NO_WATERMARK,
            evidence_due: false,
            stale_state,
            reconcile_at: None,
            done: false,
        }
    }

    /// An epoch's row changes pass through here before the sink: stale
    /// state is deleted in the first batch (unless the dataflow writes the
    /// key anew), and every key they touch is no longer a suspect.
    pub fn absorb(&mut self, rows: &mut Vec<(RowKey, Option<RowVals>)>) -> anyhow::Result<()> {
        if !rows.is_empty() || !self.stale_state.is_empty() || self.evidence_due {
            self.listed()?;
        }
        if std::mem::take(&mut self.evidence_due) {
            let evidence = self.evidence();
            self.stale_state.extend(evidence);
        }
        if !self.stale_state.is_empty() {
            let written: HashSet<&RowKey> = rows.iter().map(|(k, _)| k).collect();
            self.stale_state.retain(|(k, _)| !written.contains(k));
            rows.append(&mut self.stale_state);
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        if !self.done && !self.suspects.is_empty() {
            for (key, _) in rows.iter() {
                self.suspects.remove(key);
            }
        }
        Ok(())
    }

    /// With subject retention, the first batch carries the evidence of
    /// final subjects: the marker, and for a state without it
    /// ([`Finals::Legacy`]) a closed life for every listed subject whose
    /// rows this start keeps. It goes with the stale state, which every
    /// worker acknowledges before anything is committed: a committed state
    /// always has the marker.
    fn evidence(&self) -> Vec<(RowKey, Option<RowVals>)> {
        let mut out = vec![evidence_marker()];
        if matches!(self.finals, Finals::Legacy(_)) {
            let subjects: std::collections::BTreeSet<SubjectKey> = self
                .suspects
                .iter()
                .filter(|k| SUBJECT_TABLES.contains(&k.table))
                .filter_map(key_subject)
                .filter(|s| self.finals.keeps(s))
                .collect();
            tracing::info!(lives = subjects.len(), "retention: closed lives written for the subjects whose rows stay");
            out.extend(subjects.into_iter().map(|s| evidence_life(s, self.watermark)));
        }
        out.into_iter().map(|(k, v)| (k, Some(v))).collect()
    }

    /// Closes this worker's side of `caught_up` once it read up to its
    /// targets. True the first time every worker has (at `epoch`): the
    /// replay of retained input is complete.
    pub fn check_caught_up(&mut self, source: &KafkaSource, caught_up: &mut Progress, epoch: u64) -> bool {
        if self.done {
            return false;
        }
        if !caught_up.closed() && source.reached(&self.targets) {
            caught_up.close();
        }
        if self.reconcile_at.is_none() && caught_up.all_closed() {
            self.reconcile_at = Some(epoch + 2);
            return true;
        }
        false
    }

    /// Once due at `epoch`, appends the delete markers of the keys left
    /// stale; `closed` tells the rows of closed periods, which stay.
    pub fn finish_if_due(
        &mut self,
        epoch: u64,
        closed: impl Fn(&RowKey) -> bool,
        rows: &mut Vec<(RowKey, Option<RowVals>)>,
    ) -> anyhow::Result<()> {
        if self.done || self.reconcile_at.is_none_or(|at| epoch < at) {
            return Ok(());
        }
        self.listed()?;
        self.done = true;
        let keep = self.keep_subject_rows;
        let finals = std::mem::take(&mut self.finals);
        let subject_closed =
            |k: &RowKey| keep && SUBJECT_TABLES.contains(&k.table) && key_subject(k).is_none_or(|s| finals.keeps(&s));
        let mut suspects = std::mem::take(&mut self.suspects);
        suspects.retain(|k| !closed(k) && !subject_closed(k));
        tracing::info!(
            seconds = self.started.elapsed().as_secs_f64(),
            stale_rows = suspects.len(),
            "caught up with the input as of start-up"
        );
        rows.extend(suspects.into_iter().map(|k| (k, None)));
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use revpulse_pipelines::row::{s, Cell};

    use super::*;

    fn key(table: Table, id: &str) -> RowKey {
        RowKey::new(table, vec![s("t"), s(id)])
    }

    #[test]
    fn untouched_live_keys_are_deleted_once_due_and_closed_ones_stay() {
        let suspects = HashSet::from([
            key(Table::OfferAcceptance, "a"),
            key(Table::OfferAcceptance, "b"),
            key(Table::LeadScores, "c"),
        ]);
        let mut r = Reconciler::new(Offsets::new(), suspects, true, Vec::new());
        r.finals = Finals::Evidence(HashSet::from([("t".into(), "c".into())]));
        let mut rows = vec![(key(Table::OfferAcceptance, "a"), Some(vec![Cell::U64(1), Cell::f64(1.0)]))];
        r.absorb(&mut rows).ok();
        r.reconcile_at = Some(5);
        let mut later = Vec::new();
        r.finish_if_due(4, |_| false, &mut later).ok();
        assert!(later.is_empty(), "not due before its epoch");
        r.finish_if_due(5, |_| false, &mut later).ok();
        // "a" was rebuilt; "c" is a final lead row (its subject closed).
        assert_eq!(later, vec![(key(Table::OfferAcceptance, "b"), None)]);
        r.finish_if_due(6, |_| false, &mut later).ok();
        assert_eq!(later.len(), 1, "deletes once");
    }

    /// Only a subject whose lives all closed under the committed watermark
    /// has final rows: any other subject's untouched rows are stale, also
    /// when no life row explains them (a killed run wrote the row first).
    #[test]
    fn untouched_rows_are_deleted_unless_their_subject_is_final() {
        let suspects = HashSet::from([key(Table::NextBuy, "open"), key(Table::NextBuy, "closed")]);
        let mut r = Reconciler::new(Offsets::new(), suspects, true, Vec::new());
        r.finals = Finals::Evidence(HashSet::from([("t".into(), "closed".into())]));
        r.reconcile_at = Some(1);
        let mut rows = Vec::new();
        r.finish_if_due(1, |_| false, &mut rows).ok();
        assert_eq!(rows, vec![(key(Table::NextBuy, "open"), None)]);
    }

    /// A state an earlier release wrote (no marker) keeps every subject's
    /// untouched rows but those it rebuilds, and its first batch carries
    /// the evidence: the marker and a closed life per kept subject.
    #[test]
    fn a_state_without_evidence_keeps_rows_and_gets_evidence_first() {
        let suspects = HashSet::from([key(Table::NextBuy, "open"), key(Table::NextBuy, "closed")]);
        let mut r = Reconciler::new(Offsets::new(), suspects, true, Vec::new());
        r.finals = Finals::Legacy(HashSet::from([("t".into(), "open".into())]));
        r.watermark = 100;
        r.evidence_due = true;
        let mut first = Vec::new();
        r.absorb(&mut first).ok();
        let (marker, life) = (evidence_marker(), evidence_life(("t".into(), "closed".into()), 100));
        assert_eq!(first, vec![(marker.0, Some(marker.1)), (life.0, Some(life.1))]);
        let mut next = Vec::new();
        r.absorb(&mut next).ok();
        assert!(next.is_empty(), "only in the first batch");
        r.reconcile_at = Some(1);
        let mut rows = Vec::new();
        r.finish_if_due(1, |_| false, &mut rows).ok();
        assert_eq!(rows, vec![(key(Table::NextBuy, "open"), None)]);
    }

    #[test]
    fn rows_of_closed_periods_are_not_deleted() {
        let mut r =
            Reconciler::new(Offsets::new(), HashSet::from([key(Table::OfferAcceptance, "b")]), false, Vec::new());
        r.reconcile_at = Some(1);
        let mut rows = Vec::new();
        r.finish_if_due(1, |_| true, &mut rows).ok();
        assert!(rows.is_empty());
    }

    #[test]
    fn stale_state_goes_with_the_first_batch_unless_written_anew() {
        let (old, kept) = (key(Table::StateOfferClosed, "x"), key(Table::StateOfferClosed, "y"));
        let mut r =
            Reconciler::new(Offsets::new(), HashSet::new(), false, vec![(old.clone(), None), (kept.clone(), None)]);
        let value = Some(vec![Cell::U64(1), Cell::U64(2)]);
        let mut rows = vec![(kept.clone(), value.clone())];
        r.absorb(&mut rows).ok();
        assert_eq!(rows, vec![(old, None), (kept.clone(), value.clone())]);
        let mut next = Vec::new();
        r.absorb(&mut next).ok();
        assert!(next.is_empty(), "only in the first batch");
    }
}
