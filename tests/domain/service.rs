//! Create, get, list, update, patch and delete as a client sees them.

use meshrelease::domain::Phase;
use meshrelease::domain::TrafficPolicy;
use meshrelease::domain::authz::Action;
use meshrelease::domain::error::DomainError;
use meshrelease::domain::phase::Move;
use meshrelease::domain::service::{
    DEFAULT_PAGE, ListReleases, MAX_PAGE, ReleaseManager, UpdateRelease,
};
use meshrelease::domain::traffic::TrafficPolicyDraft;

use crate::support::*;

#[tokio::test]
async fn a_created_release_is_pending_stored_and_read_back_as_answered() {
    let manager = manager();
    let created = create(&manager, "reviews-canary", "reviews").await;
    assert_eq!(created.status.phase, Phase::Pending);
    assert_eq!(created.generation, 1);
    assert!(created.resource_version > 0);
    assert!(
        created.status.plan == Default::default(),
        "only a dry run shows a plan"
    );
    let read = manager
        .get(&admin(), target("reviews-canary"))
        .await
        .unwrap();
    assert_eq!(read, created);
}

#[tokio::test]
async fn a_dry_run_stores_nothing_and_shows_the_gray_deployment_it_would_apply() {
    let manager = manager();
    let mut request = create_request(draft("reviews-canary", "reviews"));
    request.dry_run = true;
    let answer = manager.create(&admin(), request).await.unwrap();
    let plan = &answer.status.plan;
    assert_eq!(plan.changes.len(), 1, "{plan:?}");
    assert_eq!(plan.changes[0].change.cluster_id, "cluster-b");
    // No clusters here: the routing is not planned, and the answer says so.
    assert_eq!(plan.changes[0].dry_run, None);
    assert!(
        plan.message.starts_with("routing not planned: "),
        "{plan:?}"
    );
    assert!(matches!(
        manager.get(&admin(), target("reviews-canary")).await,
        Err(DomainError::NotFound(_))
    ));
    // A dry run checks what the store would refuse.
    create(&manager, "reviews-canary", "reviews").await;
    let mut again = create_request(draft("reviews-canary", "other"));
    again.dry_run = true;
    assert!(matches!(
        manager.create(&admin(), again).await,
        Err(DomainError::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn permission_is_checked_before_the_mesh_is_looked_up() {
    let manager = manager();
    let reader = allowed("reader", Some(vec![Action::GetRelease]));
    let mut request = create_request(draft("reviews-canary", "reviews"));
    request.mesh_id = "no-such-mesh".into();
    assert!(matches!(
        manager.create(&reader, request.clone()).await,
        Err(DomainError::PermissionDenied { .. })
    ));
    assert!(matches!(
        manager.create(&admin(), request).await,
        Err(DomainError::NotFound(_))
    ));
    assert!(matches!(
        manager
            .create(&reader, create_request(draft("reviews-canary", "reviews")))
            .await,
        Err(DomainError::PermissionDenied { .. })
    ));
}

#[tokio::test]
async fn a_taken_name_and_a_busy_service_are_refused() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    let taken = manager
        .create(&admin(), create_request(draft("reviews-canary", "ratings")))
        .await;
    let Err(DomainError::AlreadyExists(message)) = taken else {
        panic!("{taken:?}")
    };
    assert!(message.contains("already exists"), "{message}");
    let busy = manager
        .create(&admin(), create_request(draft("reviews-second", "reviews")))
        .await;
    let Err(DomainError::AlreadyExists(message)) = busy else {
        panic!("{busy:?}")
    };
    assert!(
        message.contains("active release") && message.contains("reviews-canary"),
        "{message}"
    );
}

#[tokio::test]
async fn a_client_token_replays_the_same_request_and_refuses_another() {
    let manager = manager();
    let with_token = |name: &str, token: &str| {
        let mut request = create_request(draft(name, "reviews"));
        request.client_token = Some(token.into());
        request
    };
    let first = manager
        .create(&admin(), with_token("reviews-canary", "retry-1"))
        .await
        .unwrap();
    let replayed = manager
        .create(&admin(), with_token("reviews-canary", "retry-1"))
        .await
        .unwrap();
    assert_eq!(replayed, first);
    let other = manager
        .create(&admin(), with_token("reviews-other", "retry-1"))
        .await;
    let Err(DomainError::AlreadyExists(message)) = other else {
        panic!("{other:?}")
    };
    assert!(message.contains("X-Client-Token"), "{message}");
    // The key is the caller's: another caller's same request is a new
    // create (and finds the name taken).
    let theirs = manager
        .create(
            &allowed("someone-else", None),
            with_token("reviews-canary", "retry-1"),
        )
        .await;
    let Err(DomainError::AlreadyExists(message)) = theirs else {
        panic!("{theirs:?}")
    };
    assert!(!message.contains("X-Client-Token"), "{message}");
    for bad in ["", "with space", &"x".repeat(65), "tab\t"] {
        assert_eq!(
            fields(manager.create(&admin(), with_token("reviews-x", bad)).await),
            vec!["X-Client-Token"],
            "{bad:?}"
        );
    }
    let mut longest = create_request(draft("ratings-canary", "ratings"));
    longest.client_token = Some("x".repeat(64));
    manager
        .create(&admin(), longest)
        .await
        .expect("a 64-character token is valid");
}

async fn list(
    manager: &ReleaseManager,
    limit: i64,
    continue_token: &str,
) -> Result<(Vec<String>, Option<String>), DomainError> {
    let page = manager
        .list(
            &admin(),
            ListReleases {
                mesh_id: MESH.into(),
                limit,
                continue_token: continue_token.into(),
                ..ListReleases::default()
            },
        )
        .await?;
    Ok((
        page.releases.into_iter().map(|r| r.name).collect(),
        page.continue_token,
    ))
}

#[tokio::test]
async fn list_pages_with_a_default_and_a_cap_and_refuses_bad_arguments() {
    let manager = manager();
    for i in 0..=MAX_PAGE {
        create(&manager, &format!("r-{i:04}"), &format!("s-{i:04}")).await;
    }
    let (page, next) = list(&manager, 0, "").await.unwrap();
    assert_eq!(page.len(), DEFAULT_PAGE, "limit 0 is the default page");
    assert_eq!(page[0], "r-0000");
    let (page, _) = list(&manager, MAX_PAGE as i64 * 5, "").await.unwrap();
    assert_eq!(page.len(), MAX_PAGE, "a larger limit is capped");
    let (second, _) = list(&manager, 0, &next.unwrap()).await.unwrap();
    assert_eq!(second[0], format!("r-{DEFAULT_PAGE:04}"));
    // Every release once, page after page.
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let (page, next) = list(&manager, 300, &token).await.unwrap();
        seen.extend(page);
        match next {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), MAX_PAGE + 1);
    seen.dedup();
    assert_eq!(seen.len(), MAX_PAGE + 1);

    assert_eq!(fields(list(&manager, -1, "").await), vec!["limit"]);
    assert_eq!(
        fields(list(&manager, 10, "garbage").await),
        vec!["continue"]
    );
    let filtered = |phase: &str, token: &str| ListReleases {
        mesh_id: MESH.into(),
        limit: 10,
        continue_token: token.into(),
        phase: Some(phase.into()),
        ..ListReleases::default()
    };
    assert_eq!(
        fields(manager.list(&admin(), filtered("Sideways", "")).await),
        vec!["phase"]
    );
    // A token of one list is refused by another (here: another filter).
    let (_, token) = list(&manager, 10, "").await.unwrap();
    assert_eq!(
        fields(
            manager
                .list(&admin(), filtered("Pending", &token.unwrap()))
                .await
        ),
        vec!["continue"]
    );
    let pending = manager
        .list(&admin(), filtered("Pending", ""))
        .await
        .unwrap();
    assert_eq!(pending.releases.len(), 10);
    let canceled = manager
        .list(&admin(), filtered("Canceled", ""))
        .await
        .unwrap();
    assert!(canceled.releases.is_empty());
}

fn update_request(name: &str, draft: meshrelease::domain::ReleaseDraft) -> UpdateRelease {
    UpdateRelease {
        target: target(name),
        draft,
        dry_run: false,
    }
}

#[tokio::test]
async fn an_update_replaces_the_templates_and_counts_a_generation() {
    let manager = manager();
    let created = create(&manager, "reviews-canary", "reviews").await;
    let mut changed = draft("reviews-canary", "reviews");
    changed.gray_deployments[0].template = Some(template("registry.example/reviews:2.1"));
    let mut dry = update_request("reviews-canary", changed.clone());
    dry.dry_run = true;
    let preview = manager.update(&admin(), dry).await.unwrap();
    assert_eq!(preview.generation, 2);
    assert_eq!(preview.status.plan.changes.len(), 1);
    let stored = manager
        .get(&admin(), target("reviews-canary"))
        .await
        .unwrap();
    assert_eq!(stored, created, "a dry run changes nothing");

    let updated = manager
        .update(&admin(), update_request("reviews-canary", changed.clone()))
        .await
        .unwrap();
    assert_eq!(updated.generation, 2);
    assert!(updated.resource_version > created.resource_version);
    assert!(updated.status.update_time > created.status.update_time);
    assert_eq!(
        updated.gray_deployments[0].template,
        template("registry.example/reviews:2.1")
    );
    // The same spec again: no new generation.
    let again = manager
        .update(&admin(), update_request("reviews-canary", changed))
        .await
        .unwrap();
    assert_eq!(again.generation, 2);
}

#[tokio::test]
async fn an_update_names_each_field_it_refuses() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    let mut renamed = draft("other-name", "reviews");
    renamed.resource_version = "seven".into();
    assert_eq!(
        fields(
            manager
                .update(&admin(), update_request("reviews-canary", renamed))
                .await
        ),
        vec!["metadata.name", "metadata.resourceVersion"]
    );
    let mut immutable = draft("reviews-canary", "ratings");
    immutable.cluster_id = "cluster-b".into();
    immutable.version = "v3".into();
    immutable.release_type = "blue-green".into();
    assert_eq!(
        fields(
            manager
                .update(&admin(), update_request("reviews-canary", immutable))
                .await
        ),
        vec![
            "spec.serviceName",
            "spec.clusterID",
            "spec.deploymentName",
            "spec.version",
            "spec.type"
        ]
    );
    let mut invalid = draft("reviews-canary", "reviews");
    invalid.gray_deployments.clear();
    invalid.name = "another".into();
    assert_eq!(
        fields(
            manager
                .update(&admin(), update_request("reviews-canary", invalid))
                .await
        ),
        vec!["metadata.name", "spec.grayDeployments"]
    );
    let missing = manager
        .update(
            &admin(),
            update_request("nobody", draft("nobody", "reviews")),
        )
        .await;
    assert!(
        matches!(missing, Err(DomainError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn an_update_pinned_to_an_old_resource_version_is_aborted() {
    let manager = manager();
    let created = create(&manager, "reviews-canary", "reviews").await;
    let mut pinned = draft("reviews-canary", "reviews");
    pinned.resource_version = created.resource_version.to_string();
    pinned.gray_deployments[0].template = Some(template("registry.example/reviews:2.1"));
    let updated = manager
        .update(&admin(), update_request("reviews-canary", pinned.clone()))
        .await
        .expect("pinned to the current resourceVersion");
    pinned.gray_deployments[0].template = Some(template("registry.example/reviews:2.2"));
    let stale = manager
        .update(&admin(), update_request("reviews-canary", pinned))
        .await;
    let Err(DomainError::Aborted(message)) = stale else {
        panic!("{stale:?}")
    };
    assert!(
        message.contains(&updated.resource_version.to_string()),
        "names the current resourceVersion: {message}"
    );
}

#[tokio::test]
async fn the_traffic_policy_changes_only_while_running_and_nothing_after_the_end() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    let mut weighted = draft("reviews-canary", "reviews");
    weighted.traffic_policy = Some(TrafficPolicyDraft {
        weight: Some(30),
        match_rules: vec![],
    });
    let pending = manager
        .update(&admin(), update_request("reviews-canary", weighted.clone()))
        .await;
    assert!(
        matches!(&pending, Err(DomainError::FailedPrecondition(m)) if m.contains("only while Running")),
        "{pending:?}"
    );
    drive(
        &manager,
        "reviews-canary",
        &[Move::StartDeploying, Move::GrayReady],
    )
    .await;
    let running = manager
        .update(&admin(), update_request("reviews-canary", weighted))
        .await
        .unwrap();
    assert_eq!(running.traffic_policy, TrafficPolicy::Weight(30));
    assert_eq!(running.generation, 2);

    // Over: no update, no patch.
    drive(&manager, "reviews-canary", &[Move::Fail]).await;
    manager
        .delete(&admin(), target("reviews-canary"), "cancel")
        .await
        .unwrap();
    drive(&manager, "reviews-canary", &[Move::Finish]).await;
    let over = manager
        .update(
            &admin(),
            update_request("reviews-canary", draft("reviews-canary", "reviews")),
        )
        .await;
    assert!(
        matches!(&over, Err(DomainError::FailedPrecondition(m)) if m.contains("Canceled")),
        "{over:?}"
    );
    let patch = manager
        .patch(&admin(), weight_patch("reviews-canary", 0))
        .await;
    assert!(
        matches!(&patch, Err(DomainError::FailedPrecondition(m)) if m.contains("Canceled")),
        "{patch:?}"
    );
}

#[tokio::test]
async fn a_patch_changes_what_its_mask_names_and_nothing_when_it_is_the_same() {
    let manager = manager();
    running(&manager, "reviews-canary", "reviews").await;
    let mut dry = weight_patch("reviews-canary", 40);
    dry.dry_run = true;
    let preview = manager.patch(&admin(), dry).await.unwrap();
    assert_eq!(preview.traffic_policy, TrafficPolicy::Weight(40));
    let before = manager.read(&target("reviews-canary")).await.unwrap();
    assert_eq!(before.traffic_policy, TrafficPolicy::Weight(0), "dry run");

    let patched = manager
        .patch(&admin(), weight_patch("reviews-canary", 40))
        .await
        .unwrap();
    assert_eq!(patched.traffic_policy, TrafficPolicy::Weight(40));
    assert_eq!(patched.generation, before.generation + 1);
    let same = manager
        .patch(&admin(), weight_patch("reviews-canary", 40))
        .await
        .unwrap();
    assert_eq!(same, patched, "no write for no change");

    let mut templates = weight_patch("reviews-canary", 40);
    templates.draft.gray_deployments = draft("x", "reviews").gray_deployments;
    templates.draft.gray_deployments[0].template = Some(template("registry.example/reviews:3"));
    templates.mask = vec!["spec.grayDeployments".into()];
    let patched = manager.patch(&admin(), templates).await.unwrap();
    assert_eq!(
        patched.gray_deployments[0].template,
        template("registry.example/reviews:3")
    );
    assert_eq!(patched.traffic_policy, TrafficPolicy::Weight(40));

    let mut stale = weight_patch("reviews-canary", 50);
    stale.mask.push("metadata.resourceVersion".into());
    stale.draft.resource_version = before.resource_version.to_string();
    assert!(matches!(
        manager.patch(&admin(), stale).await,
        Err(DomainError::Aborted(_))
    ));
}

#[tokio::test]
async fn a_patch_names_each_path_it_may_not_change() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    let mut patch = weight_patch("reviews-canary", 10);
    patch.mask = vec![];
    assert_eq!(
        fields(manager.patch(&admin(), patch.clone()).await),
        vec!["updateMask"]
    );
    patch.mask = [
        "spec.version",
        "status",
        "status.phase",
        "spec",
        "spec.trafficPolicy.match.headers",
        "spec.grayDeployments.0",
        "spec.nothing",
        "metadata.resourceVersion",
        "kind",
        "apiVersion",
        "metadata.meshID",
        "metadata.name",
        "metadata.namespace",
    ]
    .map(String::from)
    .to_vec();
    patch.draft.kind = "Other".into();
    patch.draft.api_version = "v1".into();
    patch.draft.mesh_id = "mesh-2".into();
    patch.draft.name = "other".into();
    patch.draft.namespace = "other".into();
    patch.draft.resource_version = "x".into();
    assert_eq!(
        fields(manager.patch(&admin(), patch.clone()).await),
        vec![
            "spec.version",
            "status",
            "status.phase",
            "updateMask",
            "spec.trafficPolicy.match.headers",
            "spec.grayDeployments.0",
            "updateMask",
            "metadata.resourceVersion",
            "kind",
            "apiVersion",
            "metadata.meshID",
            "metadata.name",
            "metadata.namespace",
        ]
    );
    // The same identity where given is fine.
    patch.mask = [
        "kind",
        "apiVersion",
        "metadata.meshID",
        "metadata.name",
        "metadata.namespace",
    ]
    .map(String::from)
    .to_vec();
    patch.draft.kind = "Release".into();
    patch.draft.api_version = "asm/v2".into();
    patch.draft.mesh_id = MESH.into();
    patch.draft.name = "reviews-canary".into();
    patch.draft.namespace = NS.into();
    let unchanged = manager.patch(&admin(), patch).await.unwrap();
    assert_eq!(unchanged.generation, 1);
}

#[tokio::test]
async fn weight_and_match_replace_each_other_in_a_patch() {
    let manager = manager();
    running(&manager, "reviews-canary", "reviews").await;
    let mut to_match = weight_patch("reviews-canary", 0);
    to_match.draft.traffic_policy = Some(TrafficPolicyDraft {
        weight: Some(70),
        match_rules: vec![meshrelease::domain::traffic::MatchRuleDraft {
            os: vec!["iOS".into()],
            ..Default::default()
        }],
    });
    to_match.mask = vec!["spec.trafficPolicy.match".into()];
    let patched = manager.patch(&admin(), to_match.clone()).await.unwrap();
    assert!(
        matches!(&patched.traffic_policy, TrafficPolicy::Match(rules) if rules.len() == 1),
        "only the masked member is taken: {:?}",
        patched.traffic_policy
    );
    to_match.mask = vec!["spec.trafficPolicy".into()];
    assert_eq!(
        fields(manager.patch(&admin(), to_match).await),
        vec!["spec.trafficPolicy"],
        "both members given under the whole policy"
    );
}

#[tokio::test]
async fn delete_moves_by_the_phase_machine_and_removes_only_what_is_over() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    assert_eq!(
        fields(
            manager
                .delete(&admin(), target("reviews-canary"), "stop")
                .await
        ),
        vec!["action"]
    );
    assert_eq!(
        fields(manager.delete(&admin(), target("reviews-canary"), "").await),
        vec!["action"],
        "an active release is not removed"
    );
    let refused = manager
        .delete(&admin(), target("reviews-canary"), "end")
        .await;
    assert!(
        matches!(&refused, Err(DomainError::FailedPrecondition(m)) if m.contains("Pending")),
        "{refused:?}"
    );
    let canceled = manager
        .delete(&admin(), target("reviews-canary"), "cancel")
        .await
        .unwrap();
    assert_eq!(canceled.status.phase, Phase::Canceled);
    assert_eq!(
        canceled.status.phase_time,
        Some(canceled.status.update_time)
    );
    let again = manager
        .delete(&admin(), target("reviews-canary"), "cancel")
        .await
        .unwrap();
    assert_eq!(again, canceled, "a retried cancel changes nothing");
    manager
        .delete(&admin(), target("reviews-canary"), "")
        .await
        .unwrap();
    assert!(matches!(
        manager.get(&admin(), target("reviews-canary")).await,
        Err(DomainError::NotFound(_))
    ));
    // The service is free again.
    create(&manager, "reviews-next", "reviews").await;
}

#[tokio::test]
async fn an_end_needs_all_traffic_on_the_gray_version() {
    let manager = manager();
    running(&manager, "reviews-canary", "reviews").await;
    assert!(matches!(
        manager
            .delete(&admin(), target("reviews-canary"), "end")
            .await,
        Err(DomainError::FailedPrecondition(_))
    ));
    manager
        .patch(&admin(), weight_patch("reviews-canary", 100))
        .await
        .unwrap();
    let ending = manager
        .delete(&admin(), target("reviews-canary"), "end")
        .await
        .unwrap();
    assert_eq!(ending.status.phase, Phase::Ending);
}

#[tokio::test]
async fn list_filters_by_namespace_and_service() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    create(&manager, "ratings-canary", "ratings").await;
    let names = |page: meshrelease::domain::ReleasePage| -> Vec<String> {
        page.releases.into_iter().map(|r| r.name).collect()
    };
    let query = |namespace: &str, service: &str| ListReleases {
        mesh_id: MESH.into(),
        namespace: Some(namespace.into()),
        service_name: Some(service.into()),
        ..ListReleases::default()
    };
    let all = manager.list(&admin(), query("", "")).await.unwrap();
    assert_eq!(names(all), ["reviews-canary", "ratings-canary"]);
    let ratings = manager.list(&admin(), query(NS, "ratings")).await.unwrap();
    assert_eq!(names(ratings), ["ratings-canary"]);
    let elsewhere = manager.list(&admin(), query("other", "")).await.unwrap();
    assert!(names(elsewhere).is_empty());
}

#[tokio::test]
async fn after_a_reload_a_mesh_no_longer_configured_is_not_found_and_its_releases_stay() {
    let manager = manager();
    create(&manager, "reviews-canary", "reviews").await;
    let mut other = mesh();
    other.id = "mesh-2".into();
    manager.replace_meshes(meshrelease::domain::Meshes::new([other]));
    let ids: Vec<String> = manager.meshes().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, ["mesh-2"]);
    let gone = manager.get(&admin(), target("reviews-canary")).await;
    assert!(
        matches!(&gone, Err(DomainError::NotFound(m)) if m.contains("mesh")),
        "{gone:?}"
    );
    manager.replace_meshes(meshrelease::domain::Meshes::new([mesh()]));
    assert!(
        manager
            .get(&admin(), target("reviews-canary"))
            .await
            .is_ok()
    );
}
