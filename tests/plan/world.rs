//! A pretend cluster set for the planner: objects by (cluster, kind, name),
//! changes carried out as the driver would, status recorded as the driver's
//! status-only write would. No HTTP: the planner is pure, and so is this.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use meshrelease::domain::JsonObject;
use meshrelease::domain::change::{Change, ObjectKind};
use meshrelease::domain::deployment::{TemplateContext, check_and_complete};
use meshrelease::domain::istio::IstioApi;
use meshrelease::domain::mesh::OriginalOnEnd;
use meshrelease::domain::phase::{self, Move, Outcome};
use meshrelease::domain::plan::{Observation, Placement, Plan, after, plan};
use meshrelease::domain::release::{GrayDeployment, ReleaseStatus};
use meshrelease::domain::{Release, ReleaseType, TrafficPolicy};
use serde_json::{Value, json};
use uuid::Uuid;

pub const NS: &str = "shop";

pub fn object(value: Value) -> JsonObject {
    let Value::Object(map) = value else {
        panic!("not an object: {value}")
    };
    map
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 5, 0, 0).unwrap()
}

/// A release of Service `reviews` (original Deployment `reviews-v1`, pods
/// `app=reviews, version=v1`) to version v2, gray in cluster-b, routing in
/// cluster-a.
pub fn release(kind: ReleaseType, policy: TrafficPolicy) -> Release {
    let template = object(json!({
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 300,
            "selector": {"matchLabels": {"app": "reviews"}},
            "template": {
                "metadata": {"labels": {"app": "reviews"}},
                "spec": {"containers": [{"name": "reviews", "image": "registry.example/reviews:2.0"}]}
            }
        }
    }));
    let mut violations = Vec::new();
    let completed = check_and_complete(
        &template,
        "template",
        &TemplateContext {
            namespace: NS,
            deployment_name: "reviews-v1",
            version: "v2",
        },
        &mut violations,
    )
    .expect("a valid template");
    let mut status = ReleaseStatus::pending(t0(), vec![Arc::new(completed)]);
    status.phase_time = Some(t0());
    Release {
        mesh_id: "mesh".into(),
        namespace: NS.into(),
        name: "reviews-canary".into(),
        uid: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        resource_version: 1,
        service_name: "reviews".into(),
        cluster_id: "cluster-a".into(),
        deployment_name: "reviews-v1".into(),
        version: "v2".into(),
        release_type: kind,
        gray_deployments: vec![GrayDeployment {
            cluster_id: "cluster-b".into(),
            template: Arc::new(template),
        }],
        traffic_policy: policy,
        strategy: None,
        generation: 1,
        status,
    }
}

