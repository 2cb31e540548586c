//! The Kubernetes HTTP API over the store: discovery, get, list (label
//! selectors), watch, create, replace, merge / JSON / server-side-apply
//! patches, delete, and Deployments' `status` subresource.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use tokio_stream::wrappers::BroadcastStream;

use crate::Sim;
use crate::errors::KubeError;
use crate::resources::{ALL, NAMESPACES, Resource};
use crate::selector::{Selector, labels_of};
use crate::store::Writer;

pub const SERVER_VERSION: &str = "v1.33.0-meshrelease-sim";

/// Every request lands here; the path is read by hand (it has too many
/// shapes for a route table).
pub async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.requests
        .record(&method, uri.path(), uri.query(), &headers);
    if let Some(fault) = sim.faults.before(&method).await {
        return fault.into_response();
    }
    if let Some(denied) = sim.faults.denial(&method) {
        return denied.into_response();
    }
    match route(&sim, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

async fn route(
    sim: &Arc<Sim>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, KubeError> {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let query = Query {
        pairs: form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    };
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "33", "gitVersion": SERVER_VERSION, "platform": "linux/amd64"}),
            ));
        }
        ["api"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ));
        }
        ["apis"] => return Ok(json_response(StatusCode::OK, &group_list())),
        ["openapi", "v3"] => return Ok(json_response(StatusCode::OK, &openapi_index())),
        ["openapi", "v3", "api", "v1"] => {
            return Ok(json_response(StatusCode::OK, &openapi_document("", "v1")));
        }
        ["openapi", "v3", "apis", group, version] => {
            return Ok(json_response(
                StatusCode::OK,
                &openapi_document(group, version),
            ));
        }
        ["api", "v1"] => return Ok(json_response(StatusCode::OK, &resource_list("", "v1"))),
        ["apis", group, version] => {
            if !ALL
                .iter()
                .any(|r| r.group == *group && r.versions.contains(version))
            {
                return Err(KubeError::bad_request(format!(
                    "no group version {group}/{version}"
                )));
            }
            return Ok(json_response(
                StatusCode::OK,
                &resource_list(group, version),
            ));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(KubeError::bad_request(format!(
                "no route for {}",
                uri.path()
            )));
        }
    };
    let (namespace, plural, name, status) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, false),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), false),
        ["namespaces", ns, plural, name, "status"] => (Some(*ns), *plural, Some(*name), true),
        [plural] => (None, *plural, None, false),
        [plural, name] => (None, *plural, Some(*name), false),
        _ => {
            return Err(KubeError::bad_request(format!(
                "no route for {}",
                uri.path()
            )));
        }
    };
    let Some(resource) = Resource::find(group, version, plural) else {
        return Err(KubeError::bad_request(format!(
            "the server could not find the requested resource {plural} in {group}/{version}"
        )));
    };
    if status && !resource.has_status() {
        return Err(KubeError::not_found(resource, name.unwrap_or_default()));
    }
    // Cluster-scoped objects (Namespaces) are kept under the namespace "";
    // a named namespaced object needs its namespace in the path.
    let namespace = match (resource.namespaced, namespace, name) {
        (false, None, _) => Some(""),
        (false, Some(_), _) | (true, None, Some(_)) => {
            return Err(KubeError::bad_request(format!(
                "no route for {}",
                uri.path()
            )));
        }
        (true, namespace, _) => namespace,
    };
    let api_version = resource.api_version(version);
    let manager = query
        .get("fieldManager")
        .map(str::to_owned)
        .unwrap_or_else(|| default_manager(headers));
    let writer = Writer {
        manager: &manager,
        api_version: &api_version,
        status,
    };
    let serve = |object: Value| as_version(object, resource, &api_version);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        // Served in JSON and YAML only; a real API server takes protobuf too.
        return Err(KubeError::unsupported_media_type(content_type));
    }
    match (method, namespace, name) {
        (&Method::GET, _, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(sim, resource, namespace, &api_version, &query)
        }
        (&Method::GET, _, None) => {
            let selector = Selector::parse(query.get("labelSelector").unwrap_or_default())
                .map_err(KubeError::bad_request)?;
            let store = sim.store.lock().await;
            let items: Vec<Value> = store
                .list(resource, namespace)
                .into_iter()
                .filter(|o| selector.matches(&labels_of(o)))
                .map(serve)
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": format!("{}List", resource.kind),
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": store.revision().to_string()},
                    "items": items,
                }),
            ))
        }
        (&Method::GET, Some(ns), Some(name)) => {
            let store = sim.store.lock().await;
            let object = store
                .get(resource, ns, name)
                .ok_or_else(|| KubeError::not_found(resource, name))?;
            Ok(json_response(StatusCode::OK, &serve(object)))
        }
        (&Method::POST, Some(ns), None) => {
            let object = parse_json(&body)?;
            check_kind(&object, resource, &api_version)?;
            if dry_run(&query) {
                // Checked as a create would be (a name taken is 409), kept nowhere.
                let created = sim
                    .store
                    .lock()
                    .await
                    .scratch()
                    .create(resource, ns, object, &writer)?;
                return Ok(json_response(StatusCode::CREATED, &serve(created)));
            }
            let created = sim
                .store
                .lock()
                .await
                .create(resource, ns, object, &writer)?;
            Ok(json_response(StatusCode::CREATED, &serve(created)))
        }
        (&Method::PUT, Some(ns), Some(name)) => {
            let object = parse_json(&body)?;
            check_kind(&object, resource, &api_version)?;
            if sim.faults.take_conflict() {
                return Err(KubeError::conflict(resource, name));
            }
            let mut guard = sim.store.lock().await;
            let updated = if dry_run(&query) {
                guard
                    .scratch()
                    .update(resource, ns, name, object, &writer)?
            } else {
                guard.update(resource, ns, name, object, &writer)?
            };
            Ok(json_response(StatusCode::OK, &serve(updated)))
        }
        (&Method::PATCH, Some(ns), Some(name)) => {
            if sim.faults.take_conflict() {
                return Err(KubeError::conflict(resource, name));
            }
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let mut guard = sim.store.lock().await;
            // A dry run writes on a copy, so that every check (conflicts,
            // field managers, validation) runs and nothing is kept.
            let mut scratch;
            let store = if dry_run(&query) {
                scratch = guard.scratch();
                &mut scratch
            } else {
                &mut *guard
            };
            let patched = match content_type.as_str() {
                "application/apply-patch+yaml" => {
                    if query.get("fieldManager").is_none() {
                        return Err(KubeError::bad_request(
                            "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
                        ));
                    }
                    let config: Value = serde_yaml_ng::from_slice(&body)
                        .map_err(|e| KubeError::bad_request(format!("error decoding YAML: {e}")))?;
                    check_kind(&config, resource, &api_version)?;
                    let force = query.get("force").is_some_and(|f| f == "true");
                    store.apply(resource, ns, name, config, &writer, force)?
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    let patch = parse_json(&body)?;
                    let mut object = store
                        .get(resource, ns, name)
                        .ok_or_else(|| KubeError::not_found(resource, name))?;
                    strip_version_unless_given(&mut object, &patch);
                    json_patch::merge(&mut object, &patch);
                    store.update(resource, ns, name, object, &writer)?
                }
                "application/json-patch+json" => {
                    let patch: json_patch::Patch = serde_json::from_slice(&body)
                        .map_err(|e| KubeError::bad_request(format!("invalid JSON patch: {e}")))?;
                    let mut object = store
                        .get(resource, ns, name)
                        .ok_or_else(|| KubeError::not_found(resource, name))?;
                    let before = object["metadata"]["resourceVersion"].clone();
                    json_patch::patch(&mut object, &patch).map_err(|e| {
                        KubeError::invalid(resource, name, &format!("the JSON patch failed: {e}"))
                    })?;
                    if object["metadata"]["resourceVersion"] == before {
                        // Not pinned by the patch itself: applies to the latest.
                        crate::store::meta_mut(&mut object).remove("resourceVersion");
                    }
                    store.update(resource, ns, name, object, &writer)?
                }
                other => return Err(KubeError::unsupported_media_type(other)),
            };
            Ok(json_response(StatusCode::OK, &serve(patched)))
        }
        (&Method::DELETE, Some(ns), Some(name)) => {
            let preconditions = delete_preconditions(&body)?;
            let mut store = sim.store.lock().await;
            // kubectl and kube-rs say it in the DeleteOptions body.
            if dry_run(&query) || delete_dry_run(&body) {
                let deleted = store
                    .scratch()
                    .delete_if(resource, ns, name, &preconditions)?;
                return Ok(json_response(StatusCode::OK, &serve(deleted)));
            }
            let deleted = store.delete_if(resource, ns, name, &preconditions)?;
            if resource == NAMESPACES {
                // What the namespace controller does, at once: its objects go too.
                for kind in ALL.into_iter().filter(|r| r.namespaced) {
                    for object in store.list(kind, Some(name)) {
                        if let Some(inner) = object["metadata"]["name"].as_str() {
                            let _ = store.delete(kind, name, inner);
                        }
                    }
                }
            }
            drop(store);
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": resource.group, "kind": resource.plural,
                                "uid": deleted["metadata"]["uid"]},
                }),
            ))
        }
        _ => Err(KubeError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "the server does not allow this method on the requested resource: {method}"
            ),
            details: json!({}),
        }),
    }
}

