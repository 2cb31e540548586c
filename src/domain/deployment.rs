//! Gray Deployment templates, checked as Kubernetes would check an apps/v1
//! Deployment, and completed into the object this release creates.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::Violation;
use super::names;
use super::object::{JsonObject, object_mut};

/// The pod label that tells the gray version apart.
pub const VERSION_LABEL: &str = "version";
/// The label the original Deployment's pods must carry besides `version`.
pub const APP_LABEL: &str = "app";

/// What a template is completed with.
pub struct TemplateContext<'a> {
    pub namespace: &'a str,
    pub deployment_name: &'a str,
    pub version: &'a str,
}

/// Checks `template` (reported under `field`) and returns it as it will be
/// created: apiVersion and kind filled in, namespace set, name derived as
/// `<deploymentName>-<version>` where missing, `version` pod label added.
/// Every violation found is pushed; the completed object is returned only
/// when there were none.
pub fn check_and_complete(
    template: &JsonObject,
    field: &str,
    ctx: &TemplateContext<'_>,
    violations: &mut Vec<Violation>,
) -> Option<JsonObject> {
    let before = violations.len();
    let mut out = Checker {
        violations,
        base: field,
    };
    let mut completed = template.clone();

    out.optional_exact(template, "apiVersion", "apps/v1");
    out.optional_exact(template, "kind", "Deployment");
    completed
        .entry("apiVersion")
        .or_insert_with(|| Value::from("apps/v1"));
    completed
        .entry("kind")
        .or_insert_with(|| Value::from("Deployment"));

    // metadata
    let metadata = out.optional_object(template, "metadata", "metadata");
    let derived_name;
    let name = match metadata.and_then(|m| m.get("name")) {
        Some(Value::String(name)) => {
            if let Err(e) = names::check_dns_subdomain(name) {
                out.push("metadata.name", e);
            }
            None
        }
        Some(_) => {
            out.push("metadata.name", "must be a string");
            None
        }
        None => {
            derived_name = format!("{}-{}", ctx.deployment_name, ctx.version);
            // With no deployment name or version, that field's own error says it all.
            let derivable = !ctx.deployment_name.is_empty() && !ctx.version.is_empty();
            if let (true, Err(e)) = (derivable, names::check_dns_subdomain(&derived_name)) {
                out.push(
                    "metadata.name",
                    format!(
                        "is missing, and the derived name {} {e}",
                        names::quoted(&derived_name)
                    ),
                );
            }
            Some(derived_name)
        }
    };
    match metadata.and_then(|m| m.get("namespace")) {
        Some(Value::String(ns)) if ns == ctx.namespace => {}
        Some(_) => out.push(
            "metadata.namespace",
            format!(
                "must be {:?}, the namespace of the release, where given",
                ctx.namespace
            ),
        ),
        None => {}
    }
    if let Some(Value::Object(labels)) = metadata.and_then(|m| m.get("labels")) {
        out.labels(labels, "metadata.labels");
    } else if metadata.is_some_and(|m| m.contains_key("labels")) {
        out.push("metadata.labels", "must be an object of strings");
    }
    {
        let meta = object_mut(&mut completed, "metadata");
        if let Some(name) = name {
            meta.insert("name".into(), Value::from(name));
        }
        meta.insert("namespace".into(), Value::from(ctx.namespace));
    }

    // spec
    let Some(spec) = out.required_object(template, "spec", "spec") else {
        return (violations_len(&out) == before).then_some(completed);
    };
    match spec.get("replicas") {
        None => {}
        // Any JSON number, 3 or 3.0, that is a whole number from 0 to the
        // int32 maximum (every such number is exact as an f64).
        Some(Value::Number(n))
            if n.as_f64()
                .is_some_and(|r| r >= 0.0 && r.fract() == 0.0 && r <= f64::from(i32::MAX)) => {}
        Some(_) => out.push("spec.replicas", "must be a non-negative whole number"),
    }

    let pod = out.required_object(spec, "template", "spec.template");
    let pod_meta = pod.and_then(|p| out.optional_object(p, "metadata", "spec.template.metadata"));
    let mut labels = Map::new();
    match pod_meta.and_then(|m| m.get("labels")) {
        None => {}
        Some(Value::Object(given)) => {
            out.labels(given, "spec.template.metadata.labels");
            labels = given.clone();
        }
        Some(_) => out.push(
            "spec.template.metadata.labels",
            "must be an object of strings",
        ),
    }
    match labels.get(VERSION_LABEL) {
        None => {
            labels.insert(VERSION_LABEL.into(), Value::from(ctx.version));
        }
        Some(Value::String(v)) if v == ctx.version => {}
        Some(other) => out.push(
            "spec.template.metadata.labels.version",
            format!(
                "is {}, but the pods of this gray Deployment must carry version {:?} (spec.version)",
                names::bounded(&other.to_string()),
                ctx.version
            ),
        ),
    }

    match spec.get("selector") {
        None => out.push("spec.selector", "is required"),
        Some(Value::Object(selector)) => out.selector(selector, &labels),
        Some(_) => out.push("spec.selector", "must be a label selector object"),
    }

    if let Some(pod) = pod {
        match pod.get("spec") {
            None => out.push("spec.template.spec", "is required"),
            Some(Value::Object(pod_spec)) => out.containers(pod_spec),
            Some(_) => out.push("spec.template.spec", "must be an object"),
        }
    }

    {
        let spec = object_mut(&mut completed, "spec");
        let pod = object_mut(spec, "template");
        let meta = object_mut(pod, "metadata");
        meta.insert("labels".into(), Value::Object(labels));
    }

    (violations_len(&out) == before).then_some(completed)
}