pub fn context() -> Placement {
    Placement {
        istio_cluster: "cluster-a".into(),
        istio_api: IstioApi::V1beta1,
        original_on_end: OriginalOnEnd::Delete,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub objects: BTreeMap<(String, ObjectKind, String), JsonObject>,
    /// Whether gray Deployments become ready once applied.
    pub gray_becomes_ready: bool,
    pub now: DateTime<Utc>,
}

impl World {
    /// The original Deployment and the Service, and whatever Istio objects
    /// the owners made.
    pub fn new(istio: Vec<(ObjectKind, Value)>) -> Self {
        let mut world = World {
            objects: BTreeMap::new(),
            gray_becomes_ready: true,
            now: t0(),
        };
        world.put(
            "cluster-a",
            ObjectKind::Deployment,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "reviews-v1", "namespace": NS},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
                         "template": {"metadata": {"labels": {"app": "reviews", "version": "v1"}},
                                      "spec": {"containers": [{"name": "reviews", "image": "registry.example/reviews:1.0"}]}}}
            }),
        );
        for (kind, value) in istio {
            world.put("cluster-a", kind, value);
        }
        world
    }

    pub fn put(&mut self, cluster: &str, kind: ObjectKind, value: Value) {
        let object = object(value);
        let name = name(&object);
        self.objects.insert((cluster.into(), kind, name), object);
    }

    pub fn get(&self, cluster: &str, kind: ObjectKind, name: &str) -> Option<&JsonObject> {
        self.objects.get(&(cluster.into(), kind, name.into()))
    }

    fn of_kind(&self, cluster: &str, kind: ObjectKind) -> Vec<JsonObject> {
        self.objects
            .iter()
            .filter(|((c, k, _), _)| c == cluster && *k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn observe(&self, release: &Release) -> Observation {
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": NS},
            "spec": {"selector": {"app": "reviews"}, "ports": [{"port": 9080}]}
        });
        Observation {
            unreachable: vec![],
            original: self
                .get(
                    "cluster-a",
                    ObjectKind::Deployment,
                    &release.deployment_name,
                )
                .cloned(),
            service: Some(object(service)),
            virtual_services: self.of_kind("cluster-a", ObjectKind::VirtualService).into(),
            destination_rules: self
                .of_kind("cluster-a", ObjectKind::DestinationRule)
                .into(),
            gray: release
                .gray_deployments
                .iter()
                .zip(&release.status.gray_deployments)
                .map(|(g, completed)| {
                    self.get(&g.cluster_id, ObjectKind::Deployment, &name(completed))
                        .cloned()
                })
                .collect(),
            now: self.now,
        }
    }

    /// Carries out a plan's changes, as the driver would.
    pub fn carry_out(&mut self, plan: &Plan) {
        for change in &plan.changes {
            let key = (change.cluster_id.clone(), change.kind, name(&change.object));
            match change.change {
                Change::Apply => {
                    let mut object = change.object.clone();
                    if change.kind == ObjectKind::Deployment && self.gray_becomes_ready {
                        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
                        object.insert(
                            "status".into(),
                            json!({
                                "observedGeneration": 1, "replicas": replicas,
                                "updatedReplicas": replicas, "availableReplicas": replicas
                            }),
                        );
                        object
                            .get_mut("metadata")
                            .and_then(Value::as_object_mut)
                            .unwrap()
                            .insert("generation".into(), json!(1));
                    }
                    self.objects.insert(key, object);
                }
                Change::Delete => {
                    self.objects.remove(&key);
                }
                Change::ScaleToZero => {
                    if let Some(o) = self.objects.get_mut(&key) {
                        o["spec"]["replicas"] = json!(0);
                    }
                }
            }
        }
    }
}

/// What the driver records after a round whose changes were all carried
/// out: the domain's own step from a plan to a status (`plan::after`),
/// applied as the store write applies it. No copy of either here.
pub fn record(release: &mut Release, plan: &Plan, observed: &Observation, now: DateTime<Utc>) {
    let (update, _) = after(release, plan.clone(), observed, None, 0);
    match update.apply_to(release, now) {
        Ok(Some(next)) => *release = next,
        Ok(None) => {}
        Err(why) => panic!("the plan asked for a refused move: {why}"),
    }
}

/// Plans, carries out and records until nothing more happens (at most
/// `rounds` rounds); the plans made, in order.
pub fn settle(release: &mut Release, world: &mut World, rounds: usize) -> Vec<Plan> {
    let mut plans = Vec::new();
    for _ in 0..rounds {
        let observed = world.observe(release);
        let p = plan(release, &observed, &context());
        let idle = p.changes.is_empty() && p.step.is_none();
        world.carry_out(&p);
        record(release, &p, &observed, world.now);
        world.now += TimeDelta::seconds(1);
        plans.push(p);
        if idle {
            break;
        }
    }
    plans
}

/// A client's move (end or cancel), through the phase machine.
pub fn client(release: &mut Release, step: Move) {
    match phase::transition(release.status.phase, step, &release.traffic_policy) {
        Outcome::To(p) => {
            release.status.phase = p;
            release.status.phase_time = Some(t0());
        }
        other @ (Outcome::AlreadyThere | Outcome::Refused(_)) => panic!("refused: {other:?}"),
    }
}

pub fn name(object: &JsonObject) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
