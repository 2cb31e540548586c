//! The cluster's objects, kept as the API server keeps them: one
//! resourceVersion sequence for every write, `generation` counting changes of
//! `spec`, `managedFields` saying which field manager owns which field, and
//! an event log that watches replay from any resourceVersion still kept.
//!
//! Field ownership follows server-side apply with one simplification, said
//! here and in docs/internals.md: every list is atomic (owned and replaced whole),
//! where the real server merges some lists by key (containers by name).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::errors::KubeError;
use crate::resources::Resource;

/// A field, as the segments of its path (`["spec", "replicas"]`).
pub type FieldPath = Vec<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

#[derive(Debug, Clone)]
struct Manager {
    name: String,
    operation: Operation,
    api_version: String,
    time: String,
    /// Whether the entry is for the status subresource.
    status: bool,
    fields: BTreeSet<FieldPath>,
}

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    managers: Vec<Manager>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub kind: &'static str,
    pub resource: Resource,
    pub namespace: String,
    pub object: Value,
}

#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<(Resource, String, String), Stored>,
    revision: u64,
    history: Vec<Event>,
    events: broadcast::Sender<Event>,
}

/// `DeleteOptions.preconditions`: what the object must still be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    /// A write to the `status` subresource.
    pub status: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            revision: 1,
            history: Vec::new(),
            events: broadcast::channel(4096).0,
        }
    }
}

