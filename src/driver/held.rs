//! What one watch cache holds of its objects, kept small: each object as
//! its compact JSON text (parsed again when read), its resourceVersion,
//! and, for a routing object, the services its hosts may name, indexed so
//! that a release reads the routing of its own service without looking
//! at the thousands of others in its namespace.
//!
//! A JSON object held parsed (`serde_json::Map`, a B-tree per nested
//! object) took about five times the memory of its text: at 1,000 active
//! releases the caches were the largest part of the service's heap
//! (BENCHMARKS.md). A read parses the few objects a round needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::domain::object::JsonObject;

/// The objects of one cache, by name.
#[derive(Default)]
pub(super) struct Held {
    by_name: BTreeMap<String, Entry>,
    /// The objects whose hosts begin with each service's name.
    by_service: HashMap<Box<str>, BTreeSet<String>>,
}

struct Entry {
    text: Box<str>,
    version: Option<u64>,
    /// The first label of each of its hosts (`reviews` of
    /// `reviews.default.svc.cluster.local`): the services it may name.
    services: Box<[Box<str>]>,
}

impl Held {
    pub(super) fn get(&self, name: &str) -> Option<JsonObject> {
        self.by_name.get(name).and_then(Entry::parse)
    }

    /// The objects whose hosts may name `service`: a superset, for the
    /// caller to check each host.
    pub(super) fn naming(&self, service: &str) -> Vec<JsonObject> {
        self.by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|name| self.by_name.get(name))
            .filter_map(Entry::parse)
            .collect()
    }

    /// The resourceVersion held for `name`: `None` if it is not held,
    /// `Some(None)` if held without a version that is a number.
    pub(super) fn version(&self, name: &str) -> Option<Option<u64>> {
        self.by_name.get(name).map(|e| e.version)
    }

    /// Whether `name` is held here, and exactly as `other` holds it.
    pub(super) fn same_as(&self, other: &Held, name: &str) -> bool {
        match (self.by_name.get(name), other.by_name.get(name)) {
            (Some(mine), Some(theirs)) => mine.text == theirs.text,
            _ => false,
        }
    }

    pub(super) fn insert(&mut self, name: String, object: &JsonObject) {
        let entry = Entry {
            text: text_of(object).into_boxed_str(),
            version: version_of(object),
            services: hosts_in(object.get("spec"))
                .map(|host| host.split('.').next().unwrap_or(host).into())
                .collect(),
        };
        if let Some(old) = self.by_name.remove(&name) {
            self.unindex(&name, &old, Some(&entry.services));
        }
        for service in &entry.services {
            self.by_service
                .entry(service.clone())
                .or_default()
                .insert(name.clone());
        }
        self.by_name.insert(name, entry);
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<JsonObject> {
        let old = self.by_name.remove(name)?;
        self.unindex(name, &old, None);
        old.parse()
    }

    /// Keeps only the objects for which `keep(name, version)` holds;
    /// answers those dropped.
    pub(super) fn retain(
        &mut self,
        mut keep: impl FnMut(&str, Option<u64>) -> bool,
    ) -> Vec<JsonObject> {
        let dropped: Vec<String> = self
            .by_name
            .iter()
            .filter(|(name, e)| !keep(name, e.version))
            .map(|(name, _)| name.clone())
            .collect();
        dropped
            .iter()
            .filter_map(|name| self.remove(name))
            .collect()
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }

    /// Drops `name`'s index entries that `old` had and `now` (the
    /// services of what replaced it) has not.
    fn unindex(&mut self, name: &str, old: &Entry, now: Option<&[Box<str>]>) {
        for service in &old.services {
            if now.is_some_and(|now| now.contains(service)) {
                continue;
            }
            if let Some(names) = self.by_service.get_mut(service) {
                names.remove(name);
                if names.is_empty() {
                    self.by_service.remove(service);
                }
            }
        }
    }
}

impl Entry {
    fn parse(&self) -> Option<JsonObject> {
        serde_json::from_str(&self.text).ok()
    }
}

fn text_of(object: &JsonObject) -> String {
    // A map of JSON values always serializes.
    serde_json::to_string(object).unwrap_or_default()
}

/// The hosts a routing object's `spec` names (`spec.hosts` of a
/// VirtualService, `spec.host` of a DestinationRule); none for others.
pub(super) fn hosts_in(spec: Option<&Value>) -> impl Iterator<Item = &str> {
    spec.and_then(|s| s.get("hosts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.get("host")))
        .filter_map(Value::as_str)
}

/// An object's resourceVersion, as the number the simulated cluster and
/// etcd make of it.
pub(super) fn version_of(object: &JsonObject) -> Option<u64> {
    object
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|v| v.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        serde_json::from_value(value).unwrap()
    }

    fn vs(name: &str, hosts: &[&str]) -> JsonObject {
        object(
            json!({"metadata": {"name": name, "resourceVersion": "7"}, "spec": {"hosts": hosts}}),
        )
    }

    fn names(objects: &[JsonObject]) -> Vec<&str> {
        objects.iter().map(crate::domain::object::name_of).collect()
    }

    #[test]
    fn an_object_reads_back_as_it_was_kept() {
        let mut held = Held::default();
        let d = object(
            json!({"metadata": {"name": "d", "resourceVersion": "12", "labels": {"a": "b"}},
                              "spec": {"replicas": 3}, "status": {"readyReplicas": 3}}),
        );
        held.insert("d".into(), &d);
        assert_eq!(held.get("d"), Some(d.clone()));
        assert_eq!(held.version("d"), Some(Some(12)));
        assert_eq!(held.version("e"), None);
        let mut copy = Held::default();
        copy.insert("d".into(), &d);
        assert!(held.same_as(&copy, "d"));
        let mut changed = d.clone();
        changed.insert("spec".into(), json!({"replicas": 4}));
        copy.insert("d".into(), &changed);
        assert!(!held.same_as(&copy, "d"));
        assert!(!held.same_as(&copy, "e"), "held by neither");
        assert_eq!(held.remove("d"), Some(d));
        assert_eq!(held.get("d"), None);
    }

    #[test]
    fn routing_is_found_by_the_services_its_hosts_name_and_forgotten_when_they_change() {
        let mut held = Held::default();
        held.insert(
            "a".into(),
            &vs("a", &["reviews.default.svc.cluster.local", "ratings"]),
        );
        held.insert("b".into(), &vs("b", &["ratings"]));
        held.insert(
            "dr".into(),
            &object(json!({"metadata": {"name": "dr"}, "spec": {"host": "reviews"}})),
        );
        assert_eq!(names(&held.naming("reviews")), ["a", "dr"]);
        assert_eq!(names(&held.naming("ratings")), ["a", "b"]);
        assert!(held.naming("details").is_empty());
        // "a" now names details only: it no longer comes up for the others.
        held.insert("a".into(), &vs("a", &["details"]));
        assert_eq!(names(&held.naming("reviews")), ["dr"]);
        assert_eq!(names(&held.naming("ratings")), ["b"]);
        assert_eq!(names(&held.naming("details")), ["a"]);
        held.remove("b");
        assert!(held.naming("ratings").is_empty());
        assert!(
            !held.by_service.contains_key("ratings"),
            "no empty entry left"
        );
        let dropped = held.retain(|name, _| name != "dr");
        assert_eq!(names(&dropped), ["dr"]);
        assert!(held.naming("reviews").is_empty());
        assert_eq!(held.names().collect::<Vec<_>>(), ["a"]);
    }
}