fn dry_run(query: &Query) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

/// A merge patch that does not name a resourceVersion applies to the latest.
fn strip_version_unless_given(object: &mut Value, patch: &Value) {
    if patch["metadata"]["resourceVersion"].is_null() {
        crate::store::meta_mut(object).remove("resourceVersion");
    }
}

fn parse_json(body: &[u8]) -> Result<Value, KubeError> {
    serde_json::from_slice(body).map_err(|e| {
        KubeError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

fn check_kind(object: &Value, resource: Resource, api_version: &str) -> Result<(), KubeError> {
    let kind = object["kind"].as_str();
    if kind.is_some_and(|k| k != resource.kind) {
        return Err(KubeError::bad_request(format!(
            "the kind {:?} does not match the resource {}",
            kind.unwrap_or_default(),
            resource.plural
        )));
    }
    let given = object["apiVersion"].as_str();
    if given.is_some_and(|v| {
        !resource
            .versions
            .iter()
            .any(|version| resource.api_version(version) == v)
    }) {
        return Err(KubeError::bad_request(format!(
            "the apiVersion {:?} is not served for {}; use {api_version}",
            given.unwrap_or_default(),
            resource.plural
        )));
    }
    Ok(())
}

/// kubectl and client-go name the manager after the program when the
/// request does not.
fn default_manager(headers: &HeaderMap) -> String {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn as_version(mut object: Value, resource: Resource, api_version: &str) -> Value {
    if let Value::Object(map) = &mut object {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(resource.kind));
    }
    object
}

fn watch(
    sim: &Arc<Sim>,
    resource: Resource,
    namespace: Option<&str>,
    api_version: &str,
    query: &Query,
) -> Result<Response, KubeError> {
    let selector = Selector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(KubeError::bad_request)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    // A streaming list (client-go's WatchList): the current objects, then a
    // bookmark that marks their end.
    let initial_events = query.get("sendInitialEvents") == Some("true");
    // Bookmarks, as the API server sends them when asked: now and then, and
    // just before a watch ends at its timeout, so that the client resumes
    // from a version this cluster still keeps instead of listing again.
    let bookmarks = query.get("allowWatchBookmarks") == Some("true");
    let from = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0" && !initial_events);
    let namespace = namespace.map(str::to_owned);
    let api_version = api_version.to_owned();
    let sim = sim.clone();
    let from = match from {
        None => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| KubeError::bad_request(format!("invalid resourceVersion {text:?}")))?,
        ),
    };
    let keep = move |kind: &str, event_resource: Resource, ns: &str, object: &Value| {
        event_resource == resource
            && namespace.as_deref().is_none_or(|n| n == ns)
            && selector.matches(&labels_of(object))
            && !kind.is_empty()
    };
    let body = async_stream(
        sim,
        from,
        Marks {
            initial_events,
            bookmarks,
        },
        keep,
        resource,
        api_version,
        timeout,
    );
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The bookmarks a watch asked for.
struct Marks {
    /// One after the initial events (`sendInitialEvents=true`).
    initial_events: bool,
    /// Now and then, and before the timeout (`allowWatchBookmarks=true`).
    bookmarks: bool,
}

/// How often a watch that asked for bookmarks gets one (the API server:
/// about once a minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// How long before a watch's timeout its last bookmark is sent.
const LAST_BOOKMARK_BEFORE: Duration = Duration::from_millis(200);

fn async_stream(
    sim: Arc<Sim>,
    from: Option<u64>,
    marks: Marks,
    keep: impl Fn(&str, Resource, &str, &Value) -> bool + Send + Sync + 'static,
    resource: Resource,
    api_version: String,
    timeout: Duration,
) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let open = sim.watches.open();
    tokio::spawn(async move {
        // Counted while the watch runs: until its timeout, a fault, or its
        // client going away.
        let _open = open;
        let line = |kind: &str, object: Value| {
            let mut text =
                json!({"type": kind, "object": as_version(object, resource, &api_version)})
                    .to_string();
            text.push('\n');
            Ok(Bytes::from(text))
        };
        let (initial, live, mut last) = {
            let store = sim.store.lock().await;
            let live = store.subscribe();
            let initial: Vec<(String, Value)> = match from {
                None => store
                    .list(resource, None)
                    .into_iter()
                    .filter(|o| {
                        keep(
                            "ADDED",
                            resource,
                            o["metadata"]["namespace"].as_str().unwrap_or_default(),
                            o,
                        )
                    })
                    .map(|o| ("ADDED".to_owned(), o))
                    .collect(),
                Some(revision) => match store.events_after(revision) {
                    Some(events) => events
                        .into_iter()
                        .filter(|e| keep(e.kind, e.resource, &e.namespace, &e.object))
                        .map(|e| (e.kind.to_owned(), e.object))
                        .collect(),
                    None => {
                        let gone = KubeError::gone(format!(
                            "too old resource version: {revision} ({})",
                            store.revision()
                        ));
                        let _ = sender.send(line("ERROR", gone.status())).await;
                        return;
                    }
                },
            };
            (initial, live, store.revision())
        };
        for (kind, object) in initial {
            if sender.send(line(&kind, object)).await.is_err() {
                return;
            }
        }
        if marks.initial_events {
            let bookmark = json!({"metadata": {
                "resourceVersion": last.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            }});
            if sender.send(line("BOOKMARK", bookmark)).await.is_err() {
                return;
            }
        }
        // Every event up to this revision has been sent or left out.
        let mut read_up_to = last;
        let bookmark = |revision: u64| {
            line(
                "BOOKMARK",
                json!({"metadata": {"resourceVersion": revision.to_string()}}),
            )
        };
        let mut live = BroadcastStream::new(live);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let last_bookmark = tokio::time::sleep(timeout.saturating_sub(LAST_BOOKMARK_BEFORE));
        tokio::pin!(last_bookmark);
        let mut every =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let mut last_sent = false;
        let mut ended = sim.faults.watches_ended.subscribe();
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = sender.closed() => return,
                _ = ended.changed() => return,
                () = &mut last_bookmark, if marks.bookmarks && !last_sent => {
                    last_sent = true;
                    if sender.send(bookmark(read_up_to)).await.is_err() {
                        return;
                    }
                }
                _ = every.tick(), if marks.bookmarks => {
                    if sender.send(bookmark(read_up_to)).await.is_err() {
                        return;
                    }
                }
                next = live.next() => match next {
                    Some(Ok(event)) => {
                        read_up_to = read_up_to.max(event.revision);
                        if event.revision <= last || !keep(event.kind, event.resource, &event.namespace, &event.object) {
                            continue;
                        }
                        last = event.revision;
                        if sender.send(line(event.kind, event.object)).await.is_err() {
                            return;
                        }
                    }
                    // Fell behind: end the watch; the client resumes from its last version.
                    Some(Err(_)) | None => return,
                },
            }
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

fn group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for group in ["apps", "networking.istio.io"] {
        let versions: Vec<&str> = ALL
            .iter()
            .filter(|r| r.group == group)
            .flat_map(|r| r.versions.iter().copied())
            .fold(Vec::new(), |mut acc, v| {
                if !acc.contains(&v) {
                    acc.push(v);
                }
                acc
            });
        groups.push(json!({
            "name": group,
            "versions": versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect::<Vec<_>>(),
            "preferredVersion": {"groupVersion": format!("{group}/{}", versions[0]), "version": versions[0]},
        }));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in ALL
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
    {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": r.verbs(), "shortNames": r.short_names,
        }));
        if r.has_status() {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": true,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `/openapi/v3`: one document per group version, as the API server lists
/// them. kubectl reads it to learn that the server validates fields itself
/// (`fieldValidation`), and then leaves validation to it.
fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ALL {
        for version in r.versions {
            let key = if r.group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{}/{version}", r.group)
            };
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=sim")}),
            );
        }
    }
    json!({"paths": paths})
}

