//! Between the wire types (prost/pbjson) and the domain: proto types stay at
//! this edge. Input conversion is structural only; the rules are checked by
//! `domain::validation`, the same for both protocols. `strategy.rs` holds
//! `spec.strategy` and `status.strategy`.

mod strategy;

use std::sync::Arc;

use crate::api::errors::ApiError;
use crate::domain::change::PreviewedChange;
use crate::domain::conditions::StatusCondition;
use crate::domain::release::{API_VERSION, GrayDeploymentDraft, KIND};
use crate::domain::traffic::{
    MatchRule, MatchRuleDraft, MatchValue, StringMatch, StringMatchDraft, TrafficPolicy,
    TrafficPolicyDraft,
};
use crate::domain::{JsonObject, Release, ReleaseDraft};
use crate::pb::asm::v2 as pb;
use crate::pb::wkt;

/// Deeper Kubernetes objects than this are refused (real Deployments nest
/// about fifteen levels).
pub const MAX_OBJECT_DEPTH: usize = 64;

impl TryFrom<pb::Release> for ReleaseDraft {
    type Error = ApiError;

    fn try_from(release: pb::Release) -> Result<Self, ApiError> {
        let metadata = release.metadata.unwrap_or_default();
        let spec = release.spec.unwrap_or_default();
        let mut gray_deployments = Vec::with_capacity(spec.gray_deployments.len());
        for (i, gray) in spec.gray_deployments.into_iter().enumerate() {
            let template = gray
                .template
                .map(|t| struct_to_json(t, &format!("spec.grayDeployments[{i}].template")))
                .transpose()?;
            gray_deployments.push(GrayDeploymentDraft {
                cluster_id: gray.cluster_id,
                template: template.map(Arc::new),
            });
        }
        Ok(ReleaseDraft {
            kind: release.kind,
            api_version: release.api_version,
            mesh_id: metadata.mesh_id,
            name: metadata.name,
            namespace: metadata.namespace,
            resource_version: metadata.resource_version,
            service_name: spec.service_name,
            cluster_id: spec.cluster_id,
            deployment_name: spec.deployment_name,
            version: spec.version,
            release_type: spec.r#type,
            gray_deployments,
            traffic_policy: spec.traffic_policy.map(TrafficPolicyDraft::from),
            strategy: spec.strategy.map(Into::into),
        })
    }
}

impl From<pb::TrafficPolicy> for TrafficPolicyDraft {
    fn from(policy: pb::TrafficPolicy) -> Self {
        let matches = |list: Vec<pb::StringMatch>| {
            list.into_iter()
                .map(|m| StringMatchDraft {
                    name: m.name,
                    exact: m.exact,
                    regex: m.regex,
                })
                .collect()
        };
        TrafficPolicyDraft {
            weight: policy.weight,
            match_rules: policy
                .r#match
                .into_iter()
                .map(|rule| MatchRuleDraft {
                    headers: matches(rule.headers),
                    query_params: matches(rule.query_params),
                    cookie: rule.cookie.map(|c| c.regex),
                    os: rule.os,
                    browsers: rule.browsers,
                })
                .collect(),
        }
    }
}

impl From<&TrafficPolicy> for pb::TrafficPolicy {
    fn from(policy: &TrafficPolicy) -> Self {
        let matches = |list: &[StringMatch]| {
            list.iter()
                .map(|m| {
                    let (exact, regex) = match &m.value {
                        MatchValue::Exact(v) => (Some(v.clone()), None),
                        MatchValue::Regex(v) => (None, Some(v.clone())),
                    };
                    pb::StringMatch {
                        name: m.name.clone(),
                        exact,
                        regex,
                    }
                })
                .collect()
        };
        match policy {
            TrafficPolicy::Weight(w) => pb::TrafficPolicy {
                weight: Some(i32::from(*w)),
                r#match: Vec::new(),
            },
            TrafficPolicy::Match(rules) => pb::TrafficPolicy {
                weight: None,
                r#match: rules
                    .iter()
                    .map(|rule: &MatchRule| pb::MatchRule {
                        headers: matches(&rule.headers),
                        query_params: matches(&rule.query_params),
                        cookie: rule.cookie.clone().map(|regex| pb::CookieMatch { regex }),
                        os: rule.os.iter().map(|o| o.as_str().to_owned()).collect(),
                        browsers: rule
                            .browsers
                            .iter()
                            .map(|b| b.as_str().to_owned())
                            .collect(),
                    })
                    .collect(),
            },
        }
    }
}

impl From<&StatusCondition> for pb::Condition {
    fn from(c: &StatusCondition) -> Self {
        pb::Condition {
            r#type: c.kind.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: Some(c.last_transition_time.into()),
        }
    }
}

impl From<&PreviewedChange> for pb::PlannedObject {
    fn from(previewed: &PreviewedChange) -> Self {
        let p = &previewed.change;
        pb::PlannedObject {
            cluster_id: p.cluster_id.clone(),
            action: p.change.as_str().to_owned(),
            object: Some(json_to_struct(&p.object)),
            dry_run: match &previewed.dry_run {
                None => String::new(),
                Some(Ok(())) => "accepted".to_owned(),
                Some(Err(why)) => format!("refused: {why}"),
            },
        }
    }
}

