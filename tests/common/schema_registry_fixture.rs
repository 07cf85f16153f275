//! TEST FIXTURE, not a schema registry: the handful of Confluent Schema
//! Registry REST endpoints `schema_registry_converter` calls, in memory, so
//! the Avro path can be tested where no JVM registry can be installed.
//! Behaves like the real one where it matters here: ids are global and
//! stable per schema text, unknown ids answer 404 with error code 40403, and
//! `set_available(false)` makes every call answer 503 (an outage).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Store {
    /// Schema text by id (ids start at 1).
    schemas: Vec<String>,
    /// Subject → ids of its versions, oldest first.
    subjects: HashMap<String, Vec<u32>>,
}

#[derive(Clone, Default)]
struct Registry {
    store: Arc<Mutex<Store>>,
    available: Arc<AtomicBool>,
}

pub struct RegistryFixture {
    pub url: String,
    registry: Registry,
}

impl RegistryFixture {
    /// Serves on a free loopback port of the current tokio runtime.
    pub async fn start() -> RegistryFixture {
        let registry = Registry::default();
        registry.available.store(true, Ordering::Relaxed);
        let app = Router::new()
            .route("/subjects", get(subjects))
            .route("/subjects/{subject}/versions", post(register))
            .route("/subjects/{subject}/versions/latest", get(latest))
            .route("/schemas/ids/{id}", get(by_id))
            .with_state(registry.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind registry fixture");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        RegistryFixture { url, registry }
    }

    pub fn set_available(&self, up: bool) {
        self.registry.available.store(up, Ordering::Relaxed);
    }

    /// Registers `schema` under `subject` directly; returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        self.registry.put(subject, schema)
    }
}

impl Registry {
    fn put(&self, subject: &str, schema: &str) -> u32 {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let id = match s.schemas.iter().position(|x| x == schema) {
            Some(i) => i as u32 + 1,
            None => {
                s.schemas.push(schema.to_owned());
                s.schemas.len() as u32
            }
        };
        let versions = s.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        id
    }

    fn down(&self) -> Option<Response> {
        (!self.available.load(Ordering::Relaxed)).then(|| {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error_code": 50301, "message": "fixture is down"})))
                .into_response()
        })
    }
}

fn not_found(code: u32, message: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error_code": code, "message": message}))).into_response()
}

async fn subjects(State(r): State<Registry>) -> Response {
    if let Some(down) = r.down() {
        return down;
    }
    let s = r.store.lock().unwrap_or_else(|e| e.into_inner());
    Json(s.subjects.keys().cloned().collect::<Vec<_>>()).into_response()
}

async fn register(State(r): State<Registry>, Path(subject): Path<String>, Json(body): Json<Value>) -> Response {
    if let Some(down) = r.down() {
        return down;
    }
    let Some(schema) = body.get("schema").and_then(Value::as_str) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error_code": 42201, "message": "no schema"})))
            .into_response();
    };
    Json(json!({"id": r.put(&subject, schema)})).into_response()
}

async fn latest(State(r): State<Registry>, Path(subject): Path<String>) -> Response {
    if let Some(down) = r.down() {
        return down;
    }
    let s = r.store.lock().unwrap_or_else(|e| e.into_inner());
    match s.subjects.get(&subject).and_then(|v| v.last().map(|id| (v.len(), *id))) {
        Some((version, id)) => Json(json!({
            "subject": subject, "version": version, "id": id, "schema": s.schemas[id as usize - 1],
        }))
        .into_response(),
        None => not_found(40401, "Subject not found"),
    }
}

async fn by_id(State(r): State<Registry>, Path(id): Path<u32>) -> Response {
    if let Some(down) = r.down() {
        return down;
    }
    let s = r.store.lock().unwrap_or_else(|e| e.into_inner());
    match id.checked_sub(1).and_then(|i| s.schemas.get(i as usize)) {
        Some(schema) => Json(json!({"schema": schema})).into_response(),
        None => not_found(40403, "Schema not found"),
    }
}
