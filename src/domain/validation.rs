//! The rules of the contract for a release on input, in one place that both
//! protocols use. Every violation is collected; none stops the others.

use std::sync::Arc;

use super::deployment::{self, TemplateContext};
use super::error::Violation;
use super::kinds::ReleaseType;
use super::mesh::Mesh;
use super::names::{self, quoted};
use super::object::JsonObject;
use super::release::{API_VERSION, GrayDeployment, GrayDeploymentDraft, KIND, ReleaseDraft};
use super::strategy::{self, Strategy};
use super::traffic::{self, TrafficPolicy};

/// The most gray Deployments one release may create.
pub const MAX_GRAY_DEPLOYMENTS: usize = 16;

/// A draft that passed every rule, with its gray Deployments completed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRelease {
    pub name: String,
    pub service_name: String,
    pub cluster_id: String,
    pub deployment_name: String,
    pub version: String,
    pub release_type: ReleaseType,
    pub gray_deployments: Vec<GrayDeployment>,
    pub completed: Vec<Arc<JsonObject>>,
    /// The traffic policy, where the draft gave one.
    pub traffic_policy: Option<TrafficPolicy>,
    /// The strategy, where the draft gave one.
    pub strategy: Option<Strategy>,
}

/// Checks `draft` for `mesh` and the namespace of the request path.
pub fn validate(
    draft: &ReleaseDraft,
    mesh: &Mesh,
    namespace: &str,
) -> Result<ValidRelease, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut fail =
        |field: &str, description: String| violations.push(Violation::new(field, description));

    if !draft.kind.is_empty() && draft.kind != KIND {
        fail("kind", format!("must be {KIND:?} where given"));
    }
    if !draft.api_version.is_empty() && draft.api_version != API_VERSION {
        fail("apiVersion", format!("must be {API_VERSION:?} where given"));
    }
    if !draft.mesh_id.is_empty() && draft.mesh_id != mesh.id {
        fail(
            "metadata.meshID",
            format!(
                "must be {:?}, the mesh of the request path, where given",
                mesh.id
            ),
        );
    }
    if draft.name.is_empty() {
        fail("metadata.name", "is required".into());
    } else if let Err(e) = names::check_release_name(&draft.name) {
        fail("metadata.name", e);
    }
    if let Err(e) = names::check_dns_label(namespace) {
        fail(
            "namespace",
            format!("the namespace of the request path {e}"),
        );
    }
    if draft.namespace.is_empty() {
        fail("metadata.namespace", "is required".into());
    } else if draft.namespace != namespace {
        fail(
            "metadata.namespace",
            format!(
                "must be {}, the namespace of the request path",
                quoted(namespace)
            ),
        );
    }
    required(
        &draft.service_name,
        "spec.serviceName",
        names::check_dns_label,
        &mut fail,
    );
    check_cluster(&draft.cluster_id, "spec.clusterID", mesh, &mut fail);
    required(
        &draft.deployment_name,
        "spec.deploymentName",
        names::check_dns_subdomain,
        &mut fail,
    );
    required(
        &draft.version,
        "spec.version",
        names::check_label_value,
        &mut fail,
    );
    let release_type = if draft.release_type.is_empty() {
        fail(
            "spec.type",
            "is required: \"canary\" or \"blue-green\"".into(),
        );
        None
    } else {
        let parsed = ReleaseType::parse(&draft.release_type);
        if parsed.is_none() {
            fail(
                "spec.type",
                format!(
                    "must be \"canary\" or \"blue-green\", got {}",
                    quoted(&draft.release_type)
                ),
            );
        }
        parsed
    };

    let count = draft.gray_deployments.len();
    if count == 0 {
        fail(
            "spec.grayDeployments",
            "must hold at least one gray Deployment".into(),
        );
    } else if count > MAX_GRAY_DEPLOYMENTS {
        fail(
            "spec.grayDeployments",
            format!("holds {count} gray Deployments; at most {MAX_GRAY_DEPLOYMENTS} are allowed"),
        );
    }

    let ctx = TemplateContext {
        namespace,
        deployment_name: &draft.deployment_name,
        version: &draft.version,
    };
    let mut completed = Vec::with_capacity(count);
    let mut placed: Vec<(&str, String)> = Vec::new();
    for (i, gray) in draft
        .gray_deployments
        .iter()
        .take(MAX_GRAY_DEPLOYMENTS)
        .enumerate()
    {
        let base = format!("spec.grayDeployments[{i}]");
        let GrayDeploymentDraft {
            cluster_id,
            template,
        } = gray;
        check_cluster(
            cluster_id,
            &format!("{base}.clusterID"),
            mesh,
            &mut |f, d| violations.push(Violation::new(f, d)),
        );
        let Some(template) = template else {
            violations.push(Violation::new(format!("{base}.template"), "is required"));
            continue;
        };
        let field = format!("{base}.template");
        if let Some(object) =
            deployment::check_and_complete(template, &field, &ctx, &mut violations)
        {
            let name = object
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned();
            if placed
                .iter()
                .any(|(c, n)| *c == cluster_id.as_str() && *n == name)
            {
                violations.push(Violation::new(
                    format!("{field}.metadata.name"),
                    format!(
                        "{} is used by another gray Deployment in cluster {}",
                        quoted(&name),
                        quoted(cluster_id)
                    ),
                ));
            }
            placed.push((cluster_id, name));
            completed.push(Arc::new(object));
        }
    }

    let traffic_policy = draft.traffic_policy.as_ref().and_then(|policy| {
        traffic::validate(policy, release_type, "spec.trafficPolicy", &mut violations)
    });
    let strategy = draft.strategy.as_ref().and_then(|strategy| {
        strategy::validate(
            strategy,
            release_type,
            mesh,
            "spec.strategy",
            &mut violations,
        )
    });
    if draft.strategy.is_some()
        && traffic_policy
            .as_ref()
            .is_some_and(|p| !p.original_holds_all())
    {
        violations.push(Violation::new(
            "spec.trafficPolicy",
            "belongs to spec.strategy, whose steps set it: leave it out (or weight 0)",
        ));
    }

    match release_type {
        Some(release_type) if violations.is_empty() => Ok(ValidRelease {
            traffic_policy,
            strategy,
            name: draft.name.clone(),
            service_name: draft.service_name.clone(),
            cluster_id: draft.cluster_id.clone(),
            deployment_name: draft.deployment_name.clone(),
            version: draft.version.clone(),
            release_type,
            gray_deployments: draft
                .gray_deployments
                .iter()
                .map(|g| GrayDeployment {
                    cluster_id: g.cluster_id.clone(),
                    template: g.template.clone().unwrap_or_default(),
                })
                .collect(),
            completed,
        }),
        _ => Err(violations),
    }
}

