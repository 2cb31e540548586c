//! Manifests: YAML or JSON files of one or more releases, read whole before
//! anything is sent, so that a file that does not parse changes nothing.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use meshrelease_wire::asm::v2 as pb;
use serde::Deserialize as _;
use serde_json::Value;

/// One release of a manifest, and where it came from (for messages).
pub struct Document {
    pub origin: String,
    pub release: pb::Release,
}

/// Every release in `files` (`-` is standard input), in order.
pub fn read_all(files: &[String]) -> anyhow::Result<Vec<Document>> {
    let mut documents = Vec::new();
    for file in files {
        let text = if file == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            text
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
        };
        let name = if file == "-" {
            "<stdin>"
        } else {
            file.as_str()
        };
        for (index, value) in parse(&text)
            .with_context(|| format!("{name}: not YAML or JSON"))?
            .into_iter()
            .enumerate()
        {
            for (item, value) in flatten(value).into_iter().enumerate() {
                let origin = match item {
                    0 => format!("{name}: document {}", index + 1),
                    n => format!("{name}: document {}, item {}", index + 1, n + 1),
                };
                let release = to_release(value).with_context(|| origin.clone())?;
                documents.push(Document { origin, release });
            }
        }
    }
    if documents.is_empty() {
        bail!("no releases in {}", files.join(", "));
    }
    Ok(documents)
}

/// The documents of a file: a JSON stream when it reads as one, YAML
/// documents (`---`) otherwise (JSON is YAML, so JSON objects between `---`
/// lines read too, as kubectl reads them). Empty documents are skipped. A
/// file that starts as JSON and reads as neither gets JSON's own error.
fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let json = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>();
        return match json {
            Ok(documents) => Ok(documents),
            Err(json_error) => parse_yaml(text).map_err(|_| json_error.into()),
        };
    }
    parse_yaml(text)
}

fn parse_yaml(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// A list (`kind: List` or `ReleaseList` with `items`, or a JSON array)
/// stands for its items.
fn flatten(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Object(mut object)
            if matches!(
                object.get("kind").and_then(Value::as_str),
                Some("List" | "ReleaseList")
            ) =>
        {
            match object.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::String(_)
        | Value::Object(_)) => vec![other],
    }
}

fn to_release(value: Value) -> anyhow::Result<pb::Release> {
    if !value.is_object() {
        bail!("a release must be an object with metadata and spec");
    }
    let release: pb::Release = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            anyhow::anyhow!("{inner}")
        } else {
            anyhow::anyhow!("{path}: {inner}")
        }
    })?;
    if release.metadata.as_ref().is_none_or(|m| m.name.is_empty()) {
        bail!("metadata.name: is required");
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_json_streams_and_lists_all_read() {
        let yaml = "metadata: {name: one}\n---\n---\nmetadata: {name: two}\n";
        assert_eq!(parse(yaml).unwrap().len(), 2);
        let json = r#"{"metadata":{"name":"one"}} {"metadata":{"name":"two"}}"#;
        assert_eq!(parse(json).unwrap().len(), 2);
        // JSON objects as YAML documents (what `kubectl get -o json` pieces
        // joined by `---` look like).
        let stream =
            "{\n  \"metadata\": {\"name\": \"one\"}\n}\n---\n{\"metadata\": {\"name\": \"two\"}}\n";
        let documents = parse(stream).unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1]["metadata"]["name"], "two");
        // Broken JSON is told in JSON's words.
        let broken = parse("{\"metadata\": {\"name\": \"one\"")
            .unwrap_err()
            .to_string();
        assert!(broken.contains("line 1 column"), "{broken}");
        let list = serde_json::json!({"kind": "List", "items": [{"a": 1}, {"b": 2}]});
        assert_eq!(flatten(list).len(), 2);
    }

    #[test]
    fn a_field_that_does_not_read_is_named() {
        let value = serde_json::json!({"metadata": {"name": "one"}, "spec": {"trafficPolicy": {"weight": "x"}}});
        let error = to_release(value).unwrap_err().to_string();
        assert!(error.starts_with("spec.trafficPolicy.weight: "), "{error}");
        let value = serde_json::json!({"metadata": {"name": "one"}, "spec": {"colour": 1}});
        let error = to_release(value).unwrap_err().to_string();
        assert!(error.contains("colour"), "{error}");
        let error = to_release(serde_json::json!({"spec": {}}))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "metadata.name: is required");
    }
}
