//! `google.api.http` path templates: parsing and matching.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! Verb     = ":" LITERAL ;
//! ```

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: the rest of the path, zero or more segments.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    part: Part,
    /// The variable this segment belongs to, if any.
    variable: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    slots: Vec<Slot>,
    /// Field paths, such as `mesh_id` or `release.metadata.name`.
    variables: Vec<String>,
    verb: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let fail = |reason: &str| TemplateError {
            template: text.to_owned(),
            reason: reason.to_owned(),
        };
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| fail("must start with '/'"))?;
        let (body, verb) = split_verb(body);
        let mut template = PathTemplate {
            text: text.to_owned(),
            slots: Vec::new(),
            variables: Vec::new(),
            verb: verb.map(str::to_owned),
        };
        let mut rest = body;
        while !rest.is_empty() || template.slots.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after.find('}').ok_or_else(|| fail("unclosed '{'"))?;
                let inner = &after[..end];
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                if field.is_empty()
                    || !field.split('.').all(|p| {
                        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                {
                    return Err(fail("a variable needs a field path"));
                }
                let index = template.variables.len();
                template.variables.push(field.to_owned());
                for segment in pattern.split('/') {
                    let part =
                        parse_part(segment).ok_or_else(|| fail("bad segment inside a variable"))?;
                    template.slots.push(Slot {
                        part,
                        variable: Some(index),
                    });
                }
                rest = &after[end + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                let part = parse_part(&rest[..end]).ok_or_else(|| fail("bad segment"))?;
                template.slots.push(Slot {
                    part,
                    variable: None,
                });
                rest = &rest[end..];
            }
            match rest.strip_prefix('/') {
                Some(after) if !after.is_empty() => rest = after,
                Some(_) => return Err(fail("must not end with '/'")),
                None if rest.is_empty() => break,
                None => return Err(fail("a segment must end at '/'")),
            }
        }
        let rest_at = template.slots.iter().position(|s| s.part == Part::Rest);
        if rest_at.is_some_and(|i| i + 1 != template.slots.len()) {
            return Err(fail("'**' must be the last segment"));
        }
        Ok(template)
    }

    /// Whether it ends in a custom verb (`/{name}:pause`).
    pub fn has_verb(&self) -> bool {
        self.verb.is_some()
    }

    /// The field paths bound by this template, in order.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// Matches a request path (still percent-encoded) and returns each
    /// variable's field path with its decoded value.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let body = path.strip_prefix('/')?;
        let body = match &self.verb {
            Some(verb) => body.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => body,
        };
        let segments: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        let mut captured: Vec<Vec<&str>> = vec![Vec::new(); self.variables.len()];
        let mut i = 0;
        for slot in &self.slots {
            let taken: &[&str] = match &slot.part {
                Part::Literal(lit) => {
                    let segment = segments.get(i)?;
                    if percent_decode(segment, true)? != *lit {
                        return None;
                    }
                    &segments[i..=i]
                }
                Part::One => {
                    let segment = segments.get(i)?;
                    if segment.is_empty() {
                        return None;
                    }
                    &segments[i..=i]
                }
                Part::Rest => &segments[i..],
            };
            i += taken.len();
            if let Some(v) = slot.variable {
                captured[v].extend_from_slice(taken);
            }
        }
        if i != segments.len() {
            return None;
        }
        self.variables
            .iter()
            .zip(captured)
            .map(|(field, parts)| {
                let value = if parts.len() == 1 {
                    percent_decode(parts[0], true)?
                } else {
                    // Multi-segment values keep an encoded '/' encoded, so the
                    // segments stay recoverable.
                    percent_decode(&parts.join("/"), false)?
                };
                Some((field.clone(), value))
            })
            .collect()
    }
}

fn split_verb(body: &str) -> (&str, Option<&str>) {
    let last_segment_start = body.rfind(['/', '}']).map_or(0, |i| i + 1);
    match body[last_segment_start..].rfind(':') {
        Some(at) => {
            let at = last_segment_start + at;
            (&body[..at], Some(&body[at + 1..]))
        }
        None => (body, None),
    }
}

fn parse_part(segment: &str) -> Option<Part> {
    match segment {
        "" => None,
        "*" => Some(Part::One),
        "**" => Some(Part::Rest),
        lit if lit.contains(['{', '}', '*', '=']) => None,
        lit => Some(Part::Literal(lit.to_owned())),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(text: &str, decode_slash: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if value == b'/' && !decode_slash {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(value);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(t).unwrap().matches(path)
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn simple_variables() {
        let t = "/v2/meshes/{mesh_id}/namespaces/{namespace}/releases";
        assert_eq!(
            vars(t, "/v2/meshes/m1/namespaces/default/releases"),
            pairs(&[("mesh_id", "m1"), ("namespace", "default")])
        );
        assert_eq!(vars(t, "/v2/meshes/m1/namespaces/default/releases/x"), None);
        assert_eq!(vars(t, "/v2/meshes//namespaces/default/releases"), None);
        assert_eq!(vars(t, "/v2/meshes/m1/namespaces/default"), None);
        assert_eq!(
            vars(t, "/v2/meshes/a%20b/namespaces/d/releases"),
            pairs(&[("mesh_id", "a b"), ("namespace", "d")])
        );
        assert_eq!(vars(t, "/v2/meshes/%zz/namespaces/d/releases"), None);
    }

    #[test]
    fn nested_patterns_rest_and_verbs() {
        assert_eq!(
            vars(
                "/v1/{name=projects/*/items/*}:cancel",
                "/v1/projects/p/items/i:cancel"
            ),
            pairs(&[("name", "projects/p/items/i")])
        );
        assert_eq!(
            vars(
                "/v1/{name=projects/*/items/*}:cancel",
                "/v1/projects/p/items/i"
            ),
            None
        );
        assert_eq!(
            vars("/v1/files/{path=**}", "/v1/files/a/b%2Fc/d"),
            pairs(&[("path", "a/b%2Fc/d")])
        );
        assert_eq!(
            vars("/v1/files/{path=**}", "/v1/files"),
            pairs(&[("path", "")])
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["v1/x", "/v1/{x", "/v1/**/x", "/v1/{}", "/v1/x/", "/v1/a{b}"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn matching_never_panics(path in "\\PC{0,64}") {
            let t = PathTemplate::parse("/v2/meshes/{mesh_id}/releases/{name=**}").unwrap();
            let _ = t.matches(&path);
        }
    }
}
