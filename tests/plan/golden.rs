//! The planner's output for a table of situations, compared with files in
//! `tests/plan/golden/` written as Kubernetes YAML (one document per object,
//! with the cluster and the action in a comment above it). After a change
//! to the planner: `UPDATE_GOLDEN=1 cargo test --test plan`, then read the
//! diff of those files as a reviewer would.

use meshrelease::domain::Phase;
use meshrelease::domain::change::ObjectKind;
use meshrelease::domain::conditions::{ConditionType, Reason};
use meshrelease::domain::phase::Move;
use meshrelease::domain::plan::{Plan, plan};
use meshrelease::domain::traffic::{MatchRule, MatchValue, StringMatch};
use meshrelease::domain::{Release, ReleaseType, TrafficPolicy};
use serde_json::{Value, json};

use crate::world::*;

fn render(rounds: &[(&str, &Plan)]) -> String {
    let mut out = String::new();
    for (title, plan) in rounds {
        out.push_str(&format!("# --- {title}\n"));
        out.push_str(&format!(
            "# step: {}\n",
            plan.step.map_or("none".to_owned(), |s| format!("{s:?}"))
        ));
        if let Some(traffic) = &plan.traffic {
            out.push_str(&format!("# traffic: {}\n", describe(traffic)));
        }
        for c in &plan.conditions {
            out.push_str(&format!(
                "# condition {}={} {}: {}\n",
                c.kind.as_str(),
                c.status,
                c.reason.as_str(),
                c.message
            ));
        }
        for change in &plan.changes {
            out.push_str(&format!(
                "---\n# {} {} in {}\n",
                change.change.as_str(),
                change.kind.as_str(),
                change.cluster_id
            ));
            out.push_str(&serde_yaml_ng::to_string(&change.object).unwrap());
        }
    }
    out
}

fn describe(policy: &TrafficPolicy) -> String {
    match policy {
        TrafficPolicy::Weight(w) => format!("weight {w}"),
        TrafficPolicy::Match(rules) => format!("{} match rule(s)", rules.len()),
    }
}

fn check(file: &str, actual: &str) {
    let path = format!("{}/tests/plan/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; run with UPDATE_GOLDEN=1 to write it"));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{file} differs from the plan at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             if the change is intended, run UPDATE_GOLDEN=1 cargo test --test plan and review the diff",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// The owners' VirtualService: a route for /api with its own timeout, a
/// route to another host, and the default route, with a field this
/// service does not model (`retries`).
fn owners_virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews-routes", "namespace": NS, "resourceVersion": "4711",
                     "labels": {"team": "shop"}},
        "spec": {
            "hosts": ["reviews"],
            "gateways": ["mesh"],
            "http": [
                {"name": "legacy", "match": [{"uri": {"prefix": "/legacy"}}],
                 "route": [{"destination": {"host": "ratings", "port": {"number": 9080}}}]},
                {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "timeout": "3s",
                 "route": [{"destination": {"host": "reviews.shop.svc.cluster.local", "port": {"number": 9080}}}]},
                {"name": "default", "retries": {"attempts": 3, "perTryTimeout": "2s"},
                 "route": [{"destination": {"host": "reviews"}}]}
            ]
        }
    })
}

/// The owners' DestinationRule: a traffic policy that must survive.
fn owners_destination_rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": NS, "resourceVersion": "815"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"connectionPool": {"http": {"http1MaxPendingRequests": 100}},
                              "tls": {"mode": "ISTIO_MUTUAL"}}
        }
    })
}

fn owned_world() -> World {
    World::new(vec![
        (ObjectKind::VirtualService, owners_virtual_service()),
        (ObjectKind::DestinationRule, owners_destination_rule()),
    ])
}

/// Pending -> Deploying -> Running.
fn to_running(release: &mut Release, world: &mut World) {
    settle(release, world, 5);
    assert_eq!(release.status.phase, Phase::Running);
}

/// Running with all traffic on the gray version, then asked to end.
fn to_ending(release: &mut Release, world: &mut World) {
    to_running(release, world);
    release.traffic_policy = TrafficPolicy::Weight(100);
    round(release, world);
    client(release, Move::End);
}

/// One round: plan, carry out, record.
fn round(release: &mut Release, world: &mut World) -> Plan {
    let observed = world.observe(release);
    let p = plan(release, &observed, &context());
    world.carry_out(&p);
    record(release, &p, &observed, world.now);
    p
}