impl Store {
    /// A copy to try a write on (a dry run, `dryRun=All`): the objects and
    /// the revision, no history, and nobody watching it.
    pub fn scratch(&self) -> Store {
        Store {
            objects: self.objects.clone(),
            revision: self.revision,
            history: Vec::new(),
            events: broadcast::channel(1).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Events after `revision`, or `None` when some of them are no longer kept.
    pub fn events_after(&self, revision: u64) -> Option<Vec<Event>> {
        let oldest = self.history.first().map_or(self.revision, |e| e.revision);
        if revision + 1 < oldest && revision < self.revision {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|e| e.revision > revision)
                .cloned()
                .collect(),
        )
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&(resource, namespace.to_owned(), name.to_owned()))
            .map(render)
    }

    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, s)| render(s))
            .collect()
    }

    pub fn create(
        &mut self,
        resource: Resource,
        namespace: &str,
        object: Value,
        writer: &Writer<'_>,
    ) -> Result<Value, KubeError> {
        self.insert_new(resource, namespace, object, writer, Operation::Update)
    }

    fn insert_new(
        &mut self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
        writer: &Writer<'_>,
        operation: Operation,
    ) -> Result<Value, KubeError> {
        let name = name_of(&object).ok_or_else(|| {
            KubeError::invalid(
                resource,
                "",
                "metadata.name: Required value: name is required",
            )
        })?;
        let key = (resource, namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(KubeError::already_exists(resource, &name));
        }
        strip_server_fields(&mut object);
        let meta = meta_mut(&mut object);
        if resource.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        let fields = leaf_paths(&object, resource.has_status() && !writer.status);
        let stored = Stored {
            object,
            managers: vec![Manager {
                name: writer.manager.to_owned(),
                operation,
                api_version: writer.api_version.to_owned(),
                time: now(),
                status: false,
                fields,
            }],
        };
        Ok(self.commit(key, stored, "ADDED"))
    }

    /// A replace (PUT) or the result of a merge or JSON patch: `object` is the
    /// whole new object; its resourceVersion, when given, must be current.
    pub fn update(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
        writer: &Writer<'_>,
    ) -> Result<Value, KubeError> {
        let key = (resource, namespace.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            return Err(KubeError::not_found(resource, name));
        };
        if name_of(&object).is_some_and(|n| n != name) {
            return Err(KubeError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        check_version(&object, &current.object, resource, name)?;
        strip_server_fields(&mut object);
        let merged = confine(resource, &current.object, object, writer.status);
        let mut stored = current.clone();
        let old = leaf_values(&current.object);
        let new = leaf_values(&merged);
        let changed: BTreeSet<FieldPath> = new
            .iter()
            .filter(|(path, value)| old.get(*path) != Some(*value))
            .map(|(path, _)| path.clone())
            .chain(old.keys().filter(|p| !new.contains_key(*p)).cloned())
            .collect();
        stored.object = merged;
        take_ownership(
            &mut stored.managers,
            writer,
            Operation::Update,
            &changed,
            false,
        );
        self.finish_write(key, current, stored)
    }

    /// Server-side apply of `config` by `writer.manager`.
    pub fn apply(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        mut config: Value,
        writer: &Writer<'_>,
        force: bool,
    ) -> Result<Value, KubeError> {
        if name_of(&config).is_some_and(|n| n != name) {
            return Err(KubeError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let key = (resource, namespace.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key).cloned() else {
            meta_mut(&mut config).insert("name".into(), json!(name));
            return self.insert_new(resource, namespace, config, writer, Operation::Apply);
        };
        check_version(&config, &current.object, resource, name)?;
        strip_server_fields(&mut config);
        let applied = leaf_values(&config);
        let mut conflicts = Vec::new();
        for other in current.managers.iter().filter(|m| m.name != writer.manager) {
            for path in applied.keys() {
                let owned = other.fields.iter().any(|f| overlaps(f, path));
                if owned && value_at(&current.object, path) != applied.get(path).copied() {
                    conflicts.push(format!(
                        "conflict with {:?} using {}: .{}",
                        other.name,
                        other.api_version,
                        path.join(".")
                    ));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(KubeError::apply_conflict(&conflicts));
        }
        // Fields this manager applied before and now leaves out go, unless
        // someone else also owns them.
        let mut object = current.object.clone();
        if let Some(previous) = current
            .managers
            .iter()
            .find(|m| m.name == writer.manager && m.operation == Operation::Apply)
        {
            for path in &previous.fields {
                let kept_by_others = current
                    .managers
                    .iter()
                    .any(|m| m.name != writer.manager && m.fields.contains(path));
                if !applied.contains_key(path) && !kept_by_others {
                    remove_at(&mut object, path);
                }
            }
        }
        merge_into(&mut object, &config);
        let object = confine(resource, &current.object, object, writer.status);
        let mut stored = current.clone();
        stored.object = object;
        let paths: BTreeSet<FieldPath> = applied.keys().cloned().collect();
        take_ownership(
            &mut stored.managers,
            writer,
            Operation::Apply,
            &paths,
            force,
        );
        self.finish_write(key, current, stored)
    }

    pub fn delete(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, KubeError> {
        self.delete_if(resource, namespace, name, &Preconditions::default())
    }

    /// A delete that happens only if the object is still the one the
    /// client names (`DeleteOptions.preconditions`): 409 Conflict otherwise,
    /// as the API server answers.
    pub fn delete_if(
        &mut self,
        resource: Resource,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<Value, KubeError> {
        let key = (resource, namespace.to_owned(), name.to_owned());
        let Some(current) = self.objects.get(&key) else {
            return Err(KubeError::not_found(resource, name));
        };
        for (field, wanted) in [
            ("UID", &preconditions.uid),
            ("ResourceVersion", &preconditions.resource_version),
        ] {
            let Some(wanted) = wanted else { continue };
            let key_name = if field == "UID" {
                "uid"
            } else {
                "resourceVersion"
            };
            let actual = current.object["metadata"][key_name]
                .as_str()
                .unwrap_or_default();
            if actual != wanted {
                return Err(KubeError::precondition_failed(
                    resource,
                    name,
                    &format!(
                        "Precondition failed: {field} in precondition: {wanted}, {field} in object meta: {actual}"
                    ),
                ));
            }
        }
        let Some(stored) = self.objects.remove(&key) else {
            return Err(KubeError::not_found(resource, name));
        };
        self.revision += 1;
        let mut object = render(&stored);
        meta_mut(&mut object).insert("resourceVersion".into(), json!(self.revision.to_string()));
        self.record(resource, namespace, "DELETED", object.clone());
        Ok(object)
    }

    fn finish_write(
        &mut self,
        key: (Resource, String, String),
        before: Stored,
        mut after: Stored,
    ) -> Result<Value, KubeError> {
        if after.object == before.object && managers_equal(&after.managers, &before.managers) {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(render(&before));
        }
        // Deployments also count annotation changes, as the API server's
        // Deployment strategy does (annotations are copied to ReplicaSets):
        // an apply that only changes an annotation makes the controller
        // report the Deployment as rolling out again.
        let annotations_changed = key.0.kind == "Deployment"
            && after.object["metadata"].get("annotations")
                != before.object["metadata"].get("annotations");
        if after.object.get("spec") != before.object.get("spec") || annotations_changed {
            let generation = before.object["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1)
                + 1;
            meta_mut(&mut after.object).insert("generation".into(), json!(generation));
        }
        Ok(self.commit(key, after, "MODIFIED"))
    }

    fn commit(
        &mut self,
        key: (Resource, String, String),
        mut stored: Stored,
        kind: &'static str,
    ) -> Value {
        self.revision += 1;
        meta_mut(&mut stored.object)
            .insert("resourceVersion".into(), json!(self.revision.to_string()));
        let rendered = render(&stored);
        let (resource, namespace, _) = key.clone();
        self.objects.insert(key, stored);
        self.record(resource, &namespace, kind, rendered.clone());
        rendered
    }

    fn record(&mut self, resource: Resource, namespace: &str, kind: &'static str, object: Value) {
        let event = Event {
            revision: self.revision,
            kind,
            resource,
            namespace: namespace.to_owned(),
            object,
        };
        self.history.push(event.clone());
        if self.history.len() > 10_000 {
            self.history.drain(..1_000);
        }
        let _ = self.events.send(event);
    }
}

fn managers_equal(a: &[Manager], b: &[Manager]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.operation == y.operation && x.fields == y.fields)
}

/// The writer takes `paths`: its own entry (of this operation) holds them,
/// and they leave every other entry where the operation is an Update or a
/// forced Apply.
fn take_ownership(
    managers: &mut Vec<Manager>,
    writer: &Writer<'_>,
    operation: Operation,
    paths: &BTreeSet<FieldPath>,
    force: bool,
) {
    if operation == Operation::Update && paths.is_empty() {
        return;
    }
    for m in managers.iter_mut() {
        let other = m.name != writer.manager || m.operation != operation;
        if other && (operation == Operation::Update || force) {
            m.fields.retain(|f| !paths.iter().any(|p| overlaps(f, p)));
        }
    }
    match managers
        .iter_mut()
        .find(|m| m.name == writer.manager && m.operation == operation && m.status == writer.status)
    {
        Some(entry) => {
            if operation == Operation::Apply {
                entry.fields = paths.clone();
            } else {
                entry.fields.extend(paths.iter().cloned());
            }
            entry.time = now();
            writer.api_version.clone_into(&mut entry.api_version);
        }
        None => managers.push(Manager {
            name: writer.manager.to_owned(),
            operation,
            api_version: writer.api_version.to_owned(),
            time: now(),
            status: writer.status,
            fields: paths.clone(),
        }),
    }
    managers.retain(|m| !m.fields.is_empty());
}

/// Whether one path is the other or lies under it.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The object as served: `managedFields` rendered from the ownership kept.
fn render(stored: &Stored) -> Value {
    let mut object = stored.object.clone();
    let entries: Vec<Value> = stored
        .managers
        .iter()
        .map(|m| {
            let mut entry = json!({
                "manager": m.name,
                "operation": match m.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&m.fields),
            });
            if m.status {
                entry["subresource"] = json!("status");
            }
            entry
        })
        .collect();
    meta_mut(&mut object).insert("managedFields".into(), Value::Array(entries));
    object
}

/// `{"f:spec": {"f:replicas": {}}}`, as the API server writes a field set.
fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for segment in path {
            let entry = node
                .entry(format!("f:{segment}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

/// Leaf paths an object sets (lists are leaves): what a writer owns.
pub fn leaf_paths(object: &Value, skip_status: bool) -> BTreeSet<FieldPath> {
    leaf_values_skipping(object, skip_status)
        .into_keys()
        .collect()
}

fn leaf_values(object: &Value) -> BTreeMap<FieldPath, &Value> {
    leaf_values_skipping(object, false)
}

fn leaf_values_skipping(object: &Value, skip_status: bool) -> BTreeMap<FieldPath, &Value> {
    let mut out = BTreeMap::new();
    fn walk<'v>(value: &'v Value, path: &mut FieldPath, out: &mut BTreeMap<FieldPath, &'v Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::String(_)
            | Value::Array(_)
            | Value::Object(_) => {
                out.insert(path.clone(), value);
            }
        }
    }
    if let Value::Object(map) = object {
        for (k, v) in map {
            if k == "apiVersion" || k == "kind" || (skip_status && k == "status") {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = v {
                    for (mk, mv) in meta {
                        if matches!(
                            mk.as_str(),
                            "resourceVersion"
                                | "managedFields"
                                | "uid"
                                | "creationTimestamp"
                                | "generation"
                                | "namespace"
                                | "name"
                        ) {
                            continue;
                        }
                        let mut path = vec!["metadata".to_owned(), mk.clone()];
                        walk(mv, &mut path, &mut out);
                    }
                }
                continue;
            }
            let mut path = vec![k.clone()];
            walk(v, &mut path, &mut out);
        }
    }
    out
}

fn value_at<'v>(object: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(object, |v, segment| v.get(segment))
}

fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = object;
    for segment in parents {
        match node.get_mut(segment) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Value::Object(map) = node {
        map.remove(last);
    }
}

/// Objects merged member by member; anything else replaced.
fn merge_into(target: &mut Value, config: &Value) {
    match (target, config) {
        (Value::Object(t), Value::Object(c)) => {
            for (k, v) in c {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v)
                    }
                    Some(_) | None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, c) => *t = c.clone(),
    }
}

/// A write to a resource with a status subresource changes either the
/// status (through `/status`) or everything else, never both.
fn confine(resource: Resource, current: &Value, mut new: Value, status_write: bool) -> Value {
    let Value::Object(map) = &mut new else {
        return new;
    };
    if resource.has_status() {
        if status_write {
            let status = map.get("status").cloned();
            let mut out = current.clone();
            if let (Value::Object(out_map), Some(status)) = (&mut out, status) {
                out_map.insert("status".into(), status);
            }
            return out;
        }
        match current.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    // Identity and bookkeeping stay the server's.
    let keep = [
        "uid",
        "creationTimestamp",
        "generation",
        "namespace",
        "name",
        "resourceVersion",
    ];
    let current_meta = current.get("metadata").cloned().unwrap_or_default();
    let meta = meta_mut(&mut new);
    for key in keep {
        match current_meta.get(key) {
            Some(v) => meta.insert(key.into(), v.clone()),
            None => meta.remove(key),
        };
    }
    new
}

fn check_version(
    object: &Value,
    current: &Value,
    resource: Resource,
    name: &str,
) -> Result<(), KubeError> {
    let given = object["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty());
    match given {
        Some(v) if Some(v) != current["metadata"]["resourceVersion"].as_str() => {
            Err(KubeError::conflict(resource, name))
        }
        Some(_) | None => Ok(()),
    }
}

fn strip_server_fields(object: &mut Value) {
    let meta = meta_mut(object);
    meta.remove("managedFields");
}

pub fn name_of(object: &Value) -> Option<String> {
    object["metadata"]["name"].as_str().map(str::to_owned)
}

pub fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(map) = object else {
        unreachable!("made an object above")
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(meta) = meta else {
        unreachable!("made an object above")
    };
    meta
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
