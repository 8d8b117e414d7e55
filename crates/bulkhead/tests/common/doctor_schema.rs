//! The doctor's JSON checked against its documentation: every field of a real report is in the schema table of
//! docs/doctor.md with a documented type, and every documented field is in the report (shared by the doctor tests).

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_testkit::repo;
use serde_json::Value;

/// `path -> allowed types` from the doctor table of docs/doctor.md.
pub fn documented_schema() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo().join("docs/doctor.md")).unwrap();
    let section = text.split("## JSON schema `bulkhead.doctor/1`").nth(1).expect("doctor schema section");
    let section = section.split("\n## ").next().unwrap();
    let mut schema = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let path = cells[0].trim_start_matches("| ").trim_matches('`').to_string();
        let types = cells[1].replace("\\|", "|").split('|').map(|t| t.trim().to_string()).collect();
        schema.insert(path, types);
    }
    assert!(schema.len() > 100, "the schema table was not found: {} rows", schema.len());
    schema
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every (path, type) in `v`; maps and free-form JSON are not descended into.
fn walk(v: &Value, path: &str, schema: &BTreeMap<String, BTreeSet<String>>, seen: &mut BTreeMap<String, String>) {
    let t = type_of(v);
    let doc = schema.get(path);
    let opaque = doc.is_some_and(|d| d.contains("map") || d.contains("json"));
    let t = if opaque && t != "null" {
        if doc.unwrap().contains("map") {
            "map"
        } else {
            "json"
        }
    } else {
        t
    };
    seen.insert(path.to_string(), t.to_string());
    if opaque {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(x, &p, schema, seen);
            }
        }
        Value::Array(a) => {
            for x in a {
                walk(x, &format!("{path}[]"), schema, seen);
            }
        }
        _ => {}
    }
}

/// The report has exactly the documented fields, with the documented types.
pub fn assert_matches_schema(report: &Value) {
    let schema = documented_schema();
    let mut seen = BTreeMap::new();
    walk(report, "", &schema, &mut seen);
    for (path, t) in &seen {
        if path.is_empty() {
            continue;
        }
        let allowed = schema.get(path).unwrap_or_else(|| panic!("`{path}` ({t}) is not documented in docs/doctor.md"));
        assert!(allowed.contains(t), "`{path}` is {t}, docs/doctor.md says {allowed:?}");
    }
    for path in schema.keys() {
        let parent = match path.rsplit_once('.') {
            Some((p, _)) => p.to_string(),
            None => String::new(),
        };
        let parent_is_object = parent.is_empty() || seen.get(&parent).is_some_and(|t| t == "object");
        if parent_is_object && !path.ends_with("[]") {
            assert!(seen.contains_key(path), "documented `{path}` is missing from the report");
        }
    }
}