#[test]
fn a_fresh_canary_with_no_routing_of_its_owners() {
    let mut world = World::new(vec![]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    let pending = round(&mut release, &mut world);
    let deploying = round(&mut release, &mut world);
    let running = round(&mut release, &mut world);
    check(
        "01-fresh-canary.yaml",
        &render(&[
            ("Pending: checks, saves the routing", &pending),
            (
                "Deploying: gray Deployment, subsets, all traffic to v1",
                &deploying,
            ),
            ("Deploying, gray ready: Running", &running),
        ]),
    );
}

#[test]
fn weight_30_splits_only_the_routes_of_the_service() {
    let mut world = owned_world();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    release.traffic_policy = TrafficPolicy::Weight(30);
    let p = round(&mut release, &mut world);
    check("02-weight-30.yaml", &render(&[("Running, weight 30", &p)]));
}

#[test]
fn header_and_cookie_rules_go_in_front_of_each_route() {
    let mut world = owned_world();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    release.traffic_policy = TrafficPolicy::Match(vec![
        MatchRule {
            headers: vec![StringMatch {
                name: "x-user".into(),
                value: MatchValue::Exact("alice".into()),
            }],
            cookie: Some("^(.*?;)?(group=beta)(;.*)?$".into()),
            ..MatchRule::default()
        },
        MatchRule {
            os: vec![meshrelease::domain::traffic::Os::Ios],
            browsers: vec![meshrelease::domain::traffic::Browser::Safari],
            query_params: vec![StringMatch {
                name: "beta".into(),
                value: MatchValue::Regex("^(1|true)$".into()),
            }],
            ..MatchRule::default()
        },
    ]);
    let p = round(&mut release, &mut world);
    check(
        "03-header-cookie-match.yaml",
        &render(&[("Running, match rules", &p)]),
    );
}

#[test]
fn a_blue_green_switch() {
    let mut world = owned_world();
    let mut release = release(ReleaseType::BlueGreen, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    release.traffic_policy = TrafficPolicy::Weight(100);
    let p = round(&mut release, &mut world);
    check(
        "04-blue-green-switch.yaml",
        &render(&[("Running, switched to v2", &p)]),
    );
}

#[test]
fn an_end_moves_traffic_before_it_deletes_the_original() {
    let mut world = owned_world();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_ending(&mut release, &mut world);
    let first = round(&mut release, &mut world);
    let second = round(&mut release, &mut world);
    let third = round(&mut release, &mut world);
    assert_eq!(release.status.phase, Phase::Ended);
    assert!(
        world
            .get("cluster-a", ObjectKind::Deployment, "reviews-v1")
            .is_none()
    );
    check(
        "05-end.yaml",
        &render(&[
            ("Ending: the original's subset out of the routes", &first),
            ("Ending: routing holds, the original goes", &second),
            ("Ended: nothing more", &third),
        ]),
    );
}

#[test]
fn a_cancel_restores_the_owners_routing_then_deletes_the_gray_version() {
    let mut world = owned_world();
    let before = world.clone();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    release.traffic_policy = TrafficPolicy::Weight(40);
    round(&mut release, &mut world);
    release.traffic_policy = TrafficPolicy::Weight(0);
    round(&mut release, &mut world);
    client(&mut release, Move::Cancel);
    let first = round(&mut release, &mut world);
    let second = round(&mut release, &mut world);
    assert_eq!(release.status.phase, Phase::Canceled);
    assert_eq!(
        world.objects, before.objects,
        "everything as the owners left it"
    );
    check(
        "06-cancel.yaml",
        &render(&[
            ("Canceling: the routing restored", &first),
            ("Canceling: the gray Deployment goes", &second),
        ]),
    );
}

#[test]
fn a_gray_version_never_ready_fails_with_traffic_on_the_original() {
    let mut world = owned_world();
    world.gray_becomes_ready = false;
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(50));
    round(&mut release, &mut world);
    let waiting = round(&mut release, &mut world);
    world.now += chrono::TimeDelta::seconds(301);
    let failing = round(&mut release, &mut world);
    assert_eq!(release.status.phase, Phase::Failed);
    let failed = round(&mut release, &mut world);
    assert!(failed.changes.is_empty(), "{failed:?}");
    check(
        "07-failed.yaml",
        &render(&[
            ("Deploying: applied, not ready, weight held at 0", &waiting),
            ("Deploying past progressDeadlineSeconds: Failed", &failing),
            ("Failed: routing stays on the original", &failed),
        ]),
    );
}

#[test]
fn a_release_whose_original_is_missing_fails_and_touches_nothing() {
    let mut world = owned_world();
    world
        .objects
        .retain(|(_, kind, name), _| !(*kind == ObjectKind::Deployment && name == "reviews-v1"));
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    let p = round(&mut release, &mut world);
    assert_eq!(p.step, Some(Move::Fail), "{p:?}");
    assert!(p.changes.is_empty(), "{p:?}");
    assert!(
        p.conditions.iter().any(|c| c.kind == ConditionType::Failed
            && c.status
            && c.reason == Reason::OriginalNotFound),
        "{p:?}"
    );
    assert_eq!(release.status.phase, Phase::Failed);
}

#[test]
fn the_progress_deadline_is_reached_only_once_it_has_passed() {
    let mut world = owned_world();
    world.gray_becomes_ready = false;
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(50));
    round(&mut release, &mut world);
    assert_eq!(release.status.phase, Phase::Deploying);
    let since = release.status.phase_time.expect("Deploying since");
    // Exactly at the deadline (the template's progressDeadlineSeconds,
    // 300): still waiting.
    world.now = since + chrono::TimeDelta::seconds(300);
    round(&mut release, &mut world);
    assert_eq!(release.status.phase, Phase::Deploying);
    world.now = since + chrono::TimeDelta::seconds(301);
    round(&mut release, &mut world);
    assert_eq!(release.status.phase, Phase::Failed);
}

