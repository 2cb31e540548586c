//! `mrctl describe release NAME`: everything about one release, for people.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use meshrelease_wire::asm::v2 as pb;
use serde_json::Value;

use crate::api::Api;
use crate::errors::ServerResult as _;
use crate::output;

/// How long the phase history may take to read back from the change log.
const HISTORY_BUDGET: Duration = Duration::from_secs(5);

pub async fn run(api: &Api, mesh: &str, namespace: &str, name: &str) -> anyhow::Result<()> {
    let release = api.get(mesh, namespace, name).await.via(&api.server)?;
    let history = history(api, mesh, namespace, &release).await;
    print!("{}", render(&release, &history));
    Ok(())
}

/// The phases a release went through, when the service still keeps the
/// changes since its creation.
enum History {
    Phases(Vec<(String, Option<DateTime<Utc>>)>),
    NotKept(String),
}

async fn history(api: &Api, mesh: &str, namespace: &str, release: &pb::Release) -> History {
    let metadata = release.metadata.clone().unwrap_or_default();
    let current: u64 = metadata.resource_version.parse().unwrap_or(0);
    let read = async {
        // From the start of the change log, this namespace only.
        let mut stream = api.watch(mesh, Some(namespace), "0").await?;
        let mut phases: Vec<(String, Option<DateTime<Utc>>)> = Vec::new();
        while let Some(event) = stream.message().await? {
            let at: u64 = event.resource_version.parse().unwrap_or(u64::MAX);
            if let Some(seen) = event
                .release
                .as_ref()
                .filter(|r| r.metadata.as_ref().is_some_and(|m| m.uid == metadata.uid))
            {
                let phase = seen
                    .status
                    .as_ref()
                    .map(|s| s.phase.clone())
                    .unwrap_or_default();
                if phases.last().is_none_or(|(last, _)| *last != phase) {
                    let when = seen
                        .status
                        .as_ref()
                        .and_then(|s| s.update_time)
                        .and_then(|t| DateTime::<Utc>::try_from(t).ok());
                    phases.push((phase, when));
                }
            }
            if at >= current {
                break;
            }
        }
        Ok::<_, tonic::Status>(phases)
    };
    match tokio::time::timeout(HISTORY_BUDGET, read).await {
        Ok(Ok(phases)) if !phases.is_empty() => History::Phases(phases),
        Ok(Ok(_)) => History::NotKept("the service no longer keeps this release's changes".into()),
        Ok(Err(status)) if status.code() == tonic::Code::OutOfRange => {
            History::NotKept("older than the changes the service keeps".into())
        }
        Ok(Err(status)) => History::NotKept(format!("not readable: {}", status.message())),
        Err(_) => History::NotKept("too many changes to read back in time".into()),
    }
}

