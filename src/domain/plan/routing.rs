//! Istio routing for a release: the owners' VirtualService and
//! DestinationRule (saved before the first change) turned into the objects
//! that split the host's traffic per the policy, that send it all to the
//! gray version (an end), or that put it back (a cancel). Routes to other
//! hosts, TCP/TLS routes and every field the service does not model stay
//! as they were. Argo Rollouts keeps the same algebra in its `istio.go`;
//! if another mesh is ever supported, this is the file that gets a sibling.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::marks::{is_ours, mark, pinned_identity};
use super::{Observation, Placement, Plan};
use crate::domain::change::{Change, ObjectKind, PlannedObject};
use crate::domain::conditions::{ConditionType, Reason};
use crate::domain::deployment::{APP_LABEL, VERSION_LABEL, pod_labels};
use crate::domain::istio::{
    Destination, DestinationRuleSpec, HttpMatchRequest, HttpRoute, HttpRouteDestination, Subset,
    VirtualServiceSpec, names_service, spec_of,
};
use crate::domain::kinds::Phase;
use crate::domain::object::{JsonObject, identity, name_of, object_mut, to_json};
use crate::domain::release::{Release, SavedRouting};
use crate::domain::traffic::{MatchRule, MatchValue, TrafficPolicy};

/// The VirtualService and DestinationRule of the host, and the routing as
/// the owners left it.
#[derive(Debug, Clone)]
pub(super) struct Routing {
    /// The original's `version` label value.
    pub(super) original_version: String,
    /// The objects this release edits, as read now (for their metadata and
    /// resourceVersion): the owners' (by the name saved), or the one this
    /// release created where the owners had none.
    pub(super) current_vs: Option<JsonObject>,
    pub(super) current_dr: Option<JsonObject>,
    /// Objects for the host that are neither: never written or deleted,
    /// each as "Kind name".
    pub(super) foreign: Vec<String>,
    pub(super) saved: SavedRouting,
}

/// Why the routing cannot be built on: the reason and the message of the
/// condition that says so.
pub(super) struct Refusal {
    pub reason: Reason,
    pub message: String,
}

fn refusal(reason: Reason, message: String) -> Refusal {
    Refusal { reason, message }
}

impl Routing {
    pub(super) fn read(release: &Release, observed: &Observation) -> Result<Self, Refusal> {
        let service = &release.service_name;
        let namespace = &release.namespace;
        let Some(original) = &observed.original else {
            return match release.status.phase {
                // Ended with the original deleted, or canceled whatever
                // became of it: nothing to route around.
                Phase::Ending | Phase::Canceling => Ok(Self::after_original(release, observed)?),
                Phase::Pending
                | Phase::Deploying
                | Phase::Running
                | Phase::Failed
                | Phase::Ended
                | Phase::Canceled => Err(refusal(
                    Reason::OriginalNotFound,
                    format!(
                        "Deployment {:?} is not in namespace {namespace:?} of cluster {:?}",
                        release.deployment_name, release.cluster_id
                    ),
                )),
            };
        };
        let labels = pod_labels(original);
        let (Some(_app), Some(version)) = (labels.get(APP_LABEL), labels.get(VERSION_LABEL)) else {
            return Err(refusal(
                Reason::OriginalUnlabeled,
                format!(
                    "the pods of Deployment {:?} must carry the labels \"app\" and \"version\"",
                    release.deployment_name
                ),
            ));
        };
        if *version == release.version {
            return Err(refusal(
                Reason::SameVersion,
                format!(
                    "the original Deployment is already version {version:?}; the gray version must differ"
                ),
            ));
        }
        match &observed.service {
            None => {
                return Err(refusal(
                    Reason::ServiceNotFound,
                    format!("Service {service:?} is not in namespace {namespace:?}"),
                ));
            }
            Some(svc) => {
                let selects_version = svc
                    .get("spec")
                    .and_then(|s| s.get("selector"))
                    .and_then(Value::as_object)
                    .is_some_and(|s| s.contains_key(VERSION_LABEL));
                if selects_version {
                    return Err(refusal(
                        Reason::ServiceSelectsVersion,
                        format!(
                            "the selector of Service {service:?} names \"version\": it would send traffic to one version only"
                        ),
                    ));
                }
            }
        }
        let mut routing = Self::after_original(release, observed)?;
        routing.original_version = version.clone();
        Ok(routing)
    }

