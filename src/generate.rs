//! Realistic synthetic events for all six topics (`revpulse generate`, the
//! demo's live stream, tests and benchmarks).
//!
//! Seeded and deterministic. Besides plain events it emits what real
//! producers do: corrections (same key, newer `ts`, new values), redelivered
//! duplicates, late stale versions (older `ts` arriving after a newer one,
//! which the upsert rule must ignore), and tombstones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use revpulse_pipelines::event::*;
use revpulse_pipelines::time::{Micros, MICROS_PER_MINUTE, MICROS_PER_SECOND};
use revpulse_pipelines::types::{Count, NonNeg, Signed, Str, Tenant, Ts, Unit};

const CHANNELS: [&str; 4] = ["google_search", "bing", "maps", "ai_overview"];
const INTENTS: [&str; 8] = [
    "ev_inventory_search",
    "service_appointment",
    "trade_in_value",
    "financing_offers",
    "used_suv_deals",
    "parts_lookup",
    "lease_specials",
    "collision_repair",
];
const CAMPAIGNS: [&str; 4] = ["nurture", "tierlift", "churnsave", "service_t48h"];
const OFFERS: [&str; 4] = ["oil_change_20", "tire_rotation_free", "brake_special", "detail_50"];
const REGIONS: [&str; 4] = ["us-west", "us-east", "us-central", "us-south"];

/// Conversations running at once, per tenant on average (see `Generator::conversation`).
const RUNNING_PER_TENANT: usize = 50;

/// One message for a topic: upsert key and JSON payload (`None`: tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: Topic,
    pub key: revpulse_pipelines::types::Text,
    pub payload: Option<String>,
}

/// Shape of the generated data.
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub seed: u64,
    pub tenants: usize,
    /// Event time of the first event.
    pub start: Micros,
    /// Mean event-time step between consecutive events; 0 keeps the clock
    /// where [`Generator::set_now`] puts it (the demo drives it that way).
    pub step: Micros,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            tenants: 5,
            start: revpulse_pipelines::time::parse_rfc3339("2026-09-01T00:00:00Z").unwrap_or(0),
            step: 60 * MICROS_PER_SECOND,
        }
    }
}