/// A small OpenAPI v3 document for one group version: its paths and
/// operations (each tagged with its kind and taking `fieldValidation`), and
/// an open schema per kind.
fn openapi_document(group: &str, version: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for r in ALL
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
    {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let schema_name = format!(
            "{}.{version}.{}",
            if group.is_empty() { "core" } else { group },
            r.kind
        );
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let parameters = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        ]);
        let operation = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": parameters,
                "requestBody": {"content": {"application/json": {"schema": reference}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
            })
        };
        paths.insert(
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            json!({"get": operation("list"), "post": operation("post")}),
        );
        paths.insert(
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch"), "delete": operation("delete")}),
        );
        schemas.insert(
            schema_name,
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [gvk],
                "x-kubernetes-preserve-unknown-fields": true,
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (meshrelease simulated cluster)", "version": SERVER_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The preconditions of a DELETE's `DeleteOptions` body, if it has one.
/// `DeleteOptions.dryRun: ["All"]`.
fn delete_dry_run(body: &Bytes) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|options| options.get("dryRun").cloned())
        .and_then(|d| d.as_array().cloned())
        .is_some_and(|d| d.iter().any(|v| v == "All"))
}

fn delete_preconditions(body: &Bytes) -> Result<crate::store::Preconditions, KubeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(crate::store::Preconditions::default());
    }
    let options: Value = serde_json::from_slice(body)
        .map_err(|e| KubeError::bad_request(format!("the DeleteOptions body is not JSON: {e}")))?;
    let text = |key: &str| {
        options["preconditions"][key]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(crate::store::Preconditions {
        uid: text("uid"),
        resource_version: text("resourceVersion"),
    })
}
