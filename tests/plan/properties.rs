//! Properties of every plan, over random owners' routing, random policy
//! changes and gray Deployments that come and go out of readiness.

use meshrelease::domain::Phase;
use meshrelease::domain::change::{Change, ObjectKind};
use meshrelease::domain::phase::Move;
use meshrelease::domain::plan::{Plan, deployment_ready, plan};
use meshrelease::domain::traffic::{MatchRule, MatchValue, StringMatch};
use meshrelease::domain::{ReleaseType, TrafficPolicy};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::world::*;

fn host() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("reviews"),
        Just("reviews.shop"),
        Just("reviews.shop.svc.cluster.local"),
        Just("ratings"),
        Just("details.other.svc.cluster.local"),
    ]
}

fn route() -> impl Strategy<Value = Value> {
    (
        host(),
        proptest::option::of("[a-z]{1,6}"),
        proptest::option::of(prop_oneof![
            "/[a-z]{1,5}".prop_map(|p| json!([{"uri": {"prefix": p}}])),
            "[a-z]{1,5}".prop_map(|v| json!([{"headers": {"x-team": {"exact": v}}}])),
            Just(json!([{"headers": {"x-user": {"exact": "bob"}}}, {"uri": {"exact": "/"}}])),
        ]),
        any::<bool>(),
    )
        .prop_map(|(host, name, matches, timeout)| {
            let mut route = json!({"route": [{"destination": {"host": host}}]});
            if let Some(name) = name {
                route["name"] = json!(name);
            }
            if let Some(m) = matches {
                route["match"] = m;
            }
            if timeout {
                route["timeout"] = json!("5s");
            }
            route
        })
}

fn owners() -> impl Strategy<Value = Vec<(ObjectKind, Value)>> {
    (
        proptest::option::of(proptest::collection::vec(route(), 1..5)),
        proptest::option::of((any::<bool>(), any::<bool>())),
    )
        .prop_map(|(routes, dr)| {
            let mut objects = Vec::new();
            if let Some(routes) = routes {
                objects.push((
                    ObjectKind::VirtualService,
                    json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                           "metadata": {"name": "owners", "namespace": NS},
                           "spec": {"hosts": ["reviews"], "http": routes}}),
                ));
            }
            if let Some((with_subset, with_policy)) = dr {
                let mut spec = json!({"host": "reviews.shop.svc.cluster.local"});
                if with_subset {
                    spec["subsets"] = json!([{"name": "v1", "labels": {"version": "v1"}},
                                             {"name": "legacy", "labels": {"version": "v0"}}]);
                }
                if with_policy {
                    spec["trafficPolicy"] = json!({"loadBalancer": {"simple": "LEAST_REQUEST"}});
                }
                objects.push((
                    ObjectKind::DestinationRule,
                    json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                           "metadata": {"name": "owners-dr", "namespace": NS}, "spec": spec}),
                ));
            }
            objects
        })
}

fn policy() -> impl Strategy<Value = TrafficPolicy> {
    prop_oneof![
        (0u8..=100).prop_map(TrafficPolicy::Weight),
        Just(TrafficPolicy::Weight(0)),
        Just(TrafficPolicy::Weight(100)),
        "[a-z]{1,4}".prop_map(|v| TrafficPolicy::Match(vec![MatchRule {
            headers: vec![StringMatch {
                name: "x-user".into(),
                value: MatchValue::Exact(v),
            }],
            ..MatchRule::default()
        }])),
    ]
}