pub struct Generator {
    cfg: GenConfig,
    rng: StdRng,
    now: Micros,
    n: u64,
    /// Recent versions per key, to correct, duplicate, reorder or delete.
    recent: Vec<(Topic, revpulse_pipelines::types::Text, Event)>,
    /// Open repair orders and running conversations, to continue later.
    open_ros: Vec<RoUpdate>,
    conversations: BTreeMap<String, (String, String, Micros)>,
    /// Retries of failed payments not made yet: (due, tenant, subject,
    /// amount), due an hour to ten days after the failure, so that some
    /// fall inside the recovery window (SPEC §3.7) and some after it.
    retries: Vec<(Micros, Tenant, String, u64)>,
    /// Open CRM deals, to move through their stages later.
    open_deals: Vec<Deal>,
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let now = cfg.start;
        Generator {
            cfg,
            rng,
            now,
            n: 0,
            recent: Vec::new(),
            open_ros: Vec::new(),
            conversations: BTreeMap::new(),
            retries: Vec::new(),
            open_deals: Vec::new(),
        }
    }

    /// The event time the next event will carry (roughly).
    pub fn now(&self) -> Micros {
        self.now
    }

    pub fn set_now(&mut self, now: Micros) {
        self.now = now;
    }

    fn unit(&mut self, lo: f64, hi: f64) -> Unit {
        let v: f64 = self.rng.random_range(lo..hi);
        Unit::new((v * 10_000.0).round() / 10_000.0).unwrap_or_default()
    }

    fn tenant(&mut self) -> Tenant {
        let t = self.rng.random_range(0..self.cfg.tenants.max(1));
        Tenant(format!("dealer-{t:03}").into())
    }

    /// Customers come and go: the active population is a window of 400 ids
    /// per tenant that drifts with event time (one id per 15 minutes, so a
    /// customer is active for about four days), so per-customer history stays
    /// bounded however long the stream runs.
    fn subject(&mut self, tenant: &Tenant) -> String {
        let first = self.now.max(0) / (15 * MICROS_PER_MINUTE);
        format!("{}-cust-{:06}", tenant.0, first + self.rng.random_range(0..400))
    }

    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}-{:x}-{}", self.cfg.seed, self.n)
    }

    /// The next record in arrival order.
    pub fn next_record(&mut self) -> Record {
        if self.cfg.step > 0 {
            self.now += self.rng.random_range(0..=2 * self.cfg.step);
        }
        // Replays of earlier keys: corrections, duplicates, stale versions, deletes.
        if !self.recent.is_empty() && self.rng.random_bool(0.12) {
            let i = self.rng.random_range(0..self.recent.len());
            let (topic, key, event) = self.recent[i].clone();
            return match self.rng.random_range(0..10) {
                0..=3 => {
                    let now = self.now;
                    let corrected = correct(event, now, &mut self.rng);
                    self.record(corrected)
                }
                4..=6 => Record { topic, key, payload: Some(event.to_json()) },
                7..=8 => {
                    let mut stale = event;
                    let ts = stale_ts(&stale);
                    set_ts(&mut stale, ts);
                    Record { topic, key, payload: Some(stale.to_json()) }
                }
                _ => {
                    self.recent.swap_remove(i);
                    Record { topic, key, payload: None }
                }
            };
        }
        let event = match self.rng.random_range(0..100) {
            0..=21 => self.impression(),
            22..=51 => self.conversation(),
            52..=76 => self.message(),
            77..=86 => self.payment(),
            87..=96 => self.ro_update(),
            _ => self.deal(),
        };
        let rec = self.record(event.clone());
        if self.recent.len() < 2_000 {
            self.recent.push((rec.topic, rec.key.clone(), event));
        } else {
            let i = self.rng.random_range(0..self.recent.len());
            self.recent[i] = (rec.topic, rec.key.clone(), event);
        }
        rec
    }

    fn record(&self, event: Event) -> Record {
        Record { topic: event.topic(), key: event.upsert_key().into(), payload: Some(event.to_json()) }
    }

    fn impression(&mut self) -> Event {
        let tenant_id = self.tenant();
        let share = self.unit(0.05, 0.6);
        let ctr = self.unit(0.01, 0.12);
        let drop = self.unit(0.2, 0.8);
        let lead = self.unit(0.02, 0.2);
        let close = self.unit(0.05, 0.35);
        let rec = self.unit(0.1, 0.6);
        let gross = (self.rng.random_range(400.0..4_500.0f64) * 100.0).round() / 100.0;
        Event::Impression(Impression {
            tenant_id,
            ts: Ts(self.now),
            event_id: Str(self.id("imp").into()),
            channel: Str(CHANNELS[self.rng.random_range(0..CHANNELS.len())].into()),
            intent_cluster: Str(INTENTS[self.rng.random_range(0..INTENTS.len())].into()),
            impressions: Count(self.rng.random_range(50..20_000)),
            share_ai_snippet: share,
            ctr_baseline: ctr,
            ctr_drop_when_ai: drop,
            lead_cr: lead,
            close_rate: close,
            recoverable_share: rec,
            avg_gross: NonNeg::new(gross).unwrap_or_default(),
        })
    }

    fn conversation(&mut self) -> Event {
        // Continue a running conversation, or start one. At most
        // `RUNNING_PER_TENANT` × tenants run at once: starts and ends then
        // balance, so the running set (and a customer's history) stays
        // bounded however long the stream runs.
        let full = self.conversations.len() >= RUNNING_PER_TENANT * self.cfg.tenants.max(1);
        let running = (!self.conversations.is_empty() && (full || self.rng.random_bool(0.7)))
            .then(|| self.conversations.keys().nth(self.rng.random_range(0..self.conversations.len())).cloned())
            .flatten();
        let (conversation_id, kind) = match running {
            Some(id) => {
                let end = self.rng.random_bool(0.2);
                (id, if end { ConversationKind::Ended } else { ConversationKind::Message })
            }
            None => {
                let tenant = self.tenant();
                let subject = self.subject(&tenant);
                let id = self.id("conv");
                self.conversations.insert(id.clone(), (tenant.0.to_string(), subject, self.now));
                (id, ConversationKind::Started)
            }
        };
        let Some((tenant, subject, _)) = self.conversations.get(&conversation_id).cloned() else {
            return self.impression();
        };
        if kind == ConversationKind::Ended {
            self.conversations.remove(&conversation_id);
        }
        let mut facts = Facts::default();
        if self.rng.random_bool(0.5) {
            facts.homeowner = Some(self.rng.random_bool(0.7));
        }
        if self.rng.random_bool(0.4) {
            facts.monthly_bill = NonNeg::new(f64::from(self.rng.random_range(40..450u32)));
        }
        if self.rng.random_bool(0.3) {
            facts.property_type = Some(
                [PropertyType::SingleFamily, PropertyType::Condo, PropertyType::Coop, PropertyType::Other]
                    [self.rng.random_range(0..4)],
            );
        }
        if self.rng.random_bool(0.3) {
            facts.region = Some(Str(REGIONS[self.rng.random_range(0..REGIONS.len())].into()));
        }
        if self.rng.random_bool(0.3) {
            facts.timeline_months = Some(Count(self.rng.random_range(0..24)));
        }
        if self.rng.random_bool(0.2) {
            facts.credit_signal = Some(self.rng.random_bool(0.6));
        }
        if self.rng.random_bool(0.2) {
            facts.decision_maker = Some(
                [DecisionMaker::Primary, DecisionMaker::Influencer, DecisionMaker::Researcher]
                    [self.rng.random_range(0..3)],
            );
        }
        if self.rng.random_bool(0.5) {
            facts.sentiment = Signed::new((self.rng.random_range(-1.0..1.0f64) * 100.0).round() / 100.0);
        }
        facts.questions = Some(Count(self.rng.random_range(0..3)));
        facts.technical_questions = Some(Count(self.rng.random_range(0..2)));
        facts.objections_resolved = Some(Count(self.rng.random_range(0..2)));
        Event::Conversation(Conversation {
            tenant_id: Tenant(tenant.into()),
            ts: Ts(self.now),
            event_id: Str(self.id("cev").into()),
            conversation_id: Str(conversation_id.into()),
            subject_id: Str(subject.into()),
            kind,
            facts: Some(facts),
        })
    }

    fn message(&mut self) -> Event {
        let tenant_id = self.tenant();
        let subject = self.subject(&tenant_id);
        let outbound = self.rng.random_bool(0.85);
        let experiment = self.rng.random_bool(0.3);
        // Variant by subject, so a subject stays in one arm.
        let treatment = subject.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 2 == 0;
        let status = if experiment && !treatment {
            MessageStatus::HeldOut
        } else if outbound {
            [
                MessageStatus::Sent,
                MessageStatus::Delivered,
                MessageStatus::Clicked,
                MessageStatus::Replied,
                MessageStatus::Failed,
                MessageStatus::Queued,
            ][self.rng.random_range(0..6)]
        } else {
            MessageStatus::Replied
        };
        let campaign =
            self.rng.random_bool(0.9).then(|| Str(CAMPAIGNS[self.rng.random_range(0..CAMPAIGNS.len())].into()));
        Event::Message(Message {
            tenant_id,
            ts: Ts(self.now),
            message_id: Str(self.id("msg").into()),
            subject_id: Str(subject.into()),
            direction: if outbound { Direction::Outbound } else { Direction::Inbound },
            channel: [MessageChannel::Sms, MessageChannel::Email, MessageChannel::Push][self.rng.random_range(0..3)],
            campaign_id: campaign,
            offer_id: self.rng.random_bool(0.3).then(|| Str(OFFERS[self.rng.random_range(0..OFFERS.len())].into())),
            experiment_id: experiment.then(|| Str("exp-tierlift-q4".into())),
            variant: experiment.then_some(if treatment { Variant::Treatment } else { Variant::Control }),
            status,
            sent_at: (outbound && self.rng.random_bool(0.8))
                .then(|| Ts(self.now - self.rng.random_range(0..5 * MICROS_PER_MINUTE))),
        })
    }

    /// A payment: a due retry of a failed one (succeeding 7 times in 10),
    /// or a new one (failing 1 time in 10, retried 7 times in 10).
    fn payment(&mut self) -> Event {
        let due = self.retries.iter().position(|r| r.0 <= self.now);
        let (tenant_id, subject, amount, status) = match due.map(|i| self.retries.swap_remove(i)) {
            Some((_, tenant, subject, amount)) => {
                let ok = self.rng.random_bool(0.7);
                (tenant, subject, amount, if ok { PaymentStatus::Succeeded } else { PaymentStatus::Failed })
            }
            None => {
                let tenant = self.tenant();
                let subject = self.subject(&tenant);
                let ok = self.rng.random_bool(0.9);
                let amount = self.rng.random_range(2_000..250_000);
                (tenant, subject, amount, if ok { PaymentStatus::Succeeded } else { PaymentStatus::Failed })
            }
        };
        if status == PaymentStatus::Failed && self.rng.random_bool(0.7) {
            let after = self.rng.random_range(MICROS_PER_MINUTE * 60..10 * 24 * 60 * MICROS_PER_MINUTE);
            self.retries.push((self.now + after, tenant_id.clone(), subject.clone(), amount));
        }
        Event::Payment(Payment {
            tenant_id,
            ts: Ts(self.now),
            payment_id: Str(self.id("pay").into()),
            subject_id: Str(subject.into()),
            status,
            amount_cents: Count(amount),
            currency: Str("USD".into()),
            plan_id: self.rng.random_bool(0.5).then(|| Str(format!("plan-{}", self.rng.random_range(1..4)).into())),
        })
    }

    fn ro_update(&mut self) -> Event {
        if !self.open_ros.is_empty() && self.rng.random_bool(0.5) {
            let i = self.rng.random_range(0..self.open_ros.len());
            let mut ro = self.open_ros.swap_remove(i);
            ro.ts = Ts(self.now);
            if self.rng.random_bool(0.9) {
                ro.status = RoStatus::Closed;
                ro.closed_at = Some(Ts(self.now));
            } else {
                ro.status = RoStatus::Void;
            }
            return Event::RoUpdate(ro);
        }
        let tenant_id = self.tenant();
        let subject = self.subject(&tenant_id);
        let lines = (0..self.rng.random_range(1..4))
            .map(|_| RoLine {
                code: Str(["LOF", "ROT", "BRK", "DTL", "ALN"][self.rng.random_range(0..5)].into()),
                amount_cents: Count(self.rng.random_range(3_000..90_000)),
                offer_id: self.rng.random_bool(0.3).then(|| Str(OFFERS[self.rng.random_range(0..OFFERS.len())].into())),
            })
            .collect();
        let ro = RoUpdate {
            tenant_id,
            ts: Ts(self.now),
            ro_id: Str(self.id("ro").into()),
            subject_id: Str(subject.into()),
            vin: Some(Str(format!("1HGCM82633A{:06}", self.rng.random_range(0..1_000_000)).into())),
            status: RoStatus::Open,
            opened_at: Ts(self.now),
            closed_at: None,
            advisor: Some(Str(format!("advisor-{}", self.rng.random_range(1..6)).into())),
            lines,
        };
        self.open_ros.push(ro.clone());
        Event::RoUpdate(ro)
    }
}

