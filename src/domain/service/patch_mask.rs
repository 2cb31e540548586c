//! PATCH (AIP-134): reading a field mask into the fields it may change,
//! and a change of the spec by PUT or PATCH checked against the phase
//! machine.

use std::sync::Arc;

use super::{ReleaseRef, later_than};
use crate::domain::error::{DomainError, Violation};
use crate::domain::kinds::Phase;
use crate::domain::names::quoted;
use crate::domain::object::JsonObject;
use crate::domain::phase;
use crate::domain::release::{Release, ReleaseDraft};
use crate::domain::strategy::Strategy;
use crate::domain::traffic::{TrafficPolicy, TrafficPolicyDraft};

/// A change of the spec by PUT or PATCH, checked against the phase machine.
pub(super) struct SpecChange {
    pub(super) templates: Option<(
        Vec<crate::domain::release::GrayDeployment>,
        Vec<Arc<JsonObject>>,
    )>,
    pub(super) policy: Option<TrafficPolicy>,
    /// `Some(None)`: the strategy removed.
    pub(super) strategy: Option<Option<Strategy>>,
}

impl SpecChange {
    pub(super) fn apply_to(self, current: &Release) -> Result<Release, DomainError> {
        let phase = current.status.phase;
        let mut next = current.clone();
        let mut changed = false;
        if let Some((gray, completed)) = self.templates
            && gray != current.gray_deployments
        {
            if !phase::templates_may_change(phase) {
                return Err(DomainError::FailedPrecondition(format!(
                    "release {:?} is {}: its gray Deployments can change only while Pending, Deploying or Running",
                    current.name,
                    phase.as_str()
                )));
            }
            next.gray_deployments = gray;
            next.status.gray_deployments = completed;
            changed = true;
        }
        if let Some(strategy) = self.strategy
            && strategy != current.strategy
        {
            if !strategy_may_change(current) {
                return Err(DomainError::FailedPrecondition(format!(
                    "release {:?} is {}{}: spec.strategy can change before it runs, or while it is paused (:pause first)",
                    current.name,
                    phase.as_str(),
                    if phase == Phase::Running {
                        " with its strategy running"
                    } else {
                        ""
                    }
                )));
            }
            next.strategy = strategy;
            changed = true;
        }
        if let Some(policy) = self.policy
            && policy != current.traffic_policy
        {
            if !phase::policy_may_change(phase) {
                return Err(DomainError::FailedPrecondition(format!(
                    "release {:?} is {}: its traffic policy can change only while Running",
                    current.name,
                    phase.as_str()
                )));
            }
            if strategy_runs(current) {
                return Err(DomainError::FailedPrecondition(format!(
                    "spec.trafficPolicy of release {:?} belongs to spec.strategy while it runs: pause it (:pause), promote it (:promote) or abort it (:abort) first",
                    current.name
                )));
            }
            next.traffic_policy = policy;
            changed = true;
        }
        if changed {
            next.generation = current.generation.saturating_add(1);
            next.status.update_time = later_than(current.status.update_time);
        }
        Ok(next)
    }
}

/// Whether `release`'s strategy moves its traffic now (Running, neither
/// paused nor done): its traffic policy is the strategy's then.
pub(super) fn strategy_runs(release: &Release) -> bool {
    release.strategy.is_some()
        && release.status.phase == Phase::Running
        && release
            .status
            .strategy
            .as_ref()
            .is_none_or(|s| !s.paused && s.outcome.is_none())
}

/// Whether `release`'s strategy may be changed (or given, or taken away):
/// before it runs, or while it is paused.
fn strategy_may_change(release: &Release) -> bool {
    match release.status.phase {
        Phase::Pending | Phase::Deploying => true,
        Phase::Running => release.strategy.is_none() || !strategy_runs(release),
        Phase::Ending | Phase::Ended | Phase::Canceling | Phase::Canceled | Phase::Failed => false,
    }
}

/// What a PATCH mask asks for.
pub(super) struct Masked {
    pub(super) pinned: Option<u64>,
    pub(super) policy: Option<TrafficPolicyDraft>,
    pub(super) templates: bool,
    pub(super) strategy: bool,
}