    /// The host's objects, without reading the original Deployment.
    pub(super) fn after_original(
        release: &Release,
        observed: &Observation,
    ) -> Result<Self, Refusal> {
        let for_host = |objects: &[JsonObject], host_of: fn(&JsonObject) -> Vec<String>| {
            objects
                .iter()
                .filter(|o| {
                    host_of(o)
                        .iter()
                        .any(|h| names_service(h, &release.service_name, &release.namespace))
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        let vs = for_host(&observed.virtual_services, |o| {
            spec_of::<VirtualServiceSpec>(o)
                .map(|s| s.hosts)
                .unwrap_or_default()
        });
        let dr = for_host(&observed.destination_rules, |o| {
            spec_of::<DestinationRuleSpec>(o)
                .map(|s| vec![s.host])
                .unwrap_or_default()
        });
        let original_version = release
            .status
            .deployment
            .as_deref()
            .and_then(|d| pod_labels(d).get(VERSION_LABEL).cloned())
            .unwrap_or_default();
        let Some(saved) = release.status.saved_routing.clone() else {
            // Not started yet: what is there now is the owners' routing,
            // to be saved; two of a kind for the host is not a routing
            // this release can build on.
            for (kind, found) in [("VirtualServices", &vs), ("DestinationRules", &dr)] {
                if found.len() > 1 {
                    let names: Vec<&str> = found.iter().map(name_of).collect();
                    return Err(refusal(
                        Reason::AmbiguousRouting,
                        format!(
                            "{kind} {} all name host {:?}; Istio would pick one at random",
                            names.join(", "),
                            release.service_name
                        ),
                    ));
                }
            }
            let current_vs = vs.into_iter().next();
            let current_dr = dr.into_iter().next();
            return Ok(Routing {
                original_version,
                saved: SavedRouting {
                    virtual_service: current_vs.clone().map(Arc::new),
                    destination_rule: current_dr.clone().map(Arc::new),
                },
                current_vs,
                current_dr,
                foreign: Vec::new(),
            });
        };
        // Started: the objects it edits are the owners' saved ones (by
        // name), or its own where the owners had none; anything else for
        // the host appeared since, and is someone else's.
        let mut foreign = Vec::new();
        let mut edited = |found: Vec<JsonObject>, saved: Option<&JsonObject>, kind: &str| {
            let mut current = None;
            for object in found {
                let edits = match saved {
                    Some(saved) => name_of(&object) == name_of(saved),
                    None => is_ours(&object, release),
                };
                if edits && current.is_none() {
                    current = Some(object);
                } else {
                    foreign.push(format!("{kind} {:?}", name_of(&object)));
                }
            }
            current
        };
        let current_vs = edited(vs, saved.virtual_service.as_deref(), "VirtualService");
        let current_dr = edited(dr, saved.destination_rule.as_deref(), "DestinationRule");
        Ok(Routing {
            original_version,
            current_vs,
            current_dr,
            foreign,
            saved,
        })
    }

    /// The owners' VirtualService spec, or the one this service creates.
    fn base_vs(&self, release: &Release) -> VirtualServiceSpec {
        self.saved
            .virtual_service
            .as_deref()
            .and_then(|o| spec_of(o).ok())
            .unwrap_or_else(|| VirtualServiceSpec {
                hosts: vec![release.service_name.clone()],
                http: Some(vec![HttpRoute {
                    route: Some(vec![HttpRouteDestination {
                        destination: Destination {
                            host: release.service_name.clone(),
                            ..Destination::default()
                        },
                        ..HttpRouteDestination::default()
                    }]),
                    ..HttpRoute::default()
                }]),
                rest: JsonObject::new(),
            })
    }

    fn base_dr(&self, release: &Release) -> DestinationRuleSpec {
        self.saved
            .destination_rule
            .as_deref()
            .and_then(|o| spec_of(o).ok())
            .unwrap_or_else(|| DestinationRuleSpec {
                host: release.service_name.clone(),
                ..DestinationRuleSpec::default()
            })
    }

    /// The objects for traffic split by `policy`, where they differ from
    /// what the cluster holds.
    pub(super) fn put(
        &self,
        placement: &Placement,
        release: &Release,
        policy: &TrafficPolicy,
    ) -> Plan {
        let plan = self.routing_changes(release, placement, policy, true);
        let applied = plan.changes.is_empty();
        plan.condition(
            ConditionType::TrafficApplied,
            applied,
            if applied {
                Reason::Applied
            } else {
                Reason::Applying
            },
            if applied {
                "the routing in the cluster matches the traffic policy"
            } else {
                "changing the VirtualService and DestinationRule"
            },
        )
    }

    /// All traffic to the gray version, the original's subset out of the
    /// routes (and of the DestinationRule, where this release added it).
    pub(super) fn ended(&self, release: &Release, placement: &Placement) -> Plan {
        self.routing_changes(release, placement, &TrafficPolicy::Weight(100), false)
    }

    /// The DestinationRule and VirtualService for `policy`, in the order that
    /// never leaves a route naming a missing subset: with the original's
    /// subset kept, make before break (subsets, then routes); without it,
    /// break after make (routes, then subsets).
    fn routing_changes(
        &self,
        release: &Release,
        placement: &Placement,
        policy: &TrafficPolicy,
        with_original: bool,
    ) -> Plan {
        let subsets = match self.subsets(release, with_original) {
            Ok(subsets) => subsets,
            // Only an active release can fail; one that failed, ends or is
            // canceled says why its routing is not applied (asking to fail
            // it again was a move the phase machine refuses, every round).
            Err(message) => {
                return match release.status.phase {
                    Phase::Pending | Phase::Deploying | Phase::Running => {
                        Plan::fail(Reason::SubsetConflict, message)
                    }
                    Phase::Failed
                    | Phase::Ending
                    | Phase::Canceling
                    | Phase::Ended
                    | Phase::Canceled => Plan::default().condition(
                        ConditionType::TrafficApplied,
                        false,
                        Reason::SubsetConflict,
                        message,
                    ),
                };
            }
        };
        let http = routes_for(
            &self.base_vs(release),
            release,
            &self.original_version,
            policy,
        );
        let dr = self.put_dr(release, placement, subsets);
        let vs = self.put_vs(release, placement, Some(http));
        let changes = if with_original {
            dr.into_iter().chain(vs).collect()
        } else {
            vs.into_iter().chain(dr).collect()
        };
        Plan {
            changes,
            ..Plan::default()
        }
    }

    /// The routing as its owners left it: their objects restored, the ones
    /// this release created deleted.
    pub(super) fn restored(&self, release: &Release, placement: &Placement) -> Plan {
        let mut changes = Vec::new();
        // The routes first, so that no route names a subset that is gone.
        for (kind, saved, current) in [
            (
                ObjectKind::VirtualService,
                &self.saved.virtual_service,
                &self.current_vs,
            ),
            (
                ObjectKind::DestinationRule,
                &self.saved.destination_rule,
                &self.current_dr,
            ),
        ] {
            match (saved, current) {
                (None, None) => {}
                (None, Some(current)) => {
                    if is_ours(current, release) {
                        changes.push(PlannedObject {
                            cluster_id: placement.istio_cluster.clone(),
                            kind,
                            change: Change::Delete,
                            object: pinned_identity(
                                placement.istio_api.api_version(),
                                kind.as_str(),
                                current,
                                &release.namespace,
                            ),
                        });
                    }
                }
                // The owners deleted their object meanwhile: that is
                // theirs to decide, and it is not made again.
                (Some(_), None) => {}
                (Some(saved), Some(current)) => {
                    let mut object = current.clone();
                    let meta = object_mut(&mut object, "metadata");
                    for key in ["labels", "annotations"] {
                        match saved.get("metadata").and_then(|m| m.get(key)) {
                            Some(v) => {
                                meta.insert(key.into(), v.clone());
                            }
                            None => {
                                meta.remove(key);
                            }
                        }
                    }
                    match saved.get("spec") {
                        Some(spec) => object.insert("spec".into(), spec.clone()),
                        None => object.remove("spec"),
                    };
                    if current != &object {
                        changes.push(PlannedObject {
                            cluster_id: placement.istio_cluster.clone(),
                            kind,
                            change: Change::Apply,
                            object,
                        });
                    }
                }
            }
        }
        Plan {
            changes,
            ..Plan::default()
        }
    }

    /// The DestinationRule's subsets with one per version (or, after an
    /// end, without the original's where this release added it).
    fn subsets(&self, release: &Release, with_original: bool) -> Result<Vec<Subset>, String> {
        let mut subsets = self.base_dr(release).subsets.unwrap_or_default();
        let owners_had = |name: &str| subsets.iter().any(|s| s.name == name);
        let original = subset_name(&self.original_version);
        let original_was_theirs = owners_had(&original);
        for version in [self.original_version.as_str(), release.version.as_str()] {
            let name = subset_name(version);
            let labels = BTreeMap::from([(VERSION_LABEL.to_owned(), version.to_owned())]);
            match subsets.iter().find(|s| s.name == name) {
                Some(s) if s.labels.as_ref() == Some(&labels) => {}
                Some(s) => {
                    return Err(format!(
                        "the DestinationRule already has a subset {:?} with labels {:?}; it must select version {version:?} alone",
                        s.name,
                        s.labels.clone().unwrap_or_default()
                    ));
                }
                None => subsets.push(Subset {
                    name,
                    labels: Some(labels),
                    rest: JsonObject::new(),
                }),
            }
        }
        if !with_original && !original_was_theirs {
            subsets.retain(|s| s.name != original);
        }
        Ok(subsets)
    }

    fn put_dr(
        &self,
        release: &Release,
        placement: &Placement,
        subsets: Vec<Subset>,
    ) -> Option<PlannedObject> {
        let mut spec = self.base_dr(release);
        if let Some(current) = &self.current_dr
            && let Ok(now) = spec_of::<DestinationRuleSpec>(current)
        {
            // Whatever else the owners changed since, stays.
            spec.rest = now.rest;
            spec.host = now.host;
        }
        spec.subsets = Some(subsets);
        self.put_object(
            release,
            placement,
            ObjectKind::DestinationRule,
            &self.current_dr,
            to_json(&spec),
        )
    }

    fn put_vs(
        &self,
        release: &Release,
        placement: &Placement,
        http: Option<Vec<HttpRoute>>,
    ) -> Option<PlannedObject> {
        let mut spec = self.base_vs(release);
        if let Some(current) = &self.current_vs
            && let Ok(now) = spec_of::<VirtualServiceSpec>(current)
        {
            spec.rest = now.rest;
            spec.hosts = now.hosts;
        }
        spec.http = http;
        self.put_object(
            release,
            placement,
            ObjectKind::VirtualService,
            &self.current_vs,
            to_json(&spec),
        )
    }

    /// The object with `spec`, marked, unless the cluster holds it already.
    fn put_object(
        &self,
        release: &Release,
        placement: &Placement,
        kind: ObjectKind,
        current: &Option<JsonObject>,
        spec: Value,
    ) -> Option<PlannedObject> {
        let mut object = match current {
            Some(current) => current.clone(),
            None => identity(
                placement.istio_api.api_version(),
                kind.as_str(),
                &release.service_name,
                &release.namespace,
            ),
        };
        object.insert("spec".into(), spec);
        mark(&mut object, release);
        if current.as_ref() == Some(&object) {
            return None;
        }
        Some(PlannedObject {
            cluster_id: placement.istio_cluster.clone(),
            kind,
            change: Change::Apply,
            object,
        })
    }
}

/// The HTTP routes for `policy`: every route that sends only to the
/// Service is split between the versions (a match rule gets a copy of the
/// route in front of it, for the gray version); routes to other hosts stay
/// exactly as they are.
fn routes_for(
    base: &VirtualServiceSpec,
    release: &Release,
    original_version: &str,
    policy: &TrafficPolicy,
) -> Vec<HttpRoute> {
    let service = &release.service_name;
    let namespace = &release.namespace;
    let original = subset_name(original_version);
    let gray = subset_name(&release.version);
    let mut out = Vec::new();
    for (index, route) in base
        .http
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let destinations = route.route.clone().unwrap_or_default();
        let ours = !destinations.is_empty()
            && destinations
                .iter()
                .all(|d| names_service(&d.destination.host, service, namespace));
        if !ours {
            out.push(route);
            continue;
        }
        let template = destinations[0].clone();
        let to = |subset: &str, weight: Option<i64>| HttpRouteDestination {
            destination: Destination {
                subset: Some(subset.to_owned()),
                ..template.destination.clone()
            },
            weight,
            rest: template.rest.clone(),
        };
        match policy {
            TrafficPolicy::Weight(w) => {
                let w = i64::from(*w);
                let split = match w {
                    0 => vec![to(&original, None)],
                    100 => vec![to(&gray, None)],
                    _ => vec![to(&original, Some(100 - w)), to(&gray, Some(w))],
                };
                out.push(HttpRoute {
                    route: Some(split),
                    ..route
                });
            }
            TrafficPolicy::Match(rules) => {
                let matches = merged_matches(route.matches.as_deref(), rules);
                if !matches.is_empty() {
                    out.push(HttpRoute {
                        name: Some(gray_route_name(&release.name, route.name.as_deref(), index)),
                        matches: Some(matches),
                        route: Some(vec![to(&gray, None)]),
                        ..route.clone()
                    });
                }
                out.push(HttpRoute {
                    route: Some(vec![to(&original, None)]),
                    ..route
                });
            }
        }
    }
    out
}

fn gray_route_name(release: &str, route: Option<&str>, index: usize) -> String {
    match route {
        Some(name) => format!("{name}-{release}-gray"),
        None => format!("{release}-gray-{index}"),
    }
}

/// Each of the route's own match requests ANDed with each rule (both must
/// hold). A pair that would match one header two ways is left out: no
/// request could satisfy both as one Istio match.
fn merged_matches(
    route: Option<&[HttpMatchRequest]>,
    rules: &[MatchRule],
) -> Vec<HttpMatchRequest> {
    let owners: Vec<HttpMatchRequest> = match route {
        Some(m) if !m.is_empty() => m.to_vec(),
        _ => vec![HttpMatchRequest::default()],
    };
    let mut out = Vec::new();
    for base in &owners {
        'rules: for rule in rules {
            let mut merged = base.clone();
            let (headers, params) = rule_conditions(rule);
            for (target, extra) in [
                (&mut merged.headers, headers),
                (&mut merged.query_params, params),
            ] {
                if extra.is_empty() {
                    continue;
                }
                let map = target.get_or_insert_with(Default::default);
                for (k, v) in extra {
                    if map.contains_key(&k) {
                        continue 'rules;
                    }
                    map.insert(k, v);
                }
            }
            out.push(merged);
        }
    }
    out
}

/// A rule as Istio match conditions: headers (cookie and User-Agent
/// included) and query parameters.
fn rule_conditions(rule: &MatchRule) -> (JsonObject, JsonObject) {
    let string_match = |value: &MatchValue| match value {
        MatchValue::Exact(v) => json!({"exact": v}),
        MatchValue::Regex(v) => json!({"regex": v}),
    };
    let mut headers = JsonObject::new();
    for h in &rule.headers {
        headers.insert(h.name.clone(), string_match(&h.value));
    }
    if let Some(cookie) = &rule.cookie {
        headers.insert("cookie".into(), json!({"regex": cookie}));
    }
    let alternatives = |patterns: Vec<&str>| format!("(?:{})", patterns.join("|"));
    let ua = match (rule.os.is_empty(), rule.browsers.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!(
            ".*{}.*",
            alternatives(rule.os.iter().map(|o| o.user_agent_pattern()).collect())
        )),
        (true, false) => Some(format!(
            ".*{}.*",
            alternatives(
                rule.browsers
                    .iter()
                    .map(|b| b.user_agent_pattern())
                    .collect()
            )
        )),
        (false, false) => {
            // Both must appear, in either order (RE2 has no look-ahead).
            let os = alternatives(rule.os.iter().map(|o| o.user_agent_pattern()).collect());
            let browser = alternatives(
                rule.browsers
                    .iter()
                    .map(|b| b.user_agent_pattern())
                    .collect(),
            );
            Some(format!(".*{os}.*{browser}.*|.*{browser}.*{os}.*"))
        }
    };
    if let Some(ua) = ua {
        headers.insert("user-agent".into(), json!({"regex": ua}));
    }
    let mut params = JsonObject::new();
    for q in &rule.query_params {
        params.insert(q.name.clone(), string_match(&q.value));
    }
    (headers, params)
}

/// A DestinationRule subset name for a version label value (a DNS label:
/// lowercase, with '.' and '_' as '-').
pub fn subset_name(version: &str) -> String {
    version
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