const OWNERS: [&str; 5] = ["ana", "ben", "chloe", "dev", "eli"];

impl Generator {
    /// A CRM deal's next state: an open deal moves on (activity, its next
    /// stage, won or lost) or a new one opens in discovery. Deals picked
    /// rarely go stale, as real pipelines' do.
    fn deal(&mut self) -> Event {
        const DAY: Micros = 24 * 60 * MICROS_PER_MINUTE;
        if !self.open_deals.is_empty() && self.rng.random_bool(0.6) {
            let i = self.rng.random_range(0..self.open_deals.len());
            let mut d = self.open_deals[i].clone();
            d.ts = Ts(self.now);
            d.last_activity_at = Ts(self.now);
            match self.rng.random_range(0..10) {
                0..=3 => {
                    d.interactions = Some(Count(d.interactions.map_or(0, |n| n.0) + 1));
                    d.champion_identified = Some(d.champion_identified == Some(true) || self.rng.random_bool(0.3));
                    d.budget_confirmed = Some(d.budget_confirmed == Some(true) || self.rng.random_bool(0.25));
                    if self.rng.random_bool(0.2) {
                        d.competitors_mentioned = Some(Count(d.competitors_mentioned.map_or(0, |n| n.0) + 1));
                    }
                }
                4..=7 => {
                    d.stage = match d.stage {
                        DealStage::Discovery => DealStage::Qualified,
                        DealStage::Qualified => DealStage::Proposal,
                        DealStage::Proposal => DealStage::Negotiation,
                        _ if self.rng.random_bool(0.6) => DealStage::Won,
                        _ => DealStage::Lost,
                    };
                    d.stage_entered_at = Ts(self.now);
                    d.decision_maker_engaged =
                        Some(d.decision_maker_engaged == Some(true) || self.rng.random_bool(0.4));
                }
                _ => {
                    d.stage = DealStage::Lost;
                    d.stage_entered_at = Ts(self.now);
                }
            }
            if d.stage.is_open() {
                self.open_deals[i] = d.clone();
            } else {
                self.open_deals.swap_remove(i);
            }
            return Event::Deal(d);
        }
        let tenant_id = self.tenant();
        let subject = self.subject(&tenant_id);
        // Some deals entered the CRM weeks ago and were never touched since.
        let entered = self.now - self.rng.random_range(0..45) * DAY;
        let d = Deal {
            tenant_id,
            ts: Ts(self.now),
            deal_id: Str(self.id("deal").into()),
            subject_id: Some(Str(subject.into())),
            stage: DealStage::Discovery,
            amount_cents: Count(self.rng.random_range(5_000..500_000) * 100),
            currency: Str("USD".into()),
            stage_entered_at: Ts(entered),
            last_activity_at: Ts(entered),
            expected_close: Ts(self.now + self.rng.random_range(10..120) * DAY),
            owner: Some(Str(OWNERS[self.rng.random_range(0..OWNERS.len())].into())),
            champion_identified: None,
            budget_confirmed: None,
            decision_maker_engaged: None,
            competitors_mentioned: None,
            interactions: Some(Count(0)),
        };
        if self.open_deals.len() < 40 * self.cfg.tenants.max(1) {
            self.open_deals.push(d.clone());
        }
        Event::Deal(d)
    }
}

