//! Checks a JSON value against a structural OpenAPI v3 schema the way the Kubernetes API
//! server does (types, enums, patterns, lengths, ranges, required fields, list-map keys), and
//! additionally reports unknown fields, which `kubectl` rejects and a plain API create drops
//! silently.
//!
//! Invariant: every error names the path of the offending field in the form
//! `spec.content[2].match.regex`, so callers can point at the line it came from.

use std::collections::{BTreeSet, HashMap};

use regex::Regex;
use serde_json::{Map, Value};

use crate::FieldError;

/// Fields of every object that the API server checks itself and CRD schemas leave out.
const IMPLICIT_ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// A checker with a cache of compiled patterns (policies may hold thousands of list items
/// sharing one pattern).
#[derive(Default)]
pub(crate) struct SchemaChecker {
    patterns: HashMap<String, Option<Regex>>,
    errors: Vec<FieldError>,
}

impl SchemaChecker {
    /// Checks `value` against `schema`, returning every problem found.
    pub(crate) fn check(mut self, schema: &Value, value: &Value) -> Vec<FieldError> {
        self.walk(schema, value, "");
        self.errors
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn walk(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(schema) = schema.as_object() else {
            return;
        };
        if value.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) {
                self.error(path, "must not be null");
            }
            return;
        }
        if schema.contains_key("x-kubernetes-preserve-unknown-fields")
            && !schema.contains_key("properties")
        {
            return;
        }
        if schema.contains_key("x-kubernetes-int-or-string") {
            if !(value.is_i64() || value.is_u64() || value.is_string()) {
                self.error(path, "must be an integer or a string");
            }
            return;
        }
        let expected = schema.get("type").and_then(Value::as_str).unwrap_or("");
        let type_ok = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !type_ok {
            self.error(
                path,
                format!(
                    "must be {} {expected}, not {}",
                    article(expected),
                    describe(value)
                ),
            );
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            self.error(
                path,
                format!(
                    "unsupported value {value}: supported values are {}",
                    names.join(", ")
                ),
            );
        }
        match value {
            Value::String(text) => self.string(schema, text, path),
            Value::Number(number) => self.number(schema, number.as_f64().unwrap_or_default(), path),
            Value::Array(items) => self.array(schema, items, path),
            Value::Object(fields) => self.object(schema, fields, path),
            _ => {}
        }
    }

    fn string(&mut self, schema: &Map<String, Value>, text: &str, path: &str) {
        let chars = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            self.error(path, format!("must be at least {min} characters long"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            self.error(path, format!("may not be longer than {max} characters"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let compiled = self
                .patterns
                .entry(pattern.to_owned())
                .or_insert_with(|| Regex::new(pattern).ok());
            if compiled.as_ref().is_some_and(|re| !re.is_match(text)) {
                self.error(path, format!("{text:?} should match '{pattern}'"));
            }
        }
    }

    fn number(&mut self, schema: &Map<String, Value>, number: f64, path: &str) {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && number < min
        {
            self.error(path, format!("should be greater than or equal to {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && number > max
        {
            self.error(path, format!("should be less than or equal to {max}"));
        }
    }

    fn array(&mut self, schema: &Map<String, Value>, items: &[Value], path: &str) {
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            self.error(path, format!("must have at least {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            self.error(path, format!("must have at most {max} items"));
        }
        if let Some(keys) = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
        {
            let mut seen = BTreeSet::new();
            for (index, item) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|k| item.get(k).map(Value::to_string).unwrap_or_default())
                    .collect();
                if !seen.insert(key.clone()) {
                    self.error(
                        &format!("{path}[{index}]"),
                        format!("duplicate entry for key {}", key.join(",")),
                    );
                }
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                self.walk(item_schema, item, &format!("{path}[{index}]"));
            }
        }
    }

    fn object(&mut self, schema: &Map<String, Value>, fields: &Map<String, Value>, path: &str) {
        let join = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = required.as_str()
                && !fields.contains_key(name)
            {
                self.error(&join(name), "required field is missing");
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let preserve = schema.contains_key("x-kubernetes-preserve-unknown-fields");
        for (name, child) in fields {
            if path.is_empty() && IMPLICIT_ROOT_FIELDS.contains(&name.as_str()) {
                continue;
            }
            if let Some(property) = properties.and_then(|p| p.get(name)) {
                self.walk(property, child, &join(name));
            } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                self.walk(additional, child, &join(name));
            } else if let Some(known) = properties.filter(|_| !preserve) {
                let hint = closest(name, known.keys().map(String::as_str))
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                let list: Vec<&str> = known.keys().map(String::as_str).collect();
                self.error(
                    &join(name),
                    format!(
                        "unknown field{hint}; known fields here: {}",
                        list.join(", ")
                    ),
                );
            }
        }
    }
}

fn article(word: &str) -> &'static str {
    if matches!(
        word.as_bytes().first(),
        Some(b'a' | b'e' | b'i' | b'o' | b'u')
    ) {
        "an"
    } else {
        "a"
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The known name closest to a misspelt one, when it is close enough to be a likely typo.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(schema: Value, value: Value) -> Vec<String> {
        SchemaChecker::default()
            .check(&schema, &value)
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn reports_each_kind_of_problem_with_its_path() {
        let schema = json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "count": {"type": "integer", "minimum": 1, "maximum": 3},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "items": {"type": "array", "maxItems": 1, "items": {"type": "object", "properties": {"wholeWord": {"type": "boolean"}}}}
        }});
        let errors = check(
            schema,
            json!({"count": 9, "mode": "c", "items": [{"wholeword": true}, {}], "name2": 1}),
        );
        assert!(
            errors.contains(&"name: required field is missing".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"count: should be less than or equal to 3".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("mode: unsupported value \"c\"")),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"items: must have at most 1 items".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e
                .starts_with("items[0].wholeword: unknown field (did you mean \"wholeWord\"?)")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("name2: unknown field (did you mean \"name\"?)")),
            "{errors:?}"
        );
    }

    #[test]
    fn accepts_a_valid_value() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}});
        assert!(check(schema, json!({"name": "ok"})).is_empty());
    }

    #[test]
    fn type_mismatch_is_reported_once() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}});
        assert_eq!(
            check(schema, json!({"n": "x"})),
            vec!["n: must be an integer, not a string"]
        );
    }
}