impl From<Release> for pb::Release {
    fn from(release: Release) -> Self {
        pb::Release {
            kind: KIND.to_owned(),
            api_version: API_VERSION.to_owned(),
            metadata: Some(pb::ReleaseMetadata {
                mesh_id: release.mesh_id,
                name: release.name,
                uid: release.uid.to_string(),
                namespace: release.namespace,
                // Absent until stored (a dry run).
                resource_version: match release.resource_version {
                    0 => String::new(),
                    v => v.to_string(),
                },
                generation: i32::try_from(release.generation).unwrap_or(i32::MAX),
            }),
            spec: Some(pb::ReleaseSpec {
                service_name: release.service_name,
                cluster_id: release.cluster_id,
                deployment_name: release.deployment_name,
                version: release.version,
                r#type: release.release_type.as_str().to_owned(),
                gray_deployments: release
                    .gray_deployments
                    .into_iter()
                    .map(|g| pb::GrayDeployment {
                        cluster_id: g.cluster_id,
                        template: Some(json_to_struct(&g.template)),
                    })
                    .collect(),
                traffic_policy: Some((&release.traffic_policy).into()),
                strategy: release.strategy.as_ref().map(Into::into),
            }),
            status: Some(pb::ReleaseStatus {
                phase: release.status.phase.as_str().to_owned(),
                start_time: Some(release.status.start_time.into()),
                update_time: Some(release.status.update_time.into()),
                deployment: release.status.deployment.as_deref().map(json_to_struct),
                gray_deployments: release
                    .status
                    .gray_deployments_shown()
                    .iter()
                    .map(|object| json_to_struct(object))
                    .collect(),
                observed_generation: i32::try_from(release.status.observed_generation)
                    .unwrap_or(i32::MAX),
                conditions: release.status.conditions.iter().map(Into::into).collect(),
                traffic: release.status.traffic.as_ref().map(Into::into),
                plan: release.status.plan.changes.iter().map(Into::into).collect(),
                plan_message: release.status.plan.message.clone(),
                strategy: release.status.strategy.as_ref().map(Into::into),
            }),
        }
    }
}

/// A `Struct` as JSON; refuses objects deeper than [`MAX_OBJECT_DEPTH`],
/// numbers JSON cannot carry, and numbers beyond 2^53 in magnitude (a double
/// cannot tell them from their neighbours, so they may already have been
/// rounded), naming the path of the value below `field`.
pub fn struct_to_json(object: wkt::Struct, field: &str) -> Result<JsonObject, ApiError> {
    struct_fields(object, 1).map_err(|refusal| {
        // Built only on the way out of an error: the happy path allocates no paths.
        let mut path = field.to_owned();
        for segment in refusal.segments.iter().rev() {
            path.push_str(segment);
        }
        ApiError::invalid_field(path, refusal.reason)
    })
}

/// A refused value: the path to it, innermost segment first.
struct Refusal {
    segments: Vec<String>,
    reason: String,
}

impl Refusal {
    fn new(reason: impl Into<String>) -> Self {
        Refusal {
            segments: Vec::new(),
            reason: reason.into(),
        }
    }

    fn under(mut self, segment: String) -> Self {
        self.segments.push(segment);
        self
    }
}

fn struct_fields(object: wkt::Struct, depth: usize) -> Result<JsonObject, Refusal> {
    if depth > MAX_OBJECT_DEPTH {
        return Err(Refusal::new(format!(
            "nests deeper than {MAX_OBJECT_DEPTH} levels"
        )));
    }
    object
        .into_fields()
        .into_iter()
        .map(|(key, value)| match value_to_json(value, depth) {
            Ok(json) => Ok((key, json)),
            Err(refusal) => Err(refusal.under(format!(".{key}"))),
        })
        .collect()
}

fn value_to_json(value: wkt::Value, depth: usize) -> Result<serde_json::Value, Refusal> {
    use wkt::value::Kind;
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::NumberValue(n)) => {
            if n.abs() > crate::transcode::json_strict::MAX_EXACT {
                return Err(Refusal::new(
                    "is a number beyond 2^53 in magnitude, which this API cannot keep exactly",
                ));
            }
            let number = if n.fract() == 0.0 {
                Some(serde_json::Number::from(n as i64))
            } else {
                serde_json::Number::from_f64(n)
            };
            number
                .map(serde_json::Value::Number)
                .ok_or_else(|| Refusal::new("holds a number that is not finite"))?
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_fields(s, depth + 1)?),
        Some(Kind::ListValue(list)) => {
            if depth + 1 > MAX_OBJECT_DEPTH {
                return Err(Refusal::new(format!(
                    "nests deeper than {MAX_OBJECT_DEPTH} levels"
                )));
            }
            serde_json::Value::Array(
                list.values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        value_to_json(v, depth + 1).map_err(|r| r.under(format!("[{i}]")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// JSON as a `Struct`. Stored objects passed the depth check on the way in.
/// Built from a reference: stored objects are shared between copies of a
/// release, so there is nothing to move out of.
pub fn json_to_struct(object: &JsonObject) -> wkt::Struct {
    wkt::Struct::new(
        object
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    )
}

fn json_to_value(value: &serde_json::Value) -> wkt::Value {
    use wkt::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(wkt::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    wkt::Value::from(kind)
}
