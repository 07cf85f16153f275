//! The JSON Schemas in `schemas/json/` and the typed decoder agree: every
//! generated event is valid under both, and every mutation that breaks a
//! SPEC §2.6 rule (derived from the schema itself: each required field
//! removed, each field given a wrong type, an out-of-range number, an unknown
//! enum value, an over-long string, an unparsable timestamp) is rejected by
//! both.

use revpulse::generate::{GenConfig, Generator};
use revpulse_pipelines::event::{decode_value, Topic};
use serde_json::{json, Value};

fn schema(topic: Topic) -> Value {
    let path = format!("{}/schemas/json/{}.schema.json", env!("CARGO_MANIFEST_DIR"), topic.name());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn resolve<'a>(schema: &'a Value, prop: &'a Value) -> &'a Value {
    match prop.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => &schema["$defs"][name],
        None => prop,
    }
}

/// Values that break the rule of a property's schema.
fn breakers(schema: &Value, prop: &Value) -> Vec<Value> {
    let p = resolve(schema, prop);
    let mut out = vec![];
    if p.get("enum").is_some() {
        out.push(json!("no_such_value"));
        out.push(json!(3));
    }
    match p.get("type").and_then(Value::as_str) {
        Some("string") => {
            out.push(json!(17));
            let max = p.get("maxLength").and_then(Value::as_u64).unwrap_or(1024) as usize;
            out.push(json!("x".repeat(max + 1)));
            if p.get("format").is_some() {
                out.push(json!("not a timestamp"));
                out.push(json!("2026-02-30T00:00:00Z"));
            }
            if p.get("minLength").is_some() {
                out.push(json!(""));
            }
        }
        Some("integer") => {
            out.extend([json!(-1), json!(1.5), json!("12")]);
        }
        Some("number") => {
            out.push(json!("0.5"));
            if let Some(max) = p.get("maximum").and_then(Value::as_f64) {
                out.push(json!(max + 0.5));
            }
            if let Some(min) = p.get("minimum").and_then(Value::as_f64) {
                out.push(json!(min - 0.5));
            }
        }
        Some("boolean") => out.push(json!("yes")),
        Some("object") | Some("array") => out.push(json!(5)),
        _ => {}
    }
    out
}

#[test]
fn schemas_and_decoder_agree() {
    let mut generator = Generator::new(GenConfig { seed: 3, ..GenConfig::default() });
    let mut checked = 0;
    let mut samples: Vec<(Topic, Value)> = Vec::new();
    let validators: Vec<(Topic, jsonschema::Validator)> = Topic::ALL
        .iter()
        .map(|&t| (t, jsonschema::options().should_validate_formats(true).build(&schema(t)).expect("schema compiles")))
        .collect();
    let validator = |t: Topic| &validators.iter().find(|(x, _)| *x == t).expect("validator").1;

    for _ in 0..3_000 {
        let r = generator.next_record();
        let Some(payload) = r.payload else { continue };
        let value: Value = serde_json::from_str(&payload).expect("generated JSON");
        assert!(validator(r.topic).is_valid(&value), "schema rejects generated {payload}");
        assert!(decode_value(r.topic, payload.as_bytes()).is_ok());
        if samples.iter().filter(|(t, _)| *t == r.topic).count() < 3 {
            samples.push((r.topic, value));
        }
    }

    for (topic, sample) in &samples {
        let schema = schema(*topic);
        let v = validator(*topic);
        let mut mutations: Vec<(String, Value)> = Vec::new();
        for req in schema["required"].as_array().expect("required list") {
            let name = req.as_str().expect("field name");
            let mut m = sample.clone();
            m.as_object_mut().expect("object").remove(name);
            mutations.push((format!("without {name}"), m));
        }
        for (name, prop) in schema["properties"].as_object().expect("properties") {
            if sample.get(name).is_none() {
                continue;
            }
            for bad in breakers(&schema, prop) {
                let mut m = sample.clone();
                m[name] = bad.clone();
                mutations.push((format!("{name} = {}", bad.to_string().chars().take(40).collect::<String>()), m));
            }
        }
        for (what, m) in mutations {
            let text = m.to_string();
            let by_schema = v.is_valid(&m);
            let by_decoder = decode_value(*topic, text.as_bytes());
            assert!(!by_schema, "{}: schema accepts {what}", topic.name());
            assert!(by_decoder.is_err(), "{}: decoder accepts {what}", topic.name());
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} mutations checked");
}

/// `schemas/avro/<topic>.avsc` mirrors the JSON Schema: the same fields,
/// required ones non-nullable, optional ones `["null", T]` with a null
/// default, and matching types (enums with the same symbols).
#[test]
fn avro_schemas_mirror_the_json_schemas() {
    fn check(json_schema: &Value, obj: &Value, avro: &Value, at: &str) {
        let props = obj["properties"].as_object().unwrap_or_else(|| panic!("{at}: properties"));
        let required: Vec<&str> =
            obj["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let fields = avro["fields"].as_array().unwrap_or_else(|| panic!("{at}: avro fields"));
        let names: Vec<&str> = fields.iter().filter_map(|f| f["name"].as_str()).collect();
        assert_eq!(names, props.keys().map(String::as_str).collect::<Vec<_>>(), "{at}: field names");
        for f in fields {
            let name = f["name"].as_str().unwrap_or_default();
            let at = format!("{at}.{name}");
            let mut ty = &f["type"];
            if required.contains(&name) {
                assert!(!ty.is_array(), "{at}: required, so not a union");
            } else {
                assert_eq!(ty[0], json!("null"), "{at}: optional fields are [\"null\", T]");
                assert_eq!(f["default"], Value::Null, "{at}: null default");
                assert!(f.as_object().is_some_and(|o| o.contains_key("default")), "{at}: has a default");
                ty = &ty[1];
            }
            let p = resolve(json_schema, &props[name]);
            check_type(json_schema, p, ty, &at);
        }
    }
    fn check_type(json_schema: &Value, p: &Value, ty: &Value, at: &str) {
        if let Some(symbols) = p.get("enum") {
            assert_eq!(ty["type"], json!("enum"), "{at}");
            assert_eq!(&ty["symbols"], symbols, "{at}: symbols");
            return;
        }
        match p["type"].as_str() {
            Some("string") => assert_eq!(ty, &json!("string"), "{at}"),
            Some("number") => assert_eq!(ty, &json!("double"), "{at}"),
            Some("integer") => assert_eq!(ty, &json!("long"), "{at}"),
            Some("boolean") => assert_eq!(ty, &json!("boolean"), "{at}"),
            Some("object") => check(json_schema, p, ty, at),
            Some("array") => {
                assert_eq!(ty["type"], json!("array"), "{at}");
                check_type(json_schema, resolve(json_schema, &p["items"]), &ty["items"], &format!("{at}[]"));
            }
            other => panic!("{at}: JSON type {other:?}"),
        }
    }
    for topic in Topic::ALL {
        let s = schema(topic);
        let avro: Value = serde_json::from_str(revpulse_connectors::schema_registry::avro_schema(topic))
            .unwrap_or_else(|e| panic!("{}.avsc: {e}", topic.name()));
        check(&s, &s, &avro, topic.name());
    }
}