fn set_ts(e: &mut Event, ts: Micros) {
    match e {
        Event::Impression(x) => x.ts = Ts(ts),
        Event::Conversation(x) => x.ts = Ts(ts),
        Event::Message(x) => x.ts = Ts(ts),
        Event::Payment(x) => x.ts = Ts(ts),
        Event::RoUpdate(x) => x.ts = Ts(ts),
        Event::Deal(x) => x.ts = Ts(ts),
    }
}

/// A time before the version's own, so the stale copy must lose.
fn stale_ts(e: &Event) -> Micros {
    (e.ts() - 90 * MICROS_PER_SECOND).max(0)
}

/// A newer version of `e` with changed figures (a producer's correction).
fn correct(mut e: Event, now: Micros, rng: &mut StdRng) -> Event {
    let ts = now.max(e.ts() + 1);
    set_ts(&mut e, ts);
    match &mut e {
        Event::Impression(x) => {
            x.impressions = Count((x.impressions.0 as f64 * rng.random_range(0.5..1.5)).round() as u64)
        }
        Event::Message(x) => {
            x.status = [MessageStatus::Delivered, MessageStatus::Clicked, MessageStatus::Replied, MessageStatus::Failed]
                [rng.random_range(0..4)]
        }
        Event::Payment(x) => {
            x.status =
                if x.status == PaymentStatus::Succeeded { PaymentStatus::Refunded } else { PaymentStatus::Succeeded }
        }
        Event::RoUpdate(x) => {
            if let Some(l) = x.lines.first_mut() {
                l.amount_cents = Count(l.amount_cents.0 + rng.random_range(0..5_000));
            }
        }
        Event::Conversation(x) => {
            if let Some(f) = &mut x.facts {
                f.homeowner = Some(rng.random_bool(0.5));
            }
        }
        Event::Deal(x) => {
            x.amount_cents = Count((x.amount_cents.0 as f64 * rng.random_range(0.8..1.25)).round() as u64)
        }
    }
    e
}