/// Reads a mask of JSON field paths against the draft: what to change, what
/// to check, and a violation for every path that may not be named.
pub(super) fn read_mask(
    mask: &[String],
    draft: &ReleaseDraft,
    target: &ReleaseRef,
    mesh_id: &str,
) -> Result<Masked, DomainError> {
    let mut violations = Vec::new();
    let mut masked = Masked {
        pinned: None,
        policy: None,
        templates: false,
        strategy: false,
    };
    if mask.is_empty() {
        return Err(DomainError::invalid_field(
            "updateMask",
            "names no field to change: give spec.trafficPolicy, spec.grayDeployments or spec.strategy",
        ));
    }
    let given = draft.traffic_policy.clone().unwrap_or_default();
    let (mut weight, mut rules) = (false, false);
    let must_equal = |field: &str, got: &str, want: &str, violations: &mut Vec<Violation>| {
        if got != want {
            violations.push(Violation::new(
                field,
                format!("must be {} where given", quoted(want)),
            ));
        }
    };
    for path in mask {
        match path.as_str() {
            "spec.trafficPolicy" => (weight, rules) = (true, true),
            "spec.trafficPolicy.weight" => weight = true,
            "spec.trafficPolicy.match" => rules = true,
            "spec.grayDeployments" => masked.templates = true,
            "spec.strategy" => masked.strategy = true,
            "metadata.resourceVersion" => match draft.resource_version.parse::<u64>() {
                Ok(v) => masked.pinned = Some(v),
                Err(_) => violations.push(Violation::new(
                    "metadata.resourceVersion",
                    "is not a resourceVersion of this service",
                )),
            },
            "kind" => must_equal(path, &draft.kind, crate::domain::release::KIND, &mut violations),
            "apiVersion" => must_equal(
                path,
                &draft.api_version,
                crate::domain::release::API_VERSION,
                &mut violations,
            ),
            "metadata.meshID" => must_equal(path, &draft.mesh_id, mesh_id, &mut violations),
            "metadata.name" => must_equal(path, &draft.name, &target.name, &mut violations),
            "metadata.namespace" => {
                must_equal(path, &draft.namespace, &target.namespace, &mut violations);
            }
            "spec.serviceName" | "spec.clusterID" | "spec.deploymentName" | "spec.version"
            | "spec.type" => violations.push(Violation::new(
                path,
                "is immutable: PATCH changes spec.trafficPolicy, spec.grayDeployments and spec.strategy only",
            )),
            "metadata.uid" | "metadata.generation" | "status" => {
                violations.push(Violation::new(path, "is output only"));
            }
            "spec" | "metadata" | "*" | "" => violations.push(Violation::new(
                "updateMask",
                format!(
                    "names {}, which is too wide: name spec.trafficPolicy or spec.grayDeployments (PUT replaces a release)",
                    quoted(path)
                ),
            )),
            other if other.starts_with("status.") => {
                violations.push(Violation::new(other, "is output only"));
            }
            other if other.starts_with("spec.trafficPolicy.match.") => {
                violations.push(Violation::new(
                    other,
                    "match rules are replaced whole: name spec.trafficPolicy.match",
                ));
            }
            other if other.starts_with("spec.strategy.") => {
                violations.push(Violation::new(
                    other,
                    "a strategy is replaced whole: name spec.strategy",
                ));
            }
            other if other.starts_with("spec.grayDeployments.") => {
                violations.push(Violation::new(
                    other,
                    "gray Deployments are replaced whole: name spec.grayDeployments",
                ));
            }
            other => violations.push(Violation::new(
                "updateMask",
                format!("names {}, which is not a field of Release", quoted(other)),
            )),
        }
    }
    if weight || rules {
        // Weight and match replace each other, as the members of a oneof do.
        masked.policy = Some(TrafficPolicyDraft {
            weight: if weight { given.weight } else { None },
            match_rules: if rules { given.match_rules } else { Vec::new() },
        });
    }
    if violations.is_empty() {
        Ok(masked)
    } else {
        Err(DomainError::invalid(violations))
    }
}

/// A PATCH draft carries only what changes; the template checks need the
/// release's identity, taken from the stored release.
pub(super) fn fill_identity(draft: &mut ReleaseDraft, current: &Release) {
    draft.name.clone_from(&current.name);
    draft.namespace.clone_from(&current.namespace);
    draft.mesh_id.clone_from(&current.mesh_id);
    draft.kind.clear();
    draft.api_version.clear();
    draft.service_name.clone_from(&current.service_name);
    draft.cluster_id.clone_from(&current.cluster_id);
    draft.deployment_name.clone_from(&current.deployment_name);
    draft.version.clone_from(&current.version);
    draft.release_type = current.release_type.as_str().to_owned();
    draft.traffic_policy = None;
}
