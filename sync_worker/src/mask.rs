// Masking a project's secret values: every log line, error and result an executor writes
// passes through a Masker built from the project's secrets, so none reaches sync.log.
//
// A value is also masked in the forms it takes on the way out: percent-encoded (in a
// URL) and JSON-escaped (in a body). One automaton finds them all in one pass.
use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;
use std::borrow::Cow;

/// What a masked value is replaced with.
pub const MASK: &str = "***";

#[derive(Default)]
pub struct Masker {
    finder: Option<AhoCorasick>,
}

impl Masker {
    /// A masker for these values (empty ones are ignored).
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Masker {
        let mut needles: Vec<String> = Vec::new();
        for v in values {
            if v.is_empty() {
                continue;
            }
            let encoded: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            let escaped = serde_json::to_string(&v).unwrap_or_default();
            let escaped = escaped
                .strip_prefix('"')
                .and_then(|e| e.strip_suffix('"'))
                .unwrap_or(&v)
                .to_string();
            needles.push(v);
            needles.push(encoded);
            needles.push(escaped);
        }
        needles.sort();
        needles.dedup();
        if needles.is_empty() {
            return Masker::default();
        }
        // Leftmost-longest: a secret containing another is masked whole.
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .ok();
        Masker { finder }
    }

    /// A masker from a `mask` JSON array (as sync.project_runtime gives it).
    pub fn from_json(list: Option<&Value>) -> Masker {
        let values = list
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Masker::new(values)
    }

    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match &self.finder {
            Some(f) if f.is_match(s) => Cow::Owned(f.replace_all(s, &vec![MASK; f.patterns_len()])),
            _ => Cow::Borrowed(s),
        }
    }

    pub fn string(&self, s: String) -> String {
        match self.text(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(m) => m,
        }
    }

    /// Mask every string of a JSON value, object keys included.
    pub fn json(&self, v: Value) -> Value {
        if self.finder.is_none() {
            return v;
        }
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, x)| (self.string(k), self.json(x)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_values_and_their_encoded_forms() {
        let m = Masker::new(["s3cr/et\"x".to_string(), "tok".to_string(), String::new()]);
        assert_eq!(m.text("a s3cr/et\"x b"), "a *** b");
        assert_eq!(m.text("url?k=s3cr%2Fet%22x"), "url?k=***");
        assert_eq!(m.text(r#"{"k":"s3cr/et\"x"}"#), r#"{"k":"***"}"#);
        assert_eq!(m.text("token"), "***en");
        assert_eq!(m.text("nothing here"), "nothing here");
        let v = m.json(json!({"tok": ["x tok", 1, {"n": "s3cr/et\"x"}]}));
        assert_eq!(v, json!({"***": ["x ***", 1, {"n": "***"}]}));
    }

    #[test]
    fn longest_secret_wins() {
        let m = Masker::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(m.text("xabcdefy abc"), "x***y ***");
    }

    #[test]
    fn empty_masker_changes_nothing() {
        let m = Masker::from_json(None);
        assert_eq!(m.text("abc"), "abc");
        assert_eq!(m.json(json!({"a": "b"})), json!({"a": "b"}));
    }
}
