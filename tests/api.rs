//! The query API over a real ClickHouse loaded with a replayed data set:
//! every route of SPEC §5 serves the stored values; every error status
//! (400, 401, 403, 404, 503) appears where SPEC says, with a JSON body; a key
//! scoped to one tenant cannot read another through any route; the OpenAPI
//! document covers every route.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use revpulse::generate::{write_dir, GenConfig};
use revpulse::replay;
use revpulse_api::{ApiKey, AppState, Keys, Readiness};
use revpulse_connectors::clickhouse::{ClickHouseConfig, ClickHouseSink};
use revpulse_connectors::metrics::Metrics;
use revpulse_pipelines::row::{row_json, Table};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, Value) {
    request(addr, "GET", path, key, None).await
}

async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    request(addr, "POST", path, key, Some(body)).await
}

/// One request on its own connection: the status and the JSON body.
async fn request(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let content =
        body.map(|b| format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len())).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

async fn serve(ch: clickhouse::Client, timeout: Duration) -> SocketAddr {
    let keys = Keys::new(&[
        ApiKey::clear("all", "*"),
        ApiKey::clear("d0", "dealer-000"),
        ApiKey { key: None, key_sha256: Some(revpulse_api::hash_key("d1")), ..ApiKey::clear("d1", "dealer-001") },
    ])
    .expect("keys");
    let state = AppState {
        ch,
        metrics: Metrics::new(),
        readiness: Arc::new(Readiness::default()),
        keys: Arc::new(keys),
        ingest: None,
        rows: None,
        in_flight: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = revpulse_api::router(state, timeout);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A fresh database loaded with the replay of 30,000 generated events of
/// `tenants` tenants, and the API serving it: the replayed state, the
/// API's address, the generated files' directory.
async fn loaded(name: &str, tenants: usize) -> (replay::State, SocketAddr, std::path::PathBuf) {
    let cfg = common::fresh_clickhouse(name).await;
    let dir = std::env::temp_dir().join(format!("revpulse-{name}-{}", std::process::id()));
    write_dir(&dir, GenConfig { tenants, ..GenConfig::default() }, 30_000).expect("generate");
    let (lines, _) = replay::read_dir(&dir).expect("read");
    let state = replay::run(lines, &Default::default(), 1, 100_000).expect("replay");
    let sink = ClickHouseSink::new(cfg.clone(), None);
    sink.write(&state.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect::<Vec<_>>()).await.expect("load");
    let addr = serve(sink.client().clone(), Duration::from_secs(5)).await;
    (state, addr, dir)
}

/// Rows of one table of the replayed state, as JSON.
fn rows(state: &replay::State, table: Table) -> Vec<Value> {
    state.iter().filter(|(k, _)| k.table == table).map(|(k, v)| row_json(k, v)).collect()
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_status_and_tenant_isolation() {
    let (state, addr, dir) = loaded("api", 3).await;
    let t0 = "dealer-000";

    // RaR.
    let rar = rows(&state, Table::RarMonthly).into_iter().find(|r| r["tenant_id"] == t0).expect("rar row");
    let month = &rar["month"].as_str().unwrap_or_default()[..7];
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/rar?month={month}"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    for col in
        ["rar", "recoverable", "lost_leads", "lost_sales", "baseline_revenue", "pressure", "top_intents", "impressions"]
    {
        assert!(close(&body[col], &rar[col]), "rar {col}: {} vs {}", body[col], rar[col]);
    }
    let channels = rows(&state, Table::RarByChannel)
        .into_iter()
        .filter(|r| r["tenant_id"] == t0 && r["month"] == rar["month"])
        .count();
    assert_eq!(body["by_channel"].as_array().map(Vec::len), Some(channels));

    // One lead, and the list.
    let leads: Vec<Value> = rows(&state, Table::LeadScores).into_iter().filter(|r| r["tenant_id"] == t0).collect();
    let lead = &leads[leads.len() / 2];
    let subject = lead["subject_id"].as_str().unwrap_or_default();
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/leads/{subject}"), Some("d0")).await;
    assert_eq!(st, 200, "{body}");
    for col in ["score", "tier", "revenue_potential", "conversion_probability"] {
        assert!(close(&body[col], &lead[col]), "lead {col}");
    }
    for col in ["base", "behavioral", "timing", "market"] {
        assert!(close(&body["components"][col], &lead[col]), "component {col}");
    }
    let mut expected: Vec<(f64, String)> = leads
        .iter()
        .filter(|r| r["tier"] == "basic" && r["score"].as_f64().unwrap_or_default() >= 55.0)
        .map(|r| (-r["score"].as_f64().unwrap_or_default(), r["subject_id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let (st, body) =
        get(addr, &format!("/v1/tenants/{t0}/leads?tier=basic&min_score=55&limit=7&offset=2"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    let got: Vec<String> = body["leads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["subject_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: Vec<String> = expected.iter().skip(2).take(7).map(|(_, s)| s.clone()).collect();
    assert_eq!(got, want);

    // Conversation efficiency.
    let conv = rows(&state, Table::ConversationRpm).into_iter().find(|r| r["tenant_id"] == t0).expect("conversation");
    let cid = conv["conversation_id"].as_str().unwrap_or_default();
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/conversations/{cid}"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    for col in ["subject_id", "duration_minutes", "revenue_potential", "revenue_per_minute", "active"] {
        assert!(close(&body[col], &conv[col]), "conversation {col}");
    }

    // Revenue per minute.
    let minute = rows(&state, Table::RevenuePerMinute)
        .into_iter()
        .find(|r| r["tenant_id"] == t0 && r["source"] == "ro")
        .expect("minute");
    let m = minute["minute"].as_str().unwrap_or_default();
    let (st, body) =
        get(addr, &format!("/v1/tenants/{t0}/revenue/per-minute?from={m}&to={m}&source=ro"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    let buckets = body["minutes"].as_array().cloned().unwrap_or_default();
    assert_eq!(buckets.len(), 1, "{body}");
    assert_eq!(buckets[0]["minute"], minute["minute"]);
    assert!(close(&buckets[0]["revenue"], &minute["revenue"]));
    assert_eq!(buckets[0]["conversions"], minute["conversions"]);

    // Attribution over every day: per-campaign sums of the stored daily rows.
    let mut per_campaign: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in
        rows(&state, Table::AttributionDaily).into_iter().filter(|r| r["tenant_id"] == t0 && r["model"] == "linear")
    {
        let e = per_campaign.entry(r["campaign_id"].as_str().unwrap_or_default().to_owned()).or_default();
        e.0 += r["conversions"].as_f64().unwrap_or_default();
        e.1 += r["revenue"].as_f64().unwrap_or_default();
    }
    let (st, body) =
        get(addr, &format!("/v1/tenants/{t0}/attribution?from=2026-01-01&to=2026-12-31&model=linear"), Some("all"))
            .await;
    assert_eq!(st, 200, "{body}");
    for c in body["campaigns"].as_array().into_iter().flatten() {
        let (conv, rev) = per_campaign[c["campaign_id"].as_str().unwrap_or_default()];
        assert!((c["conversions"].as_f64().unwrap_or_default() - conv).abs() < 1e-6);
        assert!((c["revenue"].as_f64().unwrap_or_default() - rev).abs() < 1e-6);
    }
    let (conv, _) = per_campaign.get("").copied().unwrap_or_default();
    assert!((body["unattributed"]["conversions"].as_f64().unwrap_or_default() - conv).abs() < 1e-6);
    assert_eq!(body["campaigns"].as_array().map(Vec::len), Some(per_campaign.keys().filter(|k| !k.is_empty()).count()));

    // Offers: accepted (§3.4) or sent (§3.6), with sends over all days.
    let offers: Vec<Value> =
        rows(&state, Table::OfferAcceptance).into_iter().filter(|r| r["tenant_id"] == t0).collect();
    let mut sends: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows(&state, Table::OfferDaily).into_iter().filter(|r| r["tenant_id"] == t0) {
        *sends.entry(r["offer_id"].as_str().unwrap_or_default().to_owned()).or_default() +=
            r["sent"].as_u64().unwrap_or_default();
    }
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/offers?limit=1000"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    let listed = body["offers"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<&str> =
        offers.iter().filter_map(|r| r["offer_id"].as_str()).chain(sends.keys().map(String::as_str)).collect();
    ids.sort_unstable();
    ids.dedup();
    assert!(!sends.is_empty() && listed.len() == ids.len(), "{} offers listed, {} expected", listed.len(), ids.len());
    for o in &listed {
        let id = o["offer_id"].as_str().unwrap_or_default();
        let (lines, revenue) = offers.iter().find(|r| r["offer_id"] == id).map_or((0, 0.0), |r| {
            (r["accepted_lines"].as_u64().unwrap_or_default(), r["revenue"].as_f64().unwrap_or_default())
        });
        let sent = sends.get(id).copied().unwrap_or_default();
        assert!(close(&o["revenue"], &revenue.into()) && o["accepted_lines"] == lines, "offer {id}: {o}");
        assert_eq!(o["sends"], sent, "offer {id} sends");
        let rate = (sent > 0).then(|| lines as f64 / sent as f64);
        assert!(close(&o["acceptance_rate"], &rate.into()), "offer {id}: {o}");
    }

    // Payment recovery: the days in range, oldest first, and their totals.
    let days: Vec<Value> = rows(&state, Table::PaymentRecovery)
        .into_iter()
        .filter(|r| {
            r["tenant_id"] == t0 && r["day"].as_str().is_some_and(|d| ("2026-01-01"..="2026-12-31").contains(&d))
        })
        .collect();
    let (st, body) =
        get(addr, &format!("/v1/tenants/{t0}/payments/recovery?from=2026-01-01&to=2026-12-31"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    let listed = body["days"].as_array().cloned().unwrap_or_default();
    assert!(!days.is_empty() && listed.len() == days.len(), "{} days listed, {} expected", listed.len(), days.len());
    for (got, want) in listed.iter().zip(&days) {
        for col in ["day", "failed", "recovered", "recovery_rate", "recoveries", "recovered_revenue"] {
            assert!(close(&got[col], &want[col]), "recovery {col}: {got} vs {want}");
        }
    }
    let failed: u64 = days.iter().filter_map(|d| d["failed"].as_u64()).sum();
    assert_eq!(body["totals"]["failed"], failed);

    // Watchlist: a filtered page by score, and the whole list per window.
    let watched: Vec<Value> = rows(&state, Table::NextBuy).into_iter().filter(|r| r["tenant_id"] == t0).collect();
    let mut expected: Vec<(f64, String)> = watched
        .iter()
        .filter(|r| r["buy_window"] == "0-3m" && r["score"].as_f64().unwrap_or_default() >= 40.0)
        .map(|r| (-r["score"].as_f64().unwrap_or_default(), r["subject_id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let (st, body) =
        get(addr, &format!("/v1/tenants/{t0}/watchlist?buy_window=0-3m&min_score=40&limit=5&offset=1"), Some("all"))
            .await;
    assert_eq!(st, 200, "{body}");
    let listed = body["subjects"].as_array().cloned().unwrap_or_default();
    let got: Vec<&str> = listed.iter().map(|w| w["subject_id"].as_str().unwrap_or_default()).collect();
    let want: Vec<&str> = expected.iter().skip(1).take(5).map(|(_, s)| s.as_str()).collect();
    assert!(!want.is_empty() && got == want, "{got:?} vs {want:?}");
    for w in &listed {
        let row = watched.iter().find(|r| r["subject_id"] == w["subject_id"]).expect("listed subject");
        for col in [
            "score",
            "buy_window",
            "timeline_months",
            "service_visits",
            "service_revenue",
            "last_service_at",
            "engagements",
            "reasons",
        ] {
            assert!(close(&w[col], &row[col]), "watchlist {col}: {w} vs {row}");
        }
    }
    let mut windows: BTreeMap<String, u64> = BTreeMap::new();
    for r in &watched {
        *windows.entry(r["buy_window"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    let counted: BTreeMap<String, u64> = body["windows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| (w["buy_window"].as_str().unwrap_or_default().to_owned(), w["subjects"].as_u64().unwrap_or_default()))
        .collect();
    assert_eq!(counted, windows);

    // Fact coverage: every fact in SPEC order.
    let coverage: Vec<Value> = rows(&state, Table::FactCoverage).into_iter().filter(|r| r["tenant_id"] == t0).collect();
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/facts/coverage"), Some("d0")).await;
    assert_eq!(st, 200, "{body}");
    let facts = body["facts"].as_array().cloned().unwrap_or_default();
    assert_eq!(facts.len(), 8, "{body}");
    assert_eq!(facts[0]["fact"], "homeowner");
    for f in &facts {
        let row = coverage.iter().find(|r| r["fact"] == f["fact"]).expect("fact row");
        assert!(close(&f["coverage"], &row["coverage"]) && f["with_fact"] == row["with_fact"], "{f} vs {row}");
        assert_eq!(body["leads"], row["leads"]);
    }
    let (st, body) = get(addr, "/v1/tenants/nobody/facts/coverage", Some("all")).await;
    assert_eq!((st, &body["leads"], &body["facts"][0]["coverage"]), (200, &Value::from(0), &Value::Null), "{body}");

    // Campaigns: the funnel summed over the range, rates of the sums, and
    // last-touch credit on conversion days in the range.
    let (from, to) = ("2026-01-01", "2026-12-31");
    let in_range = |r: &Value| r["tenant_id"] == t0 && r["day"].as_str().is_some_and(|d| d >= from && d <= to);
    let mut funnel: BTreeMap<String, [u64; 7]> = BTreeMap::new();
    let cols = ["queued", "sent", "delivered", "clicked", "replied", "failed", "held_out"];
    for r in rows(&state, Table::CampaignDaily).into_iter().filter(|r| in_range(r)) {
        let e = funnel.entry(r["campaign_id"].as_str().unwrap_or_default().to_owned()).or_default();
        for (i, c) in cols.iter().enumerate() {
            e[i] += r[*c].as_u64().unwrap_or_default();
        }
    }
    let mut credit: BTreeMap<String, f64> = BTreeMap::new();
    for r in rows(&state, Table::AttributionDaily).into_iter().filter(|r| in_range(r) && r["model"] == "last_touch") {
        let c = r["campaign_id"].as_str().unwrap_or_default();
        if !c.is_empty() {
            *credit.entry(c.to_owned()).or_default() += r["revenue"].as_f64().unwrap_or_default();
        }
    }
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/campaigns?from={from}&to={to}"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    let listed = body["campaigns"].as_array().cloned().unwrap_or_default();
    let names: BTreeSet<&String> = funnel.keys().chain(credit.keys()).collect();
    assert!(!funnel.is_empty() && listed.len() == names.len(), "{body}");
    for c in &listed {
        let id = c["campaign_id"].as_str().unwrap_or_default();
        let counts = funnel.get(id).copied().unwrap_or_default();
        for (i, col) in cols.iter().enumerate() {
            assert_eq!(c[*col], counts[i], "campaign {id} {col}");
        }
        let rate = (counts[1] + counts[5] > 0).then(|| counts[2] as f64 / (counts[1] + counts[5]) as f64);
        assert!(close(&c["delivery_rate"], &rate.into()), "campaign {id}: {c}");
        let revenue = credit.get(id).copied().unwrap_or_default();
        assert!((c["attributed_revenue"].as_f64().unwrap_or_default() - revenue).abs() < 1e-6, "campaign {id}: {c}");
    }

    // Experiment lift.
    let lift = rows(&state, Table::ExperimentLift).into_iter().find(|r| r["tenant_id"] == t0).expect("lift");
    let exp = lift["experiment_id"].as_str().unwrap_or_default();
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/experiments/{exp}/lift"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    for col in ["lift", "incremental_revenue", "z", "p_value"] {
        assert!(close(&body[col], &lift[col]), "lift {col}");
    }
    assert_eq!(body["variants"].as_array().map(Vec::len), Some(2));

    // Every route: 401 without or with an unknown key, 403 for another tenant's key.
    let routes = [
        format!("/v1/tenants/{{t}}/rar?month={month}"),
        format!("/v1/tenants/{{t}}/leads/{subject}"),
        "/v1/tenants/{t}/leads".to_owned(),
        format!("/v1/tenants/{{t}}/conversations/{cid}"),
        "/v1/tenants/{t}/revenue/per-minute".to_owned(),
        "/v1/tenants/{t}/attribution".to_owned(),
        "/v1/tenants/{t}/offers".to_owned(),
        "/v1/tenants/{t}/campaigns".to_owned(),
        "/v1/tenants/{t}/payments/recovery".to_owned(),
        "/v1/tenants/{t}/watchlist".to_owned(),
        "/v1/tenants/{t}/facts/coverage".to_owned(),
        format!("/v1/tenants/{{t}}/experiments/{exp}/lift"),
    ];
    for r in &routes {
        let own = r.replace("{t}", t0);
        let other = r.replace("{t}", "dealer-001");
        for (key, path, want) in [
            (None, &own, 401),
            (Some("nope"), &own, 401),
            (Some("d0"), &other, 403),
            (Some("d1"), &own, 403),
            (Some("d0"), &own.replace("dealer-000", "dealer-0%30%31"), 403),
        ] {
            let (st, body) = get(addr, path, key).await;
            assert_eq!(st, want, "{path} with {key:?}: {body}");
            assert!(body["error"].is_string(), "{path}: JSON error body");
        }
        let (st, _) = get(addr, &other, Some("d1")).await;
        assert!(st == 200 || st == 404, "{other} with its own tenant's hashed key: {st}");
    }

    // 400 names the parameter; 404 for unknown entities and routes.
    let long = "x".repeat(1025);
    for (path, param) in [
        (format!("/v1/tenants/{t0}/rar"), "month"),
        (format!("/v1/tenants/{t0}/rar?month=2026-13"), "month"),
        (format!("/v1/tenants/{t0}/leads?tier=gold"), "tier"),
        (format!("/v1/tenants/{t0}/leads?min_score=101"), "min_score"),
        (format!("/v1/tenants/{t0}/leads?min_score=NaN"), "min_score"),
        (format!("/v1/tenants/{t0}/leads?limit=0"), "limit"),
        (format!("/v1/tenants/{t0}/leads?limit=-1"), "limit"),
        (format!("/v1/tenants/{t0}/offers?offset=x"), "offset"),
        (format!("/v1/tenants/{t0}/leads/{long}"), "subject"),
        (format!("/v1/tenants/{t0}/revenue/per-minute?from=yesterday"), "from"),
        (format!("/v1/tenants/{t0}/revenue/per-minute?limit=44641"), "limit"),
        (format!("/v1/tenants/{t0}/revenue/per-minute?source=cash"), "source"),
        (format!("/v1/tenants/{t0}/attribution?model=first_touch"), "model"),
        (format!("/v1/tenants/{t0}/attribution?from=2026-02-30"), "from"),
        (format!("/v1/tenants/{t0}/campaigns?to=tomorrow"), "to"),
        (format!("/v1/tenants/{t0}/payments/recovery?from=2026-1-1"), "from"),
        (format!("/v1/tenants/{t0}/watchlist?buy_window=soon"), "buy_window"),
        (format!("/v1/tenants/{t0}/watchlist?min_score=-1"), "min_score"),
    ] {
        let (st, body) = get(addr, &path, Some("all")).await;
        assert_eq!(st, 400, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(&format!("`{param}`"))), "{path}: {body}");
    }
    // Any float ClickHouse 18.16 cannot parse as a literal still works (found by schemathesis).
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/leads?min_score=5e-324&limit=1"), Some("all")).await;
    assert_eq!((st, body["leads"].as_array().map(Vec::len)), (200, Some(1)), "{body}");

    // Empty ranges are empty, not errors.
    let (st, body) = get(
        addr,
        &format!("/v1/tenants/{t0}/revenue/per-minute?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z"),
        Some("all"),
    )
    .await;
    assert_eq!((st, body["minutes"].as_array().map(Vec::len)), (200, Some(0)));
    let (st, body) =
        get(addr, &format!("/v1/tenants/{t0}/attribution?from=2026-11-02&to=2026-11-01"), Some("all")).await;
    assert_eq!((st, body["campaigns"].as_array().map(Vec::len)), (200, Some(0)));
    for path in [
        format!("/v1/tenants/{t0}/rar?month=1999-01"),
        format!("/v1/tenants/{t0}/leads/nobody"),
        format!("/v1/tenants/{t0}/conversations/none"),
        format!("/v1/tenants/{t0}/experiments/none/lift"),
        "/v1/nothing".to_owned(),
    ] {
        let (st, body) = get(addr, &path, Some("all")).await;
        assert_eq!(st, 404, "{path}: {body}");
        assert!(body["error"].is_string());
    }
    assert_eq!(get(addr, "/healthz", None).await.0, 200);
    assert_eq!(get(addr, "/readyz", None).await.0, 503);

    // The OpenAPI document lists every route with its error statuses.
    let (st, doc) = get(addr, "/openapi.json", None).await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for r in &routes {
        let template = r
            .split('?')
            .next()
            .unwrap_or_default()
            .replace(subject, "{subject}")
            .replace(cid, "{id}")
            .replace(exp, "{id}")
            .replace("{t}", "{tenant}");
        let op = &doc["paths"][&template]["get"];
        assert!(op.is_object(), "{template} missing from OpenAPI");
        for code in ["200", "400", "401", "403", "503"] {
            assert!(op["responses"][code].is_object(), "{template} lacks {code}");
        }
    }
    for p in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} missing from OpenAPI");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_default()
}

/// The deal routes (SPEC §5, §3.11) serve the replayed tables: pipeline
/// with totals, at-risk deals filtered and ordered, one deal, the scenario
/// arithmetic on the stored figures; errors and tenant isolation as for
/// every route; all four in the OpenAPI document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deal_routes_serve_the_stored_figures() {
    let (state, addr, dir) = loaded("api_deals", 2).await;
    let t0 = "dealer-000";
    let mine = |table| rows(&state, table).into_iter().filter(|r| r["tenant_id"] == t0).collect::<Vec<_>>();

    // The pipeline: stages in pipeline order, forecast and closed months, totals.
    let stages = mine(Table::PipelineByStage);
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/deals/pipeline"), Some("d0")).await;
    assert_eq!(st, 200, "{body}");
    let order = ["discovery", "qualified", "proposal", "negotiation", "won", "lost"];
    let mut want: Vec<&Value> = stages.iter().collect();
    want.sort_by_key(|r| order.iter().position(|s| r["stage"] == *s));
    let got = body["stages"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), want.len(), "{body}");
    for (g, w) in got.iter().zip(&want) {
        for col in ["stage", "deals", "value", "weighted_value", "avg_value"] {
            assert!(close(&g[col], &w[col]), "stage {col}: {g} vs {w}");
        }
    }
    let open: Vec<&&Value> = want.iter().filter(|r| r["stage"] != "won" && r["stage"] != "lost").collect();
    let open_value: f64 = open.iter().map(|r| f(&r["value"])).sum();
    assert!((f(&body["totals"]["open_value"]) - open_value).abs() < 1e-6, "{body}");
    assert_eq!(body["forecast"].as_array().map(Vec::len), Some(mine(Table::ForecastMonthly).len()));
    let closed = mine(Table::DealsClosedMonthly);
    assert_eq!(body["closed"].as_array().map(Vec::len), Some(closed.len()));
    let won: f64 = closed.iter().map(|r| f(&r["won"])).sum();
    let lost: f64 = closed.iter().map(|r| f(&r["lost"])).sum();
    assert!(won + lost > 0.0, "the generator closes deals");
    assert!(close(&body["totals"]["win_rate"], &Value::from(won / (won + lost))), "{body}");

    // At-risk deals: category at_risk or critical, amount ≥ min_value, by amount desc.
    let health = mine(Table::DealHealth);
    let min_value = 100_000.0;
    let mut risky: Vec<&Value> = health
        .iter()
        .filter(|r| (r["category"] == "at_risk" || r["category"] == "critical") && f(&r["amount"]) >= min_value)
        .collect();
    risky.sort_by(|a, b| {
        f(&b["amount"]).total_cmp(&f(&a["amount"])).then(a["deal_id"].as_str().cmp(&b["deal_id"].as_str()))
    });
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/deals/at-risk?min_value=100000&limit=5"), Some("all")).await;
    assert_eq!(st, 200, "{body}");
    let ids: Vec<&Value> = body["deals"].as_array().into_iter().flatten().map(|d| &d["deal_id"]).collect();
    let want: Vec<&Value> = risky.iter().take(5).map(|r| &r["deal_id"]).collect();
    assert!(!want.is_empty() && ids == want, "{body}");

    // One deal, with every figure; won, lost and unknown deals are 404.
    let deal = &health[health.len() / 2];
    let id = deal["deal_id"].as_str().unwrap_or_default();
    let (st, body) = get(addr, &format!("/v1/tenants/{t0}/deals/{id}"), Some("d0")).await;
    assert_eq!(st, 200, "{body}");
    for col in ["stage", "amount", "close_probability", "health", "category", "risk_factors", "expected_close"] {
        assert!(close(&body[col], &deal[col]), "deal {col}: {body} vs {deal}");
    }
    assert_eq!(get(addr, &format!("/v1/tenants/{t0}/deals/nope"), Some("d0")).await.0, 404);

    // The scenario: SPEC §5's arithmetic on the stored pipeline and win rate.
    let scenario = r#"{"win_rate_increase": 0.1, "deal_size_increase": 0.2, "pipeline_growth": 0.5}"#;
    let (st, body) = post(addr, &format!("/v1/tenants/{t0}/deals/scenario"), Some("d0"), scenario).await;
    assert_eq!(st, 200, "{body}");
    let rate = won / (won + lost);
    assert!((f(&body["baseline"]["pipeline"]) - open_value).abs() < 1e-6, "{body}");
    assert!((f(&body["baseline"]["forecast"]) - open_value * rate).abs() < 1e-6, "{body}");
    let projected = open_value * 1.5 * 1.2 * (rate * 1.1).min(1.0);
    assert!((f(&body["projected"]["forecast"]) - projected).abs() < 1e-6, "{body}");
    for bad in [r#"{"pipeline_growth": 11}"#, r#"{"win_rate_increase": -2}"#, r#"{"x": 1}"#, "nope"] {
        let (st, body) = post(addr, &format!("/v1/tenants/{t0}/deals/scenario"), Some("all"), bad).await;
        assert_eq!(st, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
    for (path, param) in [
        (format!("/v1/tenants/{t0}/deals/at-risk?min_value=-1"), "min_value"),
        (format!("/v1/tenants/{t0}/deals/at-risk?limit=0"), "limit"),
    ] {
        let (st, body) = get(addr, &path, Some("all")).await;
        assert_eq!(st, 400, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(&format!("`{param}`"))), "{path}: {body}");
    }

    // Isolation: 401 without or with an unknown key, 403 for another tenant's key.
    let routes = [
        "/v1/tenants/{t}/deals/pipeline".to_owned(),
        "/v1/tenants/{t}/deals/at-risk".to_owned(),
        format!("/v1/tenants/{{t}}/deals/{id}"),
    ];
    for r in &routes {
        let (own, other) = (r.replace("{t}", t0), r.replace("{t}", "dealer-001"));
        for (key, path, want) in [(None, &own, 401), (Some("nope"), &own, 401), (Some("d0"), &other, 403)] {
            let (st, body) = get(addr, path, key).await;
            assert_eq!(st, want, "{path} with {key:?}: {body}");
        }
    }
    let other = "/v1/tenants/dealer-001/deals/scenario";
    assert_eq!(post(addr, other, Some("d0"), "{}").await.0, 403);
    assert_eq!(post(addr, other, None, "{}").await.0, 401);

    // The OpenAPI document has all four.
    let (_, doc) = get(addr, "/openapi.json", None).await;
    for (path, method) in [
        ("/v1/tenants/{tenant}/deals/pipeline", "get"),
        ("/v1/tenants/{tenant}/deals/at-risk", "get"),
        ("/v1/tenants/{tenant}/deals/{deal}", "get"),
        ("/v1/tenants/{tenant}/deals/scenario", "post"),
    ] {
        let op = &doc["paths"][path][method];
        for code in ["200", "400", "401", "403", "503"] {
            assert!(op["responses"][code].is_object(), "{path} lacks {code}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_or_hanging_is_503_not_a_panic_or_hang() {
    // Nothing listens on this port: connection refused.
    let refused =
        ClickHouseSink::new(ClickHouseConfig { url: "http://127.0.0.1:1".into(), ..ClickHouseConfig::default() }, None);
    let addr = serve(refused.client().clone(), Duration::from_secs(5)).await;
    let (st, body) = get(addr, "/v1/tenants/t/leads/s", Some("all")).await;
    assert_eq!(st, 503, "{body}");
    assert!(body["error"].is_string());

    // A server that accepts but never answers: the request timeout answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let hanging = ClickHouseSink::new(
        ClickHouseConfig { url: format!("http://{silent_addr}"), ..ClickHouseConfig::default() },
        None,
    );
    let addr = serve(hanging.client().clone(), Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (st, body) = get(addr, "/v1/tenants/t/offers", Some("all")).await;
    assert_eq!(st, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