#[test]
fn a_gray_deployment_that_is_not_what_was_applied_is_applied_again() {
    let mut world = owned_world();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    // Someone changed the gray Deployment (its digest no longer matches).
    let key = world
        .objects
        .keys()
        .find(|(_, kind, name)| *kind == ObjectKind::Deployment && name == "reviews-v1-v2")
        .cloned()
        .expect("the gray Deployment");
    world.objects.get_mut(&key).unwrap()["metadata"]["annotations"]["meshrelease.io/template-hash"] =
        json!("changed-by-someone");
    let p = round(&mut release, &mut world);
    assert!(
        p.changes
            .iter()
            .any(|c| c.kind == ObjectKind::Deployment && name(&c.object) == "reviews-v1-v2"),
        "the gray Deployment must be applied again: {p:?}"
    );
    // Once it is what was applied, nothing more.
    let p = round(&mut release, &mut world);
    assert!(
        !p.changes.iter().any(|c| c.kind == ObjectKind::Deployment),
        "{p:?}"
    );
}

#[test]
fn with_scale_to_zero_an_end_keeps_the_original_at_zero_replicas() {
    use meshrelease::domain::change::Change;
    use meshrelease::domain::mesh::OriginalOnEnd;
    use meshrelease::domain::plan::Placement;
    let mut world = owned_world();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_ending(&mut release, &mut world);
    let ctx = Placement {
        original_on_end: OriginalOnEnd::ScaleToZero,
        ..context()
    };
    let mut scales = 0;
    for _ in 0..5 {
        let observed = world.observe(&release);
        let p = plan(&release, &observed, &ctx);
        scales += p
            .changes
            .iter()
            .filter(|c| c.change == Change::ScaleToZero)
            .count();
        world.carry_out(&p);
        record(&mut release, &p, &observed, world.now);
    }
    assert_eq!(release.status.phase, Phase::Ended);
    assert_eq!(scales, 1, "scaled once, then seen at zero");
    let original = world
        .get("cluster-a", ObjectKind::Deployment, "reviews-v1")
        .expect("the original is kept");
    assert_eq!(original["spec"]["replicas"], json!(0));
}

#[test]
fn a_deployment_is_ready_only_when_every_replica_is_updated_and_available() {
    use meshrelease::domain::plan::deployment_ready;
    let with_status = |status: Value| {
        object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reviews-v1-v2", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": status
        }))
    };
    let ready = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
    assert!(deployment_ready(&with_status(ready.clone())));
    for (field, value, why) in [
        (
            "observedGeneration",
            1,
            "the controller has not seen the latest spec",
        ),
        ("updatedReplicas", 2, "a replica still runs the old spec"),
        ("availableReplicas", 2, "a replica is not available"),
        ("replicas", 4, "an old replica is still there"),
    ] {
        let mut status = ready.clone();
        status[field] = json!(value);
        assert!(!deployment_ready(&with_status(status)), "{why}");
    }
}

