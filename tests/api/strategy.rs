//! Releases that run themselves, in simulated clusters, over REST and
//! gRPC: steps carried out by the service (setWeight, pause with and
//! without a duration, analysis rounds), onSuccess and onFailure, the
//! actions (pause, resume, promote, abort, retry), and webhooks of every
//! type answered by a small server in the test. Durations are 1-2 s, and
//! assertions are on order and end states, never on elapsed times.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::driver::*;
use crate::helpers::*;

/// A webhook receiver: answers each call with the next status queued for
/// its path (then the last one again), and remembers every call.
#[derive(Clone, Default)]
pub struct Hooks {
    answers: Arc<Mutex<std::collections::BTreeMap<String, VecDeque<u16>>>>,
    delays: Arc<Mutex<std::collections::BTreeMap<String, Duration>>>,
    /// Calls answered, by path.
    pub answered: Arc<Mutex<Vec<String>>>,
    pub calls: Arc<Mutex<Vec<(String, Value)>>>,
    address: Arc<Mutex<Option<SocketAddr>>>,
}

impl Hooks {
    pub async fn start() -> Hooks {
        let hooks = Hooks::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *hooks.address.lock().unwrap() = Some(listener.local_addr().unwrap());
        let state = hooks.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let path = uri.path().to_owned();
                let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                state.calls.lock().unwrap().push((path.clone(), payload));
                let delay = state.delays.lock().unwrap().get(&path).copied();
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                state.answered.lock().unwrap().push(path.clone());
                let code = {
                    let mut answers = state.answers.lock().unwrap();
                    let queue = answers.entry(path).or_default();
                    match queue.len() {
                        0 => 200,
                        1 => queue[0],
                        _ => queue.pop_front().unwrap(),
                    }
                };
                http::StatusCode::from_u16(code).unwrap()
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        hooks
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address.lock().unwrap().unwrap())
    }

    pub fn prefix(&self) -> String {
        self.url("/")
    }

    /// The statuses `path` answers, in turn (the last one for good).
    pub fn answer(&self, path: &str, codes: &[u16]) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_owned(), codes.iter().copied().collect());
    }

    /// `path` answers only after `delay`.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.delays.lock().unwrap().insert(path.to_owned(), delay);
    }

    pub fn calls_to(&self, path: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A release body with `strategy`.
pub fn with_strategy(name: &str, service: &str, strategy: Value) -> Value {
    let mut body = release_body(name, service);
    body["spec"]["strategy"] = strategy;
    body
}

/// A service whose mesh lets webhooks call `hooks`.
pub async fn app_with_hooks(clusters: &Clusters, hooks: &Hooks) -> TestApp {
    app_resyncing(
        clusters,
        &format!(r#", webhook_url_prefixes = ["{}"]"#, hooks.prefix()),
        100,
    )
    .await
}

pub fn strategy_of(release: &Value) -> &Value {
    &release["status"]["strategy"]
}

#[tokio::test]
async fn steps_move_the_traffic_pause_and_end_by_themselves() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let body = with_strategy(
        "stepping",
        "reviews",
        json!({"steps": [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 100}]}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        created["spec"]["strategy"]["steps"][1]["pause"]["duration"],
        "1s"
    );
    until(&app, "stepping", "weight 20 applied", traffic_is(20)).await;
    until_object(
        &clusters.a,
        simcluster::resources::VIRTUAL_SERVICES,
        "reviews",
        "80/20",
        |vs| vs.is_some_and(|vs| routes(vs) == split(80, 20)),
    )
    .await;
    let ended = until(&app, "stepping", "Ended", phase_is("Ended")).await;
    assert_eq!(strategy_of(&ended)["currentStep"], 3, "{ended}");
    clusters.assert_ended_on_gray().await;
    let progressing = ended["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["reason"], "Completed", "{ended}");
}

#[tokio::test]
async fn a_bad_strategy_is_refused_field_by_field_and_nothing_is_stored() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    let app = app_with_hooks(&clusters, &hooks).await;
    let body = with_strategy(
        "bad-strategy",
        "reviews",
        json!({
            "steps": [
                {"setWeight": 120},
                {"pause": {"duration": "500ms"}},
                {"analysis": {"count": 0}},
                {"setWeight": 10, "pause": {}},
                {"pause": {"duration": "25h"}}
            ],
            "analysis": {
                "interval": "2h",
                "failureLimit": 101,
                "metrics": [{"name": "sr", "builtin": "successRate", "min": 99}],
                "webhooks": [
                    {"name": "gate", "type": "confirm-everything", "url": hooks.url("/gate")},
                    {"name": "gate", "type": "rollout", "url": "http://elsewhere.example/hook"},
                    {"name": "slow", "type": "rollout", "url": hooks.url("/slow"), "timeout": "2m"}
                ]
            },
            "onSuccess": "end",
            "onFailure": "shrug"
        }),
    );
    let (status, answer) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errorCode"], "ASM.01010001");
    let fields = detail_fields(&answer);
    for field in [
        "spec.strategy.steps[0].setWeight",
        "spec.strategy.steps[1].pause.duration",
        "spec.strategy.steps[2].analysis.count",
        "spec.strategy.steps[3]",
        "spec.strategy.steps[4].pause.duration",
        "spec.strategy.steps",
        "spec.strategy.onFailure",
        "spec.strategy.analysis.interval",
        "spec.strategy.analysis.failureLimit",
        "spec.strategy.analysis.metrics[0]",
        "spec.strategy.analysis.webhooks[0].type",
        "spec.strategy.analysis.webhooks[1].name",
        "spec.strategy.analysis.webhooks[1].url",
        "spec.strategy.analysis.webhooks[2].timeout",
    ] {
        assert!(
            fields.contains(&field.to_owned()),
            "no violation of {field}: {answer}"
        );
    }
    let (status, _) = json_of(app.get("bad-strategy").await).await;
    assert_eq!(status, 404, "nothing stored");

    // Blue-green switches only; a strategy that ends must reach 100.
    let mut body = with_strategy(
        "bad-blue-green",
        "reviews",
        json!({"steps": [{"setWeight": 50}]}),
    );
    body["spec"]["type"] = json!("blue-green");
    let (status, answer) = json_of(app.create(&body).await).await;
    assert_eq!(status, 400, "{answer}");
    let fields = detail_fields(&answer);
    assert!(
        fields.contains(&"spec.strategy.steps[0].setWeight".to_owned()),
        "{answer}"
    );
    assert!(
        fields.contains(&"spec.strategy.steps".to_owned()),
        "{answer}"
    );

    // Without webhook_url_prefixes, a mesh allows no webhooks.
    let plain = app_for(&clusters).await;
    let body = with_strategy(
        "no-hooks-here",
        "ratings",
        json!({"steps": [{"setWeight": 100}],
               "analysis": {"webhooks": [{"name": "gate", "type": "confirm-rollout", "url": hooks.url("/gate")}]}}),
    );
    let (status, answer) = json_of(plain.create(&body).await).await;
    assert_eq!(status, 400, "{answer}");
    let violation = answer["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["field"] == "spec.strategy.analysis.webhooks[0].url")
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        violation["description"]
            .as_str()
            .unwrap()
            .contains("allows no webhooks"),
        "{answer}"
    );
}

fn condition(release: &Value, kind: &str) -> Value {
    release["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_gate_that_says_no_holds_the_release_until_it_says_yes() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    hooks.answer("/gate", &[503, 503, 200]);
    let app = app_with_hooks(&clusters, &hooks).await;
    let body = with_strategy(
        "gated",
        "reviews",
        json!({"steps": [{"setWeight": 20}, {"setWeight": 100}],
               "analysis": {"interval": "1s", "webhooks": [
                   {"name": "gate", "type": "confirm-traffic-increase", "url": hooks.url("/gate"),
                    "metadata": {"ticket": "REL-42"}}]}}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    let held = until(&app, "gated", "held by the gate", |r| {
        strategy_of(r)["pauseReason"] == "HeldByWebhook: gate"
            && strategy_of(r)["checks"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["name"] == "gate" && c["verdict"] == "Fail")
            })
    })
    .await;
    assert_eq!(
        held["spec"]["trafficPolicy"],
        json!({"weight": 0}),
        "{held}"
    );
    assert_eq!(condition(&held, "Progressing")["reason"], "Held", "{held}");
    assert_eq!(
        clusters.reviews_routes().await,
        vec![("v1".to_owned(), 100)],
        "no traffic moves while the gate says no"
    );
    let ended = until(&app, "gated", "Ended", phase_is("Ended")).await;
    assert_eq!(strategy_of(&ended)["currentStep"], 2);
    let calls = hooks.calls_to("/gate");
    assert!(calls.len() >= 3, "{calls:?}");
    // Flagger's payload, with ours.
    let call = &calls[0];
    assert_eq!(call["name"], "gated");
    assert_eq!(call["namespace"], "default");
    assert_eq!(call["type"], "confirm-traffic-increase");
    assert_eq!(call["metadata"]["ticket"], "REL-42");
    assert_eq!(call["meshId"], MESH);
    assert_eq!(call["uid"], created["metadata"]["uid"]);
    assert!(call["checksum"].is_string(), "{call}");
    assert_eq!(call["step"], 0);
}

#[tokio::test]
async fn a_rollback_webhook_saying_yes_rolls_back_at_once_and_post_rollout_hears_of_it() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    hooks.answer("/rollback", &[404]);
    let app = app_with_hooks(&clusters, &hooks).await;
    let body = with_strategy(
        "watched-by-a-hook",
        "reviews",
        json!({"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
               "analysis": {"interval": "1s", "webhooks": [
                   {"name": "stop-it", "type": "rollback", "url": hooks.url("/rollback")},
                   {"name": "tell-me", "type": "post-rollout", "url": hooks.url("/post")},
                   {"name": "log", "type": "event", "url": hooks.url("/event")}]}}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    until(
        &app,
        "watched-by-a-hook",
        "weight 50 applied",
        traffic_is(50),
    )
    .await;
    until(&app, "watched-by-a-hook", "paused for a resume", |r| {
        strategy_of(r)["pauseReason"] == "WaitingForResume"
    })
    .await;
    hooks.answer("/rollback", &[200]);
    let failed = until(&app, "watched-by-a-hook", "Failed", phase_is("Failed")).await;
    let why = condition(&failed, "Failed");
    assert_eq!(why["reason"], "RollbackWebhook", "{failed}");
    assert!(
        why["message"].as_str().unwrap().contains("stop-it"),
        "{why}"
    );
    assert_eq!(condition(&failed, "Progressing")["reason"], "RolledBack");
    assert_eq!(failed["spec"]["trafficPolicy"], json!({"weight": 0}));
    until(
        &app,
        "watched-by-a-hook",
        "traffic back on the original",
        traffic_is(0),
    )
    .await;
    assert_eq!(
        clusters.reviews_routes().await,
        vec![("v1".to_owned(), 100)]
    );
    assert!(
        clusters
            .b
            .get(
                simcluster::resources::DEPLOYMENTS,
                "default",
                "reviews-v1-v2"
            )
            .await
            .is_some(),
        "the gray Deployment stays for inspection"
    );
    for _ in 0..100 {
        if !hooks.calls_to("/post").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = hooks.calls_to("/post");
    assert_eq!(post.len(), 1, "{post:?}");
    assert!(
        post[0]["metadata"]["eventMessage"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{post:?}"
    );
    assert!(!hooks.calls_to("/event").is_empty(), "events were told");
}

#[tokio::test]
async fn a_rollout_check_failing_failure_limit_rounds_in_a_row_rolls_back_one_failure_does_not() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    // reviews: one failure between passes; ratings: two in a row.
    hooks.answer("/reviews-check", &[200, 500, 200]);
    hooks.answer("/ratings-check", &[200, 500, 500]);
    let app = app_with_hooks(&clusters, &hooks).await;
    for service in ["reviews", "ratings"] {
        let body = with_strategy(
            &format!("{service}-judged"),
            service,
            json!({"steps": [{"setWeight": 10}, {"analysis": {"count": 3}}, {"setWeight": 100}],
                   "analysis": {"interval": "1s", "failureLimit": 2, "webhooks": [
                       {"name": "smoke", "type": "rollout", "url": hooks.url(&format!("/{service}-check"))}]}}),
        );
        let (status, created) = json_of(app.create(&body).await).await;
        assert_eq!(status, 200, "{created}");
    }
    let failed = until(&app, "ratings-judged", "Failed", phase_is("Failed")).await;
    let why = condition(&failed, "Failed");
    assert_eq!(why["reason"], "AnalysisFailed", "{failed}");
    assert!(
        why["message"].as_str().unwrap().contains("smoke"),
        "names the check: {why}"
    );
    assert_eq!(strategy_of(&failed)["consecutiveFailures"], 2, "{failed}");

    let ended = until(&app, "reviews-judged", "Ended", phase_is("Ended")).await;
    // proto3 JSON leaves out a zero.
    assert_eq!(
        strategy_of(&ended)["consecutiveFailures"]
            .as_i64()
            .unwrap_or(0),
        0
    );
    // Every round is kept, oldest first, over REST and gRPC.
    let (status, checks) = app
        .list("/v2/meshes/demo-mesh/namespaces/default/releases/reviews-judged/checks")
        .await;
    assert_eq!(status, 200, "{checks}");
    assert_eq!(checks["kind"], "ReleaseCheckList");
    let items = checks["items"].as_array().unwrap();
    let verdicts: Vec<&str> = items
        .iter()
        .filter(|c| c["name"] == "smoke")
        .map(|c| c["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts[..3], ["Pass", "Fail", "Pass"], "{checks}");
    let rounds: Vec<i64> = items.iter().map(|c| c["round"].as_i64().unwrap()).collect();
    assert!(
        rounds.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {rounds:?}"
    );
    let mut client = app.grpc().await;
    let over_grpc = client
        .list_release_checks(authed(meshrelease::pb::asm::v2::ListReleaseChecksRequest {
            mesh_id: MESH.into(),
            namespace: "default".into(),
            name: "reviews-judged".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(over_grpc.items.len(), items.len());
}

/// POST `.../releases/{name}:{action}` with `body`.
pub async fn act(app: &TestApp, name: &str, action: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .post(format!("{}:{action}", app.release_url(name)))
        .header("X-Auth-Token", TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.unwrap()).await
}

fn action_request(
    name: &str,
    full: bool,
) -> tonic::Request<meshrelease::pb::asm::v2::ReleaseActionRequest> {
    authed(meshrelease::pb::asm::v2::ReleaseActionRequest {
        mesh_id: MESH.into(),
        namespace: "default".into(),
        name: name.into(),
        full,
    })
}

#[tokio::test]
async fn over_rest_pause_resume_promote_and_promote_in_full_each_once() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let body = with_strategy(
        "acted-on",
        "reviews",
        json!({"steps": [{"setWeight": 10}, {"pause": {"duration": "1h"}}, {"setWeight": 50},
                         {"analysis": {"count": 1}}, {"pause": {"duration": "1h"}}, {"setWeight": 100}],
               "analysis": {"interval": "1s"}}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    until(&app, "acted-on", "in the long pause", |r| {
        strategy_of(r)["currentStep"] == 1
    })
    .await;
    // The traffic policy belongs to the strategy while it runs.
    let (status, refused) = json_of(
        app.patch(
            "acted-on",
            &json!({"spec": {"trafficPolicy": {"weight": 80}}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["errorMsg"]
            .as_str()
            .unwrap()
            .contains("spec.strategy"),
        "{refused}"
    );

    let (status, paused) = act(&app, "acted-on", "pause", Some(json!({}))).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(strategy_of(&paused)["paused"], true);
    assert_eq!(strategy_of(&paused)["pauseReason"], "PausedByUser");
    let (status, again) = act(&app, "acted-on", "pause", None).await;
    assert_eq!(status, 200, "{again}");
    // Rounds go on while paused (each one a write), so the resource
    // version may move: what a pause sets must not.
    let pause_state = |r: &Value| {
        let s = strategy_of(r);
        let progressing = r["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
            .map(|c| {
                (
                    c["status"].clone(),
                    c["reason"].clone(),
                    c["lastTransitionTime"].clone(),
                )
            });
        (
            r["metadata"]["generation"].clone(),
            s["currentStep"].clone(),
            s["stepStartTime"].clone(),
            s["paused"].clone(),
            s["pauseReason"].clone(),
            progressing,
        )
    };
    assert_eq!(
        pause_state(&again),
        pause_state(&paused),
        "a repeat changes nothing"
    );
    let (status, resumed) = act(&app, "acted-on", "resume", Some(json!({}))).await;
    assert_eq!(status, 200, "{resumed}");
    assert!(strategy_of(&resumed)["paused"].is_null() || strategy_of(&resumed)["paused"] == false);
    assert_eq!(
        strategy_of(&resumed)["currentStep"],
        1,
        "a timed pause is not a resume's to end"
    );

    // Promote: past the hour's pause now.
    let (status, promoted) = act(&app, "acted-on", "promote", Some(json!({}))).await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(strategy_of(&promoted)["currentStep"], 2, "{promoted}");
    until(&app, "acted-on", "weight 50 applied", traffic_is(50)).await;
    until(&app, "acted-on", "in the second long pause", |r| {
        strategy_of(r)["currentStep"] == 4
    })
    .await;
    // In full: weight 100 and the end.
    let (status, full) = act(&app, "acted-on", "promote", Some(json!({"full": true}))).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["spec"]["trafficPolicy"], json!({"weight": 100}));
    until(&app, "acted-on", "Ended", phase_is("Ended")).await;
    clusters.assert_ended_on_gray().await;
}

#[tokio::test]
async fn over_grpc_abort_rolls_back_and_retry_starts_again_each_once() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    let body = with_strategy(
        "aborted",
        "reviews",
        json!({"steps": [{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    until(&app, "aborted", "waiting for a resume", |r| {
        strategy_of(r)["pauseReason"] == "WaitingForResume"
    })
    .await;
    until(&app, "aborted", "weight 30 applied", traffic_is(30)).await;
    let mut client = app.grpc().await;
    let aborted = client
        .abort_release(action_request("aborted", false))
        .await
        .unwrap()
        .into_inner();
    let status = aborted.status.unwrap();
    assert_eq!(status.phase, "Failed");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Failed")
        .unwrap();
    assert_eq!(failed.reason, "Aborted");
    let settled = until(
        &app,
        "aborted",
        "traffic back on the original",
        traffic_is(0),
    )
    .await;
    // Settled (nothing more to apply), a repeat writes nothing.
    let again = client
        .abort_release(action_request("aborted", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        Value::String(again.metadata.unwrap().resource_version),
        settled["metadata"]["resourceVersion"],
        "a repeat changes nothing"
    );

    // A pause is not for a release that failed: 409 with the reason.
    let refused = client
        .pause_release(action_request("aborted", false))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("Failed"), "{refused:?}");

    let retried = client
        .retry_release(action_request("aborted", false))
        .await
        .unwrap()
        .into_inner();
    let status = retried.status.clone().unwrap();
    assert_eq!(status.phase, "Running");
    assert_eq!(status.strategy.unwrap().current_step, 0);
    until(&app, "aborted", "at weight 30 again", |r| {
        r["status"]["phase"] == "Running" && r["status"]["traffic"] == json!({"weight": 30})
    })
    .await;
    let repeat = client
        .retry_release(action_request("aborted", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        repeat.status.unwrap().phase,
        "Running",
        "a repeat changes nothing"
    );
}

#[tokio::test]
async fn actions_are_refused_clearly_where_they_do_not_apply() {
    let clusters = clusters().await;
    let app = app_for(&clusters).await;
    app.create(&release_body("no-strategy", "reviews")).await;
    until(&app, "no-strategy", "Running", phase_is("Running")).await;
    for action in ["pause", "resume", "promote", "abort", "retry"] {
        let (status, refused) = act(&app, "no-strategy", action, Some(json!({}))).await;
        assert_eq!(status, 409, "{action}: {refused}");
        assert_eq!(refused["errorCode"], "ASM.01010003");
        assert!(
            refused["errorMsg"]
                .as_str()
                .unwrap()
                .contains("spec.strategy"),
            "{action}: {refused}"
        );
    }
    let (status, refused) = act(&app, "no-such-release", "pause", None).await;
    assert_eq!(status, 404, "{refused}");
    let (status, refused) = act(&app, "no-strategy", "pause", Some(json!({"full": true}))).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        detail_fields(&refused),
        vec!["full".to_owned()],
        "{refused}"
    );
    let (status, refused) = act(&app, "no-strategy", "pause", Some(json!({"fast": true}))).await;
    assert_eq!(status, 400, "{refused}");
}

/// Waits (bounded) until `path` was called at least `n` times.
async fn called(hooks: &Hooks, path: &str, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let calls = hooks.calls_to(path);
        if calls.len() >= n {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{path} was called {} times, not {n}",
        hooks.calls_to(path).len()
    );
}

#[tokio::test]
async fn every_webhook_type_means_what_flagger_says() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    hooks.answer("/confirm", &[503, 200]);
    hooks.answer("/promote", &[503, 503, 200]);
    let app = app_with_hooks(&clusters, &hooks).await;
    let hook = |name: &str, kind: &str| json!({"name": name, "type": kind, "url": hooks.url(&format!("/{name}"))});
    let body = with_strategy(
        "all-hooks",
        "reviews",
        json!({"steps": [{"setWeight": 50}, {"setWeight": 100}],
               "analysis": {"interval": "1s", "webhooks": [
                   hook("confirm", "confirm-rollout"), hook("pre", "pre-rollout"),
                   hook("promote", "confirm-promotion"), hook("event", "event"),
                   hook("post", "post-rollout")]}}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    // confirm-rollout: asked every interval, a no holds before the first step.
    let held = until(&app, "all-hooks", "held before the first step", |r| {
        strategy_of(r)["pauseReason"] == "HeldByWebhook: confirm"
    })
    .await;
    assert_eq!(held["spec"]["trafficPolicy"], json!({"weight": 0}));
    assert!(
        hooks.calls_to("/pre").is_empty(),
        "pre-rollout waits for the confirmation"
    );
    // confirm-promotion: the last step waits for it.
    until(&app, "all-hooks", "the last step held", |r| {
        strategy_of(r)["pauseReason"] == "HeldByWebhook: promote"
            && r["status"]["traffic"] == json!({"weight": 50})
    })
    .await;
    until(&app, "all-hooks", "Ended", phase_is("Ended")).await;
    assert_eq!(
        hooks.calls_to("/pre").len(),
        1,
        "pre-rollout is called once"
    );
    assert!(hooks.calls_to("/confirm").len() >= 2);
    let post = called(&hooks, "/post", 1).await;
    assert_eq!(post[0]["type"], "post-rollout");
    let events = called(&hooks, "/event", 3).await;
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "event" && e["metadata"]["eventMessage"].is_string()),
        "{events:?}"
    );
    // What was called is in the checks, with the round it followed.
    let (_, checks) = app
        .list("/v2/meshes/demo-mesh/namespaces/default/releases/all-hooks/checks")
        .await;
    let kinds: std::collections::BTreeSet<&str> = checks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for kind in ["confirm-rollout", "pre-rollout", "confirm-promotion"] {
        assert!(kinds.contains(kind), "{kind} not among {kinds:?}");
    }

    // pre-rollout: a no is a failed round (failureLimit 1: rolled back).
    hooks.answer("/pre-no", &[500]);
    let body = with_strategy(
        "pre-refused",
        "ratings",
        json!({"steps": [{"setWeight": 100}],
               "analysis": {"interval": "1s", "webhooks": [
                   {"name": "pre-no", "type": "pre-rollout", "url": hooks.url("/pre-no")}]}}),
    );
    let (status, created) = json_of(app.create(&body).await).await;
    assert_eq!(status, 200, "{created}");
    let failed = until(&app, "pre-refused", "Failed", phase_is("Failed")).await;
    let why = condition(&failed, "Failed");
    assert_eq!(why["reason"], "AnalysisFailed", "{failed}");
    assert!(why["message"].as_str().unwrap().contains("pre-no"), "{why}");
}

#[tokio::test]
async fn a_slow_webhook_holds_only_its_own_release() {
    let clusters = clusters().await;
    let hooks = Hooks::start().await;
    hooks.delay("/slow", Duration::from_secs(30));
    let app = app_with_hooks(&clusters, &hooks).await;
    let slow = with_strategy(
        "slow-checked",
        "reviews",
        json!({"steps": [{"setWeight": 10}, {"analysis": {"count": 1}}, {"setWeight": 100}],
               "analysis": {"interval": "1s", "webhooks": [
                   {"name": "slow", "type": "rollout", "url": hooks.url("/slow"), "timeout": "30s"}]}}),
    );
    let (status, created) = json_of(app.create(&slow).await).await;
    assert_eq!(status, 200, "{created}");
    let quick = with_strategy(
        "quick-one",
        "ratings",
        json!({"steps": [{"setWeight": 20}, {"setWeight": 100}], "analysis": {"interval": "1s"}}),
    );
    let (status, created) = json_of(app.create(&quick).await).await;
    assert_eq!(status, 200, "{created}");
    called(&hooks, "/slow", 1).await;
    // The other release runs to its end while the slow call is unanswered.
    until(&app, "quick-one", "Ended", phase_is("Ended")).await;
    assert!(
        hooks.answered.lock().unwrap().iter().all(|p| p != "/slow"),
        "the slow webhook answered before the other release ended"
    );
    let held = until(&app, "slow-checked", "Running", phase_is("Running")).await;
    assert_ne!(held["status"]["phase"], "Ended");
}
