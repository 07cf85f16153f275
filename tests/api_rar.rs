//! The RaR route over a real ClickHouse: values match the replayed rows,
//! and auth/validation errors have the statuses SPEC §5 names.

mod common;

use std::sync::Arc;
use std::time::Duration;

use revpulse::generate::{write_dir, GenConfig};
use revpulse::replay;
use revpulse_api::{ApiKey, AppState, Readiness};
use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::metrics::Metrics;
use revpulse_pipelines::row::{row_json, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rar_route_serves_clickhouse_rows_with_tenant_scoped_keys() {
    let cfg = common::fresh_clickhouse("api").await;
    let dir = std::env::temp_dir().join(format!("revpulse-api-{}", std::process::id()));
    write_dir(&dir, GenConfig::default(), 10_000).expect("generate");
    let (lines, _) = replay::read_dir(&dir).expect("read");
    let state = replay::run(lines, &Default::default(), 1, 100_000).expect("replay");
    let sink = ClickHouseSink::new(cfg.clone(), None);
    sink.write(&state.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect::<Vec<_>>()).await.expect("load");

    let app_state = AppState {
        ch: sink.client().clone(),
        metrics: Metrics::new(),
        readiness: Arc::new(Readiness::default()),
        keys: Arc::new(vec![
            ApiKey { key: "all".into(), tenant: "*".into() },
            ApiKey { key: "d0".into(), tenant: "dealer-000".into() },
        ]),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = revpulse_api::router(app_state, Duration::from_secs(5));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (tenant, month, expected) = state
        .iter()
        .find(|(k, _)| k.table == Table::RarMonthly)
        .map(|(k, v)| {
            let row = row_json(k, v);
            (
                row["tenant_id"].as_str().unwrap_or_default().to_owned(),
                row["month"].as_str().unwrap_or_default()[..7].to_owned(),
                row,
            )
        })
        .expect("a monthly row");

    let path = format!("/v1/tenants/{tenant}/rar?month={month}");
    let (status, body) = get(addr, &path, Some("all")).await;
    assert_eq!(status, 200, "{body}");
    for col in
        ["rar", "recoverable", "lost_leads", "lost_sales", "baseline_revenue", "pressure", "top_intents", "impressions"]
    {
        assert_eq!(body[col], expected[col], "{col}");
    }
    assert!(body["by_channel"].as_array().is_some_and(|a| !a.is_empty()));

    assert_eq!(get(addr, &path, None).await.0, 401);
    assert_eq!(get(addr, &path, Some("nope")).await.0, 401);
    let scoped = if tenant == "dealer-000" { "d0" } else { "all" };
    assert_eq!(get(addr, &format!("/v1/tenants/{tenant}/rar?month={month}"), Some(scoped)).await.0, 200);
    assert_eq!(get(addr, &format!("/v1/tenants/dealer-001/rar?month={month}"), Some("d0")).await.0, 403);
    let (status, body) = get(addr, &format!("/v1/tenants/{tenant}/rar?month=2026-13"), Some("all")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("month")));
    assert_eq!(get(addr, &format!("/v1/tenants/{tenant}/rar"), Some("all")).await.0, 400);
    assert_eq!(get(addr, &format!("/v1/tenants/{tenant}/rar?month=1999-01"), Some("all")).await.0, 404);
    assert_eq!(get(addr, "/healthz", None).await.0, 200);
    assert_eq!(get(addr, "/readyz", None).await.0, 503);
    let _ = std::fs::remove_dir_all(&dir);
}