fn violations_len(checker: &Checker<'_, '_>) -> usize {
    checker.violations.len()
}

/// The labels of a Deployment's pods.
pub fn pod_labels(deployment: &JsonObject) -> BTreeMap<String, String> {
    deployment
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

struct Checker<'v, 'b> {
    violations: &'v mut Vec<Violation>,
    base: &'b str,
}

impl Checker<'_, '_> {
    fn push(&mut self, path: &str, description: impl Into<String>) {
        self.violations
            .push(Violation::new(format!("{}.{path}", self.base), description));
    }

    fn optional_exact(&mut self, object: &JsonObject, key: &str, expected: &str) {
        match object.get(key) {
            None => {}
            Some(Value::String(s)) if s == expected => {}
            Some(_) => self.push(key, format!("must be {expected:?} where given")),
        }
    }

    fn optional_object<'o>(
        &mut self,
        object: &'o JsonObject,
        key: &str,
        path: &str,
    ) -> Option<&'o JsonObject> {
        match object.get(key) {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                self.push(path, "must be an object");
                None
            }
        }
    }

    fn required_object<'o>(
        &mut self,
        object: &'o JsonObject,
        key: &str,
        path: &str,
    ) -> Option<&'o JsonObject> {
        if !object.contains_key(key) {
            self.push(path, "is required");
            return None;
        }
        self.optional_object(object, key, path)
    }

    fn labels(&mut self, labels: &JsonObject, path: &str) {
        for (key, value) in labels {
            if let Err(e) = names::check_label_key(key) {
                self.push(
                    &format!("{path}[{key:?}]"),
                    format!("is not a valid label key: {e}"),
                );
            }
            let Some(value) = value.as_str() else {
                self.push(&format!("{path}.{key}"), "must be a string");
                continue;
            };
            if let Err(e) = names::check_label_value(value) {
                self.push(
                    &format!("{path}.{key}"),
                    format!("is not a valid label value: {e}"),
                );
            }
        }
    }

    fn selector(&mut self, selector: &JsonObject, pod_labels: &JsonObject) {
        let mut empty = true;
        let mut matches = true;
        for key in selector.keys() {
            if key != "matchLabels" && key != "matchExpressions" {
                self.push(
                    &format!("spec.selector.{key}"),
                    "is not a field of a label selector",
                );
            }
        }
        match selector.get("matchLabels") {
            None => {}
            Some(Value::Object(match_labels)) => {
                self.labels(match_labels, "spec.selector.matchLabels");
                for (key, value) in match_labels {
                    empty = false;
                    matches &= pod_labels.get(key) == Some(value);
                }
            }
            Some(_) => self.push("spec.selector.matchLabels", "must be an object of strings"),
        }
        match selector.get("matchExpressions") {
            None => {}
            Some(Value::Array(expressions)) => {
                for (i, expression) in expressions.iter().enumerate() {
                    empty = false;
                    let path = format!("spec.selector.matchExpressions[{i}]");
                    match self.expression(expression, &path) {
                        Some(expr) => matches &= expr.matches(pod_labels),
                        None => matches = false,
                    }
                }
            }
            Some(_) => self.push("spec.selector.matchExpressions", "must be a list"),
        }
        if empty {
            self.push(
                "spec.selector",
                "must not be empty: an empty selector would match every pod in the namespace",
            );
        } else if !matches {
            self.push(
                "spec.selector",
                "does not match spec.template.metadata.labels (with the version label added)",
            );
        }
    }

    fn expression<'e>(&mut self, expression: &'e Value, path: &str) -> Option<Expression<'e>> {
        let Value::Object(expr) = expression else {
            self.push(path, "must be an object with key, operator and values");
            return None;
        };
        let key = match expr.get("key") {
            Some(Value::String(k)) if names::check_label_key(k).is_ok() => Some(k.as_str()),
            _ => {
                self.push(&format!("{path}.key"), "must be a valid label key");
                None
            }
        };
        let mut values = Vec::new();
        match expr.get("values") {
            None => {}
            Some(Value::Array(list)) => {
                for (j, v) in list.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => values.push(s),
                        None => self.push(&format!("{path}.values[{j}]"), "must be a string"),
                    }
                }
            }
            Some(_) => self.push(&format!("{path}.values"), "must be a list of strings"),
        }
        let operator = match expr.get("operator").and_then(Value::as_str) {
            Some(op @ ("In" | "NotIn")) => {
                if values.is_empty() {
                    self.push(
                        &format!("{path}.values"),
                        format!("must not be empty for {op}"),
                    );
                }
                op
            }
            Some(op @ ("Exists" | "DoesNotExist")) => {
                if !values.is_empty() {
                    self.push(&format!("{path}.values"), format!("must be empty for {op}"));
                }
                op
            }
            _ => {
                self.push(
                    &format!("{path}.operator"),
                    "must be one of In, NotIn, Exists, DoesNotExist",
                );
                return None;
            }
        };
        Some(Expression {
            key: key?,
            operator,
            values,
        })
    }

    fn containers(&mut self, pod_spec: &JsonObject) {
        let path = "spec.template.spec.containers";
        let containers = match pod_spec.get("containers") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            Some(Value::Array(_)) | None => {
                self.push(path, "must hold at least one container");
                return;
            }
            Some(_) => {
                self.push(path, "must be a list of containers");
                return;
            }
        };
        let mut seen = Vec::new();
        for (i, container) in containers.iter().enumerate() {
            let Value::Object(container) = container else {
                self.push(&format!("{path}[{i}]"), "must be an object");
                continue;
            };
            match container.get("name") {
                Some(Value::String(name)) => match names::check_dns_label(name) {
                    Ok(()) if seen.contains(&name) => self.push(
                        &format!("{path}[{i}].name"),
                        format!("{} is used by another container", names::quoted(name)),
                    ),
                    Ok(()) => seen.push(name),
                    Err(e) => self.push(&format!("{path}[{i}].name"), e),
                },
                Some(_) => self.push(&format!("{path}[{i}].name"), "must be a string"),
                None => self.push(&format!("{path}[{i}].name"), "is required"),
            }
            match container.get("image") {
                Some(Value::String(image)) if !image.trim().is_empty() && image.trim() == image => {
                }
                Some(Value::String(_)) => self.push(
                    &format!("{path}[{i}].image"),
                    "must be a non-empty image reference without surrounding spaces",
                ),
                Some(_) => self.push(&format!("{path}[{i}].image"), "must be a string"),
                None => self.push(&format!("{path}[{i}].image"), "is required"),
            }
        }
    }
}