fn required(
    value: &str,
    field: &str,
    check: fn(&str) -> Result<(), String>,
    fail: &mut impl FnMut(&str, String),
) {
    if value.is_empty() {
        fail(field, "is required".into());
    } else if let Err(e) = check(value) {
        fail(field, e);
    }
}

fn check_cluster(cluster_id: &str, field: &str, mesh: &Mesh, fail: &mut impl FnMut(&str, String)) {
    if cluster_id.is_empty() {
        fail(field, "is required".into());
    } else if !mesh.has_cluster(cluster_id) {
        fail(
            field,
            format!(
                "{} is not a cluster of mesh {:?}",
                quoted(cluster_id),
                mesh.id
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mesh() -> Mesh {
        Mesh {
            id: "demo-mesh".into(),
            clusters: vec!["cluster-a".into(), "cluster-b".into()],
            enterprise_project_id: "0".into(),
            tags: Default::default(),
            ..Mesh::default()
        }
    }

    fn template() -> JsonObject {
        let serde_json::Value::Object(map) = json!({
            "spec": {
                "selector": {"matchLabels": {"app": "reviews"}},
                "template": {
                    "metadata": {"labels": {"app": "reviews"}},
                    "spec": {"containers": [{"name": "reviews", "image": "reviews:2"}]}
                }
            }
        }) else {
            unreachable!("an object literal")
        };
        map
    }

    fn draft() -> ReleaseDraft {
        ReleaseDraft {
            name: "reviews-canary".into(),
            namespace: "default".into(),
            service_name: "reviews".into(),
            cluster_id: "cluster-a".into(),
            deployment_name: "reviews-v1".into(),
            version: "v2".into(),
            release_type: "canary".into(),
            gray_deployments: vec![GrayDeploymentDraft {
                cluster_id: "cluster-b".into(),
                template: Some(Arc::new(template())),
            }],
            ..ReleaseDraft::default()
        }
    }

    fn fields(result: Result<ValidRelease, Vec<Violation>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn a_good_draft_passes() {
        let valid = validate(&draft(), &mesh(), "default").unwrap();
        assert_eq!(valid.completed[0]["metadata"]["name"], "reviews-v1-v2");
    }

    #[test]
    fn an_empty_draft_names_every_required_field() {
        assert_eq!(
            fields(validate(&ReleaseDraft::default(), &mesh(), "default")),
            vec![
                "metadata.name",
                "metadata.namespace",
                "spec.serviceName",
                "spec.clusterID",
                "spec.deploymentName",
                "spec.version",
                "spec.type",
                "spec.grayDeployments",
            ]
        );
    }

    #[test]
    fn path_and_body_must_agree() {
        let mut d = draft();
        d.mesh_id = "other".into();
        d.kind = "Deployment".into();
        d.api_version = "asm/v1".into();
        assert_eq!(
            fields(validate(&d, &mesh(), "prod")),
            vec![
                "kind",
                "apiVersion",
                "metadata.meshID",
                "metadata.namespace"
            ]
        );
    }

    #[test]
    fn clusters_must_belong_to_the_mesh() {
        let mut d = draft();
        d.cluster_id = "cluster-z".into();
        d.gray_deployments[0].cluster_id = "cluster-y".into();
        assert_eq!(
            fields(validate(&d, &mesh(), "default")),
            vec!["spec.clusterID", "spec.grayDeployments[0].clusterID"]
        );
    }

    #[test]
    fn gray_deployment_count_is_bounded() {
        let mut d = draft();
        let one = d.gray_deployments[0].clone();
        d.gray_deployments = vec![one; 17];
        let got = fields(validate(&d, &mesh(), "default"));
        assert_eq!(got[0], "spec.grayDeployments");
        // Sixteen, each its own name in its cluster, are allowed.
        d.gray_deployments = (0..MAX_GRAY_DEPLOYMENTS)
            .map(|i| named_in(&format!("gray-{i}"), "cluster-b"))
            .collect();
        assert_eq!(
            fields(validate(&d, &mesh(), "default")),
            Vec::<String>::new()
        );
    }

    fn named_in(name: &str, cluster: &str) -> GrayDeploymentDraft {
        let mut t = template();
        t.insert("metadata".into(), json!({"name": name}));
        GrayDeploymentDraft {
            cluster_id: cluster.into(),
            template: Some(Arc::new(t)),
        }
    }

    #[test]
    fn one_name_in_two_clusters_and_two_names_in_one_cluster_are_fine() {
        let mut d = draft();
        d.gray_deployments = vec![
            named_in("reviews-gray", "cluster-a"),
            named_in("reviews-gray", "cluster-b"),
            named_in("reviews-other", "cluster-b"),
        ];
        assert_eq!(
            fields(validate(&d, &mesh(), "default")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn two_gray_deployments_of_one_name_in_one_cluster_clash() {
        let mut d = draft();
        let one = d.gray_deployments[0].clone();
        d.gray_deployments = vec![one.clone(), one];
        assert_eq!(
            fields(validate(&d, &mesh(), "default")),
            vec!["spec.grayDeployments[1].template.metadata.name"]
        );
    }
}
