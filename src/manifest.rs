//! Loading YAML manifests with the line every field came from, so that errors can say
//! `policies/strict.yaml:14: spec.content[1].match.regex: …`.
//!
//! Invariants: every document of every file becomes one [`Document`] (empty documents are
//! skipped); [`Document::line_of`] always answers, falling back to the nearest enclosing field
//! that has a line, then to the document's first line.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// One YAML document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file it came from.
    pub file: PathBuf,
    /// The document as JSON.
    pub value: Value,
    lines: HashMap<String, u64>,
    start: u64,
}

impl Document {
    /// The line of the field at `path` (`spec.content[1].match`), or of its nearest parent.
    pub fn line_of(&self, path: &str) -> u64 {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return *line;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return self.lines.get(path).copied().unwrap_or(self.start),
            }
        }
    }

    /// The first line of the document.
    pub fn start_line(&self) -> u64 {
        self.start
    }

    /// `kind` and `metadata.name`, for messages.
    pub fn describe(&self) -> String {
        let kind = self
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("document");
        match self.value.pointer("/metadata/name").and_then(Value::as_str) {
            Some(name) => format!("{kind} {name}"),
            None => kind.to_owned(),
        }
    }
}

/// A file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// Where, when known.
    pub line: Option<u64>,
    /// What went wrong.
    pub message: String,
}

/// The YAML files named by `paths`: files as given, folders searched recursively for
/// `*.yaml` and `*.yml`, in a stable order.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|e| LoadError {
            file: path.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        if metadata.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |e: std::io::Error| LoadError {
        file: dir.to_owned(),
        line: None,
        message: format!("cannot read folder: {e}"),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, files)?;
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(entry);
        }
    }
    Ok(())
}

/// Parses every document of one file.
pub fn load_file(file: &Path) -> Result<Vec<Document>, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|e| LoadError {
        file: file.to_owned(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &text)
}

/// Parses every document of `text`, reporting errors against `file`.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Document>, LoadError> {
    let documents: Vec<Spanned<Node>> =
        serde_saphyr::from_multiple(text).map_err(|e| LoadError {
            file: file.to_owned(),
            line: e.location().map(|l| l.line()),
            message: format!("not valid YAML: {}", first_line(&e.to_string())),
        })?;
    Ok(documents
        .into_iter()
        .filter(|d| !matches!(d.value, Node::Null))
        .map(|document| {
            let start = document.referenced.line();
            let mut lines = HashMap::new();
            let value = to_json(document, String::new(), &mut lines);
            Document {
                file: file.to_owned(),
                value,
                lines,
                start,
            }
        })
        .collect())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn to_json(node: Spanned<Node>, path: String, lines: &mut HashMap<String, u64>) -> Value {
    lines.insert(path.clone(), node.referenced.line());
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(i.into()),
        Node::UInt(u) => Value::Number(u.into()),
        Node::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, format!("{path}[{i}]"), lines))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (key, child) in entries {
                let name = key.value;
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                let value = to_json(child, child_path.clone(), lines);
                lines.insert(child_path, key.referenced.line());
                map.insert(name, value);
            }
            Value::Object(map)
        }
    }
}

/// A YAML node whose children carry their source location.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Keys keep their own location: a field is reported at its key's line.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tracked_per_field_and_document() {
        let text = "a: 1\n---\nkind: IMPolicy\nmetadata:\n  name: p\nspec:\n  content:\n    - name: x\n      match:\n        regex: \"(\"\n";
        let documents = parse(Path::new("f.yaml"), text).expect("parses");
        assert_eq!(documents.len(), 2);
        let policy = &documents[1];
        assert_eq!(policy.describe(), "IMPolicy p");
        assert_eq!(policy.line_of("spec.content[0].match.regex"), 10);
        assert_eq!(policy.line_of("spec.content[0].match.regex.deeper[3]"), 10);
        assert_eq!(policy.line_of("spec.content[0].name"), 8);
        assert_eq!(policy.line_of("spec.missing"), 6);
        assert_eq!(policy.value["spec"]["content"][0]["match"]["regex"], "(");
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_fails_cleanly(text in "(\\PC|\n| |:|-|\\[|\\]|\\{|\\}|&|\\*){0,200}") {
            match parse(Path::new("f.yaml"), &text) {
                Ok(documents) => {
                    for document in documents {
                        proptest::prop_assert!(document.line_of("a.b[0].c") >= 1);
                    }
                }
                Err(error) => proptest::prop_assert!(!error.message.is_empty()),
            }
        }
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let error = parse(Path::new("f.yaml"), "a: 1\nb: [unclosed\nc: 2\n").expect_err("bad YAML");
        assert!(error.line.is_some(), "{error}");
        assert!(error.to_string().starts_with("f.yaml:"), "{error}");
    }
}