#[test]
fn an_owners_subset_of_the_gray_versions_name_with_other_labels_fails_the_release() {
    let mut rule = owners_destination_rule();
    rule["spec"]["subsets"] = json!([{"name": "v2", "labels": {"version": "v3"}}]);
    let mut world = World::new(vec![
        (ObjectKind::VirtualService, owners_virtual_service()),
        (ObjectKind::DestinationRule, rule),
    ]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    let plans = settle(&mut release, &mut world, 5);
    assert_eq!(release.status.phase, Phase::Failed);
    let reasons = |p: &Plan| -> Vec<String> {
        p.conditions
            .iter()
            .map(|c| c.reason.as_str().to_owned())
            .collect()
    };
    assert!(
        plans.iter().any(
            |p| p.step == Some(Move::Fail) && reasons(p).contains(&"SubsetConflict".to_owned())
        ),
        "{plans:?}"
    );
    // Failed, it says why its routing is not applied, and asks for no
    // further move (settle would panic at a refused one).
    let after = round(&mut release, &mut world);
    assert_eq!(after.step, None);
    assert!(
        reasons(&after).contains(&"SubsetConflict".to_owned()),
        "{after:?}"
    );
}

#[test]
fn an_end_keeps_the_owners_own_subset_of_the_original() {
    let mut rule = owners_destination_rule();
    rule["spec"]["subsets"] = json!([{"name": "v1", "labels": {"version": "v1"}}]);
    let mut world = World::new(vec![
        (ObjectKind::VirtualService, owners_virtual_service()),
        (ObjectKind::DestinationRule, rule),
    ]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_ending(&mut release, &mut world);
    settle(&mut release, &mut world, 5);
    assert_eq!(release.status.phase, Phase::Ended);
    let rule = world
        .get("cluster-a", ObjectKind::DestinationRule, "reviews")
        .expect("the DestinationRule");
    let names: Vec<&str> = rule["spec"]["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"v1"), "the owners' subset stays: {names:?}");
}

#[test]
fn a_rule_on_a_route_with_an_empty_match_list_still_routes_only_its_requests() {
    // `match: []` is a route that matches every request, as one without
    // `match`: the gray route must carry the rule's conditions, never
    // an empty match list that would send every request to the gray version.
    let mut vs = owners_virtual_service();
    vs["spec"]["http"][2]["match"] = json!([]);
    let mut world = World::new(vec![
        (ObjectKind::VirtualService, vs),
        (ObjectKind::DestinationRule, owners_destination_rule()),
    ]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    release.traffic_policy = TrafficPolicy::Match(vec![MatchRule {
        headers: vec![StringMatch {
            name: "x-user".into(),
            value: MatchValue::Exact("alice".into()),
        }],
        ..MatchRule::default()
    }]);
    round(&mut release, &mut world);
    let vs = world
        .get("cluster-a", ObjectKind::VirtualService, "reviews-routes")
        .expect("the VirtualService");
    let gray = vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "default-reviews-canary-gray")
        .unwrap_or_else(|| panic!("no gray route: {vs:?}"));
    assert_eq!(
        gray["match"],
        json!([{"headers": {"x-user": {"exact": "alice"}}}]),
        "{gray}"
    );
}

#[test]
fn a_cancel_leaves_a_virtual_service_another_team_put_in_place_of_its_own() {
    // No routing of the owners at the start: the release made its own
    // VirtualService. Another team replaced it (same name, not marked as
    // this release's) before the cancel.
    let mut world = World::new(vec![]);
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    to_running(&mut release, &mut world);
    let theirs = json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": NS, "labels": {"team": "other"}},
        "spec": {"hosts": ["reviews"],
                 "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    });
    world.put("cluster-a", ObjectKind::VirtualService, theirs.clone());
    client(&mut release, Move::Cancel);
    settle(&mut release, &mut world, 5);
    assert_eq!(release.status.phase, Phase::Canceled);
    assert_eq!(
        world.get("cluster-a", ObjectKind::VirtualService, "reviews"),
        Some(&object(theirs)),
        "their VirtualService stays as they wrote it"
    );
    // The DestinationRule it made itself is gone.
    assert!(
        world
            .get("cluster-a", ObjectKind::DestinationRule, "reviews")
            .is_none()
    );
}

#[test]
fn a_dry_runs_plan_is_the_gray_deployment_the_first_step_applies() {
    let mut world = owned_world();
    let mut release = release(ReleaseType::Canary, TrafficPolicy::Weight(0));
    let preview = meshrelease::domain::plan::preview(&release);
    assert_eq!(preview.len(), 1, "{preview:?}");
    round(&mut release, &mut world);
    let deploying = round(&mut release, &mut world);
    let applied: Vec<_> = deploying
        .changes
        .iter()
        .filter(|c| c.kind == ObjectKind::Deployment)
        .collect();
    assert_eq!(applied, vec![&preview[0]]);
}
