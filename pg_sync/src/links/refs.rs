// Checking what callers pass to the link functions: relation names, refs objects
// ({"github": "12", "trello": "abc"}) and their values; each failure raises a clear error.
use pgrx::JsonB;
use serde_json::Value;

use crate::error::*;

const REFS_HINT: &str = "Write refs as a JSON object naming two systems, e.g. '{\"github\": \"12\", \"trello\": \"abc\"}'::jsonb.";

pub fn relation(relation: Option<&str>, func: &str) -> String {
    match relation {
        Some(r) if !r.trim().is_empty() => r.to_string(),
        _ => raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!(
                "{func}: relation must be a non-empty text, got {}",
                shown(relation)
            ),
            "Name the kind of link, e.g. 'partner'.",
        ),
    }
}

/// A non-empty reference (row id or external ref).
pub fn reference(value: Option<&str>, func: &str, what: &str) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!(
                "{func}: {what} must be a non-empty value, got {}",
                shown(value)
            ),
            "Pass the reference of the record to link.",
        ),
    }
}

fn shown(v: Option<&str>) -> String {
    v.map(|s| format!("'{s}'")).unwrap_or_else(|| "NULL".into())
}

/// A JSON scalar as a reference text; objects, arrays, booleans and null are refused.
pub fn scalar(value: &Value, system: &str, func: &str) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        other => raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: the ref of system \"{system}\" must be a non-empty string or a number, got {other}"),
            REFS_HINT,
        ),
    }
}

/// The two (system, value) pairs of a refs object, sorted by system name (bytewise,
/// the order link rows keep them in).
pub fn two_systems<'a>(refs: &'a Option<JsonB>, func: &str) -> [(String, &'a Value); 2] {
    let Some(JsonB(value)) = refs else {
        raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: refs must not be NULL"),
            REFS_HINT,
        )
    };
    let Value::Object(map) = value else {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: refs must be a JSON object naming two systems, got {value}"),
            REFS_HINT,
        )
    };
    if map.len() != 2 {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "{func}: refs must name exactly two systems, got {} ({value})",
                map.len()
            ),
            REFS_HINT,
        )
    }
    let mut pairs: Vec<(String, &Value)> = map.iter().map(|(k, v)| (k.clone(), v)).collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if pairs.iter().any(|(system, _)| system.is_empty()) {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: system names must not be empty, got {value}"),
            REFS_HINT,
        )
    }
    let second = pairs.pop().expect("two entries");
    let first = pairs.pop().expect("two entries");
    [first, second]
}

/// A ref filter for searches: null = no filter, a scalar, or an array of scalars.
pub fn filter(value: &Value, system: &str, func: &str) -> Option<Vec<String>> {
    match value {
        Value::Null => None,
        Value::Array(items) => Some(items.iter().map(|v| scalar(v, system, func)).collect()),
        v => Some(vec![scalar(v, system, func)]),
    }
}

/// Link ids of sync_update_links / sync_unlink; NULL elements are skipped.
pub fn link_ids(ids: Option<Vec<Option<i64>>>, func: &str) -> Vec<i64> {
    match ids {
        Some(v) => v.into_iter().flatten().collect(),
        None => raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: link_ids must not be NULL"),
            "Pass an array of link ids, e.g. ARRAY[1, 2].",
        ),
    }
}