/// Writes `events` records to `DIR/<topic>.jsonl` (tombstones as
/// `{"_key": K, "_tombstone": true}`); returns the count per topic.
pub fn write_dir(dir: &Path, cfg: GenConfig, events: usize) -> std::io::Result<BTreeMap<Topic, usize>> {
    std::fs::create_dir_all(dir)?;
    let mut files = BTreeMap::new();
    for t in Topic::ALL {
        files.insert(t, std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{}.jsonl", t.name())))?));
    }
    let mut counts = BTreeMap::new();
    let mut g = Generator::new(cfg);
    for _ in 0..events {
        let r = g.next_record();
        if let Some(f) = files.get_mut(&r.topic) {
            match &r.payload {
                Some(p) => writeln!(f, "{p}")?,
                None => writeln!(f, "{}", serde_json::json!({"_key": r.key, "_tombstone": true}))?,
            }
        }
        *counts.entry(r.topic).or_insert(0) += 1;
    }
    for (_, mut f) in files {
        f.flush()?;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_records_are_valid_and_deterministic() {
        let mut a = Generator::new(GenConfig::default());
        let mut b = Generator::new(GenConfig::default());
        let mut tombstones = 0;
        for _ in 0..5_000 {
            let r = a.next_record();
            assert_eq!(r, b.next_record());
            match &r.payload {
                Some(p) => {
                    let e = decode_value(r.topic, p.as_bytes()).unwrap_or_else(|e| panic!("{e}: {p}"));
                    assert_eq!(e.upsert_key(), r.key);
                }
                None => tombstones += 1,
            }
        }
        assert!(tombstones > 0);
    }

    /// Failed payments are retried by the same subject, some inside the
    /// 7-day recovery window and some after it (SPEC §3.7).
    #[test]
    fn failed_payments_are_retried_inside_and_outside_the_recovery_window() {
        let mut g = Generator::new(GenConfig::default());
        let mut by_subject: BTreeMap<(String, String), Vec<(Micros, bool)>> = BTreeMap::new();
        for _ in 0..40_000 {
            let r = g.next_record();
            if let Some(Ok(Event::Payment(p))) = r.payload.as_deref().map(|p| decode_value(r.topic, p.as_bytes())) {
                let key = (p.tenant_id.0.to_string(), p.subject_id.0.to_string());
                by_subject.entry(key).or_default().push((p.ts.0, p.status == PaymentStatus::Succeeded));
            }
        }
        let week = 7 * 24 * 60 * MICROS_PER_MINUTE;
        let (mut inside, mut after) = (0, 0);
        for pays in by_subject.values() {
            for &(f, _) in pays.iter().filter(|(_, ok)| !ok) {
                let next = pays.iter().filter(|(s, sok)| *sok && *s > f).map(|(s, _)| *s).min();
                match next {
                    Some(s) if s <= f + week => inside += 1,
                    Some(_) => after += 1,
                    None => {}
                }
            }
        }
        assert!(inside > 10 && after > 0, "{inside} recovered inside the window, {after} after it");
    }
}