fn render(release: &pb::Release, history: &History) -> String {
    let metadata = release.metadata.clone().unwrap_or_default();
    let spec = release.spec.clone().unwrap_or_default();
    let status = release.status.clone().unwrap_or_default();
    let time = |t: Option<meshrelease_wire::wkt::Timestamp>| {
        t.and_then(|t| DateTime::<Utc>::try_from(t).ok())
            .map(|t| {
                format!(
                    "{} ({} ago)",
                    t.to_rfc3339_opts(SecondsFormat::Secs, true),
                    output::age(Some(t))
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let fields = [
        ("Name", metadata.name.clone()),
        ("Namespace", metadata.namespace.clone()),
        ("Mesh", metadata.mesh_id.clone()),
        ("UID", metadata.uid.clone()),
        ("Type", spec.r#type.clone()),
        ("Service", spec.service_name.clone()),
        ("Cluster", spec.cluster_id.clone()),
        ("Deployment", spec.deployment_name.clone()),
        ("Version", spec.version.clone()),
        ("Phase", status.phase.clone()),
        (
            "Generation",
            format!(
                "{} (observed {})",
                metadata.generation, status.observed_generation
            ),
        ),
        ("Resource Version", metadata.resource_version.clone()),
        ("Started", time(status.start_time)),
        ("Updated", time(status.update_time)),
    ];
    for (label, value) in fields {
        let _ = writeln!(out, "{:<18}{value}", format!("{label}:"));
    }
    let _ = writeln!(out, "Traffic:");
    let _ = writeln!(
        out,
        "  Desired:        {}",
        policy(spec.traffic_policy.as_ref())
    );
    let _ = writeln!(out, "  Applied:        {}", policy(status.traffic.as_ref()));
    if let Some(strategy) = &spec.strategy {
        out.push_str(&strategy_section(strategy, status.strategy.as_ref()));
    }

    let _ = writeln!(out, "Phase History:");
    match history {
        History::Phases(phases) => {
            let mut rows = vec![vec!["PHASE".to_owned(), "SINCE".to_owned()]];
            rows.extend(phases.iter().map(|(phase, when)| {
                vec![
                    phase.clone(),
                    when.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_else(|| "-".into()),
                ]
            }));
            out.push_str(&indent(&output::table(&rows)));
        }
        History::NotKept(why) => {
            let _ = writeln!(out, "  <{why}>");
        }
    }

    let _ = writeln!(out, "Conditions:");
    if status.conditions.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let mut rows = vec![
            ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
                .map(str::to_owned)
                .to_vec(),
        ];
        rows.extend(status.conditions.iter().map(|c| {
            vec![
                c.r#type.clone(),
                c.status.clone(),
                c.reason.clone(),
                output::age(
                    c.last_transition_time
                        .and_then(|t| DateTime::<Utc>::try_from(t).ok()),
                ),
                c.message.clone(),
            ]
        }));
        out.push_str(&indent(&output::table(&rows)));
    }

    let _ = writeln!(out, "Gray Deployments:");
    let grays: Vec<(&str, Value)> = spec
        .gray_deployments
        .iter()
        .zip(status.gray_deployments.iter())
        .map(|(gray, object)| {
            (
                gray.cluster_id.as_str(),
                serde_json::to_value(object).unwrap_or(Value::Null),
            )
        })
        .collect();
    out.push_str(&deployments(&grays));

    let _ = writeln!(out, "Original Deployment:");
    match status
        .deployment
        .as_ref()
        .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
    {
        Some(object) => out.push_str(&deployments(&[(spec.cluster_id.as_str(), object)])),
        None => {
            let _ = writeln!(out, "  <not read from {} yet>", spec.cluster_id);
        }
    }

    let _ = writeln!(out, "Objects:");
    let mut rows = vec![
        ["CLUSTER", "KIND", "NAMESPACE", "NAME", "ROLE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    rows.push(vec![
        spec.cluster_id.clone(),
        "Deployment".into(),
        metadata.namespace.clone(),
        spec.deployment_name.clone(),
        "original".into(),
    ]);
    for (cluster, object) in &grays {
        rows.push(vec![
            (*cluster).to_owned(),
            "Deployment".into(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&metadata.namespace)
                .to_owned(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or("-")
                .to_owned(),
            "gray".into(),
        ]);
    }
    for kind in ["VirtualService", "DestinationRule"] {
        rows.push(vec![
            "(Istio config cluster)".into(),
            kind.into(),
            metadata.namespace.clone(),
            format!("host {}", spec.service_name),
            "routing".into(),
        ]);
    }
    out.push_str(&indent(&output::table(&rows)));
    out
}

/// The steps, the current one marked, how the checks run, and their
/// latest results.
fn strategy_section(strategy: &pb::Strategy, status: Option<&pb::StrategyStatus>) -> String {
    let mut out = String::from("Strategy:\n");
    let current = status.map_or(0, |s| s.current_step.max(0) as usize);
    let total = strategy.steps.len();
    for (i, step) in strategy.steps.iter().enumerate() {
        let what = if let Some(w) = step.set_weight {
            format!("setWeight {w}")
        } else if let Some(pause) = &step.pause {
            if pause.duration.is_empty() {
                "pause until a resume".to_owned()
            } else {
                format!("pause {}", pause.duration)
            }
        } else if let Some(analysis) = &step.analysis {
            format!("analysis: {} passing round(s)", analysis.count)
        } else {
            "-".to_owned()
        };
        let mark = match i.cmp(&current) {
            std::cmp::Ordering::Less => "  done",
            std::cmp::Ordering::Equal => "->    ",
            std::cmp::Ordering::Greater => "      ",
        };
        let _ = writeln!(out, "  {mark} {}/{total} {what}", i + 1);
    }
    if current >= total {
        let _ = writeln!(out, "  all steps done");
    }
    let analysis = strategy.analysis.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "  Checks every {}, {} failed round(s) in a row trip onFailure ({}), onSuccess {}",
        if analysis.interval.is_empty() {
            "60s"
        } else {
            &analysis.interval
        },
        analysis.failure_limit.max(1),
        if strategy.on_failure.is_empty() {
            "rollback"
        } else {
            &strategy.on_failure
        },
        if strategy.on_success.is_empty() {
            "end"
        } else {
            &strategy.on_success
        },
    );
    if let Some(status) = status {
        if status.paused || !status.pause_reason.is_empty() {
            let _ = writeln!(out, "  Waiting:        {}", status.pause_reason);
        }
        if status.consecutive_failures > 0 {
            let _ = writeln!(
                out,
                "  Failed rounds:  {} in a row",
                status.consecutive_failures
            );
        }
        if !status.checks.is_empty() {
            let _ = writeln!(out, "  Latest checks:");
            let mut rows = vec![
                [
                    "NAME", "TYPE", "VERDICT", "VALUE", "BOUNDS", "REQUESTS", "ROUND", "MESSAGE",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for check in &status.checks {
                let bounds = match (check.min, check.max) {
                    (None, None) => "-".to_owned(),
                    (min, max) => format!(
                        "{}..{}",
                        min.map(|m| m.to_string()).unwrap_or_default(),
                        max.map(|m| m.to_string()).unwrap_or_default()
                    ),
                };
                rows.push(vec![
                    check.name.clone(),
                    check.r#type.clone(),
                    check.verdict.clone(),
                    check.value.map_or("-".into(), |v| format!("{v}")),
                    bounds,
                    check.requests.map_or("-".into(), |n| n.to_string()),
                    check.round.to_string(),
                    check.message.clone(),
                ]);
            }
            out.push_str(&indent(&indent(&output::table(&rows))));
            // What decided: each metric's query as it was sent.
            let queries: Vec<&pb::CheckResult> = status
                .checks
                .iter()
                .filter(|c| c.r#type == "metric" && !c.query.is_empty())
                .collect();
            if !queries.is_empty() {
                let _ = writeln!(out, "  Queries (as sent to Prometheus):");
                for check in queries {
                    let _ = writeln!(out, "    {}: {}", check.name, check.query);
                }
            }
        }
    }
    out
}

/// Deployments as a table: where they are and their replicas.
fn deployments(objects: &[(&str, Value)]) -> String {
    let mut rows = vec![
        [
            "CLUSTER",
            "NAMESPACE",
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for (cluster, object) in objects {
        let desired = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let count = |field: &str| object["status"][field].as_i64().unwrap_or(0);
        let text = |field: &str| object["metadata"][field].as_str().unwrap_or("-").to_owned();
        let mut row = vec![(*cluster).to_owned(), text("namespace"), text("name")];
        match object["metadata"]["deletionTimestamp"].as_str() {
            // The release deleted it: nothing of it is left to count.
            Some(deleted) => row.extend([format!("deleted {deleted}"), "-".into(), "-".into()]),
            None => row.extend([
                format!("{}/{desired}", count("readyReplicas")),
                count("updatedReplicas").to_string(),
                count("availableReplicas").to_string(),
            ]),
        }
        rows.push(row);
    }
    indent(&output::table(&rows))
}

/// A traffic policy in full: the weight, or each match rule.
fn policy(policy: Option<&pb::TrafficPolicy>) -> String {
    let Some(policy) = policy else {
        return "-".into();
    };
    if policy.r#match.is_empty() {
        return format!("weight {}% to the gray version", policy.weight.unwrap_or(0));
    }
    let rules: Vec<String> = policy
        .r#match
        .iter()
        .map(|rule| serde_json::to_string(rule).unwrap_or_default())
        .collect();
    format!(
        "requests matching any of {} to the gray version",
        rules.join(" or ")
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