/// Checks every VirtualService a plan applies.
fn check_routes(p: &Plan, gray_ready: bool) -> Result<(), TestCaseError> {
    for change in &p.changes {
        if change.kind != ObjectKind::VirtualService || change.change != Change::Apply {
            continue;
        }
        let routes = change.object["spec"]["http"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for route in routes {
            let destinations = route["route"].as_array().cloned().unwrap_or_default();
            if destinations.len() > 1 {
                let sum: i64 = destinations
                    .iter()
                    .map(|d| d["weight"].as_i64().unwrap_or(0))
                    .sum();
                prop_assert_eq!(sum, 100, "weights of {}", route);
            } else if let Some(d) = destinations.first() {
                prop_assert!(
                    d.get("weight").is_none() || d["weight"] == json!(100),
                    "a lone destination with a partial weight: {}",
                    route
                );
            }
            if !gray_ready {
                for d in &destinations {
                    let to_gray = d["destination"]["subset"] == json!("v2");
                    let weight = d["weight"].as_i64().unwrap_or(100);
                    prop_assert!(
                        !(to_gray && weight > 0),
                        "traffic to a gray version that is not ready: {}",
                        route
                    );
                }
            }
        }
    }
    Ok(())
}

fn gray_is_ready(world: &World) -> bool {
    world
        .get("cluster-b", ObjectKind::Deployment, "reviews-v1-v2")
        .is_some_and(deployment_ready)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any sequence of policy changes then a cancel leaves every object as
    /// the owners left it; no plan on the way sends weight to a gray
    /// version that is not ready, and every split sums to 100.
    #[test]
    fn cancel_restores_and_no_plan_routes_to_an_unready_subset(
        istio in owners(),
        policies in proptest::collection::vec((policy(), any::<bool>()), 1..6),
    ) {
        let mut world = World::new(istio);
        let before = world.objects.clone();
        let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
        for p in settle(&mut release, &mut world, 5) {
            check_routes(&p, true)?;
        }
        prop_assert_eq!(release.status.phase, Phase::Running);
        for (policy, crash) in policies {
            release.traffic_policy = policy;
            if crash {
                // The gray pods stop being available.
                if let Some(gray) = world.objects.get_mut(&("cluster-b".into(), ObjectKind::Deployment, "reviews-v1-v2".into())) {
                    gray["status"]["availableReplicas"] = json!(0);
                }
            }
            let ready = gray_is_ready(&world);
            let observed = world.observe(&release);
            let p = plan(&release, &observed, &context());
            check_routes(&p, ready)?;
            world.carry_out(&p);
            record(&mut release, &p, &observed, world.now);
        }
        release.traffic_policy = TrafficPolicy::Weight(0);
        for p in settle(&mut release, &mut world, 3) {
            check_routes(&p, gray_is_ready(&world))?;
        }
        client(&mut release, Move::Cancel);
        for p in settle(&mut release, &mut world, 5) {
            check_routes(&p, gray_is_ready(&world))?;
        }
        prop_assert_eq!(release.status.phase, Phase::Canceled);
        prop_assert_eq!(&world.objects, &before);
    }

    /// An end after any sequence leaves all traffic on the gray version and
    /// the original gone; the owners' routes to other hosts untouched.
    #[test]
    fn an_end_leaves_the_gray_version_alone_on_the_service_routes(
        istio in owners(),
        policies in proptest::collection::vec(policy(), 0..4),
    ) {
        let mut world = World::new(istio.clone());
        let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
        settle(&mut release, &mut world, 5);
        for policy in policies {
            release.traffic_policy = policy;
            settle(&mut release, &mut world, 3);
        }
        release.traffic_policy = TrafficPolicy::Weight(100);
        settle(&mut release, &mut world, 3);
        client(&mut release, Move::End);
        for p in settle(&mut release, &mut world, 5) {
            check_routes(&p, true)?;
        }
        prop_assert_eq!(release.status.phase, Phase::Ended);
        prop_assert!(world.get("cluster-a", ObjectKind::Deployment, "reviews-v1").is_none());
        let vs = world
            .objects
            .iter()
            .find(|((_, k, _), _)| *k == ObjectKind::VirtualService)
            .map(|(_, o)| o.clone())
            .expect("a VirtualService");
        let owners_routes: Vec<Value> = istio
            .iter()
            .find(|(k, _)| *k == ObjectKind::VirtualService)
            .and_then(|(_, o)| o["spec"]["http"].as_array().cloned())
            .unwrap_or_default();
        for route in vs["spec"]["http"].as_array().cloned().unwrap_or_default() {
            for d in route["route"].as_array().cloned().unwrap_or_default() {
                let host = d["destination"]["host"].as_str().unwrap_or_default();
                if host.starts_with("reviews") {
                    prop_assert_eq!(&d["destination"]["subset"], &json!("v2"));
                } else {
                    prop_assert!(owners_routes.contains(&route), "a route to another host changed: {}", route);
                }
            }
        }
    }
}