struct Expression<'e> {
    key: &'e str,
    operator: &'e str,
    values: Vec<&'e str>,
}

impl Expression<'_> {
    fn matches(&self, labels: &JsonObject) -> bool {
        let value = labels.get(self.key).and_then(Value::as_str);
        match self.operator {
            "In" => value.is_some_and(|v| self.values.contains(&v)),
            "NotIn" => !value.is_some_and(|v| self.values.contains(&v)),
            "Exists" => labels.contains_key(self.key),
            _ => !labels.contains_key(self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CTX: TemplateContext<'static> = TemplateContext {
        namespace: "default",
        deployment_name: "reviews",
        version: "v2",
    };

    fn check(template: Value) -> (Option<JsonObject>, Vec<Violation>) {
        let Value::Object(template) = template else {
            panic!("not an object")
        };
        let mut violations = Vec::new();
        let completed = check_and_complete(&template, "t", &CTX, &mut violations);
        (completed, violations)
    }

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn good() -> Value {
        json!({
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "reviews"}},
                "template": {
                    "metadata": {"labels": {"app": "reviews"}},
                    "spec": {"containers": [{"name": "reviews", "image": "reviews:2"}]}
                }
            }
        })
    }

    #[test]
    fn a_good_template_is_completed() {
        let (completed, violations) = check(good());
        assert!(violations.is_empty(), "{violations:?}");
        let completed = Value::Object(completed.unwrap());
        assert_eq!(completed["apiVersion"], "apps/v1");
        assert_eq!(completed["kind"], "Deployment");
        assert_eq!(completed["metadata"]["name"], "reviews-v2");
        assert_eq!(completed["metadata"]["namespace"], "default");
        assert_eq!(
            completed["spec"]["template"]["metadata"]["labels"]["version"],
            "v2"
        );
        assert_eq!(
            completed["spec"]["template"]["metadata"]["labels"]["app"],
            "reviews"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (completed, violations) = check(json!({
            "apiVersion": "apps/v2",
            "kind": "Pod",
            "metadata": {"name": "Bad_Name"},
            "spec": {
                "replicas": -1,
                "selector": {},
                "template": {
                    "metadata": {"labels": {"app": "reviews", "version": "v1"}},
                    "spec": {"containers": [{"name": "", "image": ""}]}
                }
            }
        }));
        assert!(completed.is_none());
        assert_eq!(
            fields(&violations),
            vec![
                "t.apiVersion",
                "t.kind",
                "t.metadata.name",
                "t.spec.replicas",
                "t.spec.template.metadata.labels.version",
                "t.spec.selector",
                "t.spec.template.spec.containers[0].name",
                "t.spec.template.spec.containers[0].image",
            ]
        );
    }

    #[test]
    fn selector_must_match_pod_labels() {
        let mut t = good();
        t["spec"]["selector"] = json!({"matchLabels": {"app": "ratings"}});
        let (_, violations) = check(t);
        assert_eq!(fields(&violations), vec!["t.spec.selector"]);
    }

    #[test]
    fn selector_expressions_are_evaluated() {
        let mut t = good();
        t["spec"]["selector"] = json!({"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["reviews"]},
            {"key": "version", "operator": "Exists"},
            {"key": "track", "operator": "DoesNotExist"},
        ]});
        let (_, violations) = check(t.clone());
        assert!(violations.is_empty(), "{violations:?}");
        t["spec"]["selector"]["matchExpressions"][0]["operator"] = json!("NotIn");
        let (_, violations) = check(t);
        assert_eq!(fields(&violations), vec!["t.spec.selector"]);
    }

    #[test]
    fn not_in_matches_a_pod_without_those_values_and_bad_keys_are_named() {
        let mut t = good();
        t["spec"]["selector"] = json!({"matchExpressions": [
            {"key": "app", "operator": "NotIn", "values": ["ratings"]},
            {"key": "app", "operator": "Exists"},
        ]});
        assert!(check_in(t.clone(), &CTX).is_empty());
        t["spec"]["selector"]["matchExpressions"][0]["key"] = json!("bad key!");
        assert_eq!(
            check_in(t, &CTX),
            vec!["t.spec.selector.matchExpressions[0].key", "t.spec.selector"]
        );
    }

    #[test]
    fn an_empty_container_list_is_refused() {
        let mut t = good();
        t["spec"]["template"]["spec"]["containers"] = json!([]);
        assert_eq!(check_in(t, &CTX), vec!["t.spec.template.spec.containers"]);
    }

    #[test]
    fn missing_parts_are_named() {
        let (_, violations) = check(json!({"spec": {"template": {"spec": {}}}}));
        assert_eq!(
            fields(&violations),
            vec!["t.spec.selector", "t.spec.template.spec.containers"]
        );
        let (completed, violations) = check(json!({}));
        assert_eq!(fields(&violations), vec!["t.spec"]);
        assert!(
            completed.is_none(),
            "nothing is completed from a refused template"
        );
    }

    fn check_in(template: Value, ctx: &TemplateContext<'_>) -> Vec<String> {
        let Value::Object(template) = template else {
            panic!("not an object")
        };
        let mut violations = Vec::new();
        check_and_complete(&template, "t", ctx, &mut violations);
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_derived_name_is_checked_only_when_it_can_be_derived() {
        let long = "d".repeat(251);
        let too_long = TemplateContext {
            deployment_name: &long,
            ..CTX
        };
        assert_eq!(check_in(good(), &too_long), vec!["t.metadata.name"]);
        // A name given in the template is not derived.
        let mut named = good();
        named["metadata"] = json!({"name": "reviews-gray"});
        assert!(check_in(named, &too_long).is_empty());
        // No deployment name or no version: that field's own error says it.
        for ctx in [
            TemplateContext {
                deployment_name: "",
                ..CTX
            },
            TemplateContext { version: "", ..CTX },
        ] {
            let violations = check_in(good(), &ctx);
            assert!(
                !violations.contains(&"t.metadata.name".to_owned()),
                "{violations:?}"
            );
        }
    }

    #[test]
    fn a_namespace_where_given_is_the_releases() {
        let mut t = good();
        t["metadata"] = json!({"namespace": "default"});
        assert!(check_in(t.clone(), &CTX).is_empty());
        t["metadata"]["namespace"] = json!("other");
        assert_eq!(check_in(t.clone(), &CTX), vec!["t.metadata.namespace"]);
        t["metadata"]["namespace"] = json!(7);
        assert_eq!(check_in(t, &CTX), vec!["t.metadata.namespace"]);
    }

    #[test]
    fn replicas_are_a_whole_number_from_0_to_the_int32_maximum() {
        for ok in [
            json!(0),
            json!(3),
            json!(i32::MAX),
            json!(2.0),
            json!(2147483647.0),
        ] {
            let mut t = good();
            t["spec"]["replicas"] = ok.clone();
            assert!(check_in(t, &CTX).is_empty(), "{ok}");
        }
        for bad in [
            json!(-1),
            json!(u64::from(i32::MAX.unsigned_abs()) + 1),
            json!(2.5),
            json!(-1.0),
            json!(2147483648.0),
            json!("3"),
        ] {
            let mut t = good();
            t["spec"]["replicas"] = bad.clone();
            assert_eq!(check_in(t, &CTX), vec!["t.spec.replicas"], "{bad}");
        }
    }

    #[test]
    fn api_version_kind_and_labels_where_given_are_checked() {
        let mut t = good();
        t["apiVersion"] = json!("apps/v1");
        t["kind"] = json!("Deployment");
        t["metadata"] = json!({"labels": {"team": "shop"}});
        assert!(check_in(t.clone(), &CTX).is_empty());
        t["metadata"]["labels"] = json!({"bad key!": "x", "team": "not a value!", "n": 1});
        assert_eq!(
            check_in(t.clone(), &CTX),
            vec![
                "t.metadata.labels[\"bad key!\"]",
                "t.metadata.labels.n",
                "t.metadata.labels.team"
            ]
        );
        t["metadata"]["labels"] = json!(["team"]);
        assert_eq!(check_in(t, &CTX), vec!["t.metadata.labels"]);
    }

    #[test]
    fn a_version_label_given_must_be_the_releases_version() {
        let mut t = good();
        t["spec"]["template"]["metadata"]["labels"]["version"] = json!("v2");
        assert!(check_in(t.clone(), &CTX).is_empty());
        t["spec"]["template"]["metadata"]["labels"]["version"] = json!("v3");
        assert_eq!(
            check_in(t, &CTX),
            vec!["t.spec.template.metadata.labels.version"]
        );
    }

    #[test]
    fn duplicate_container_names_are_refused() {
        let mut t = good();
        t["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]);
        let (_, violations) = check(t);
        assert_eq!(
            fields(&violations),
            vec!["t.spec.template.spec.containers[1].name"]
        );
    }
}
