//! docker-compose.yml is a valid Compose file (checked by docker-compose
//! itself, which needs no Docker engine for `config`), has every service of
//! the stack with health checks and start order, mounts only files that
//! exist, and the revpulse configuration it ships passes `config check`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The normalized file, as `docker-compose config` prints it, in JSON.
fn compose_config() -> Value {
    let out = Command::new("docker-compose")
        .current_dir(REPO)
        .args(["-f", "docker-compose.yml", "config"])
        .output()
        .expect("docker-compose not found: scripts/setup.sh installs it (Debian package docker-compose)");
    assert!(out.status.success(), "docker-compose config:\n{}", String::from_utf8_lossy(&out.stderr));
    // Debian's docker-compose brings python3-yaml; YAML → JSON through it.
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut py.stdin.take().expect("stdin"), &out.stdout).expect("write");
    let json = py.wait_with_output().expect("python3 yaml");
    serde_json::from_slice(&json.stdout).expect("compose config as JSON")
}

#[test]
fn compose_file_is_valid_and_complete() {
    let cfg = compose_config();
    let services = cfg["services"].as_object().expect("services");
    for name in ["kafka", "kafka-init", "schema-registry", "clickhouse", "revpulse", "loadgen", "prometheus", "grafana"]
    {
        assert!(services.contains_key(name), "service {name} missing");
    }
    for name in ["kafka", "schema-registry", "clickhouse", "revpulse", "prometheus", "grafana"] {
        assert!(services[name]["healthcheck"]["test"].is_array(), "{name} has no health check");
    }
    let kafka_env = &services["kafka"]["environment"];
    assert!(kafka_env["KAFKA_PROCESS_ROLES"].as_str().is_some_and(|r| r.contains("controller")), "Kafka runs KRaft");
    assert_eq!(services["revpulse"]["depends_on"]["kafka-init"]["condition"], "service_completed_successfully");
    assert_eq!(services["revpulse"]["depends_on"]["clickhouse"]["condition"], "service_healthy");
    assert!(services["revpulse"]["build"].is_object(), "revpulse is built from the Dockerfile");
    assert_eq!(services["grafana"]["environment"]["GF_INSTALL_PLUGINS"], "grafana-clickhouse-datasource");

    // Every bind mount points at something in the repository.
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let source = v["source"].as_str().or_else(|| v.as_str().and_then(|s| s.split(':').next())).unwrap_or("");
            if source.starts_with('/') {
                assert!(Path::new(source).exists(), "{name}: mounted {source} does not exist");
            }
        }
    }

    // Topics the stack creates are the ones revpulse reads.
    let init = services["kafka-init"]["command"].to_string();
    for t in ["impressions", "conversations", "messages", "payments", "ro_updates", "deals", "revpulse.dlq"] {
        assert!(init.contains(t), "kafka-init does not create {t}");
    }
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage Dockerfile");
}

#[test]
fn shipped_configurations_pass_config_check() {
    for file in ["deploy/revpulse.toml", "config/revpulse.example.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_revpulse"))
            .args(["config", "check", "--config"])
            .env_remove("REVPULSE_CONFIG")
            .arg(Path::new(REPO).join(file))
            .env("REVPULSE__CLICKHOUSE__PASSWORD", "from-env")
            .output()
            .expect("revpulse config check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("[clickhouse]") && stdout.contains("<redacted>"), "{file}: {stdout}");
        assert!(!stdout.contains("from-env"), "secrets are not printed");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_revpulse"))
        .args(["config", "check"])
        .env_remove("REVPULSE_CONFIG")
        .env("REVPULSE__KAFKA__FORMATS__PAYMENTS", "avro")
        .output()
        .expect("revpulse config check");
    assert_eq!(out.status.code(), Some(1), "avro without a registry is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema_registry"));
}
