//! What the commands print: kubectl-style tables, and the API's own JSON
//! (proto3 JSON, as REST clients see it) or its YAML rendering.

use chrono::{DateTime, Utc};
use meshrelease_wire::asm::v2 as pb;
use serde::Serialize;
use serde_json::Value;

/// Columns padded to their widest cell and three spaces apart, as kubectl
/// prints them; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

pub fn yaml<T: Serialize>(value: &T) -> anyhow::Result<String> {
    // Through JSON first: the wire types' serde form is their proto3 JSON.
    let value = serde_json::to_value(value)?;
    Ok(serde_yaml_ng::to_string(&value)?)
}

/// The columns of `mrctl get`.
pub fn header(wide: bool, namespaces: bool) -> Vec<String> {
    let mut row = Vec::new();
    if namespaces {
        row.push("NAMESPACE");
    }
    row.extend([
        "NAME", "SERVICE", "TYPE", "VERSION", "PHASE", "TRAFFIC", "STEP", "WAITING", "AGE",
    ]);
    if wide {
        row.extend(["GRAY-READY", "CLUSTER", "DEPLOYMENT", "GENERATION"]);
    }
    row.into_iter().map(str::to_owned).collect()
}

pub fn row(release: &pb::Release, wide: bool, namespaces: bool) -> Vec<String> {
    let metadata = release.metadata.clone().unwrap_or_default();
    let spec = release.spec.clone().unwrap_or_default();
    let status = release.status.clone().unwrap_or_default();
    let mut row = Vec::new();
    if namespaces {
        row.push(metadata.namespace.clone());
    }
    row.extend([
        metadata.name.clone(),
        spec.service_name.clone(),
        spec.r#type.clone(),
        spec.version.clone(),
        status.phase.clone(),
        traffic(status.traffic.as_ref()),
        step(release),
        pause_reason(release),
        age(start_time(release)),
    ]);
    if wide {
        let (ready, desired) = gray_replicas(release);
        let gray = if gray_deleted(release) {
            "deleted".to_owned()
        } else {
            format!("{ready}/{desired}")
        };
        row.extend([
            gray,
            spec.cluster_id.clone(),
            spec.deployment_name.clone(),
            format!("{}/{}", status.observed_generation, metadata.generation),
        ]);
    }
    row
}

/// `release.asm/v2/NAME`, as kubectl names objects.
pub fn qualified(release: &pb::Release) -> String {
    format!(
        "release.asm/v2/{}",
        release.metadata.as_ref().map_or("", |m| m.name.as_str())
    )
}

/// The strategy's step as `3/7` (the current one of all; all done: `7/7`),
/// or `-` without a strategy.
pub fn step(release: &pb::Release) -> String {
    let total = release
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .map_or(0, |s| s.steps.len());
    if total == 0 {
        return "-".into();
    }
    let current = release
        .status
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .map_or(0, |s| s.current_step.max(0) as usize);
    format!("{}/{total}", (current + 1).min(total))
}

/// Why a strategy does not advance, as one word (`HeldByWebhook:gate`),
/// or `-`.
pub fn pause_reason(release: &pb::Release) -> String {
    release
        .status
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .map(|s| s.pause_reason.replace(' ', ""))
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// A traffic policy in a few characters: `20%`, or `match (2 rules)`.
pub fn traffic(policy: Option<&pb::TrafficPolicy>) -> String {
    match policy {
        None => "-".to_owned(),
        Some(policy) if !policy.r#match.is_empty() => match policy.r#match.len() {
            1 => "match (1 rule)".to_owned(),
            n => format!("match ({n} rules)"),
        },
        Some(policy) => format!("{}%", policy.weight.unwrap_or(0)),
    }
}

pub fn start_time(release: &pb::Release) -> Option<DateTime<Utc>> {
    release
        .status
        .as_ref()
        .and_then(|s| s.start_time)
        .and_then(|t| DateTime::<Utc>::try_from(t).ok())
}

/// Ready and desired replicas over every gray Deployment, as observed in the
/// clusters (a Deployment not seen yet counts as none ready).
pub fn gray_replicas(release: &pb::Release) -> (i64, i64) {
    let mut ready = 0;
    let mut desired = 0;
    let Some(status) = &release.status else {
        return (0, 0);
    };
    for deployment in &status.gray_deployments {
        let object = serde_json::to_value(deployment).unwrap_or(Value::Null);
        desired += object["spec"]["replicas"].as_i64().unwrap_or(1);
        ready += object["status"]["readyReplicas"].as_i64().unwrap_or(0);
    }
    (ready, desired)
}

/// Whether the release deleted its gray Deployments (a cancel): the
/// service marks each with `metadata.deletionTimestamp`.
pub fn gray_deleted(release: &pb::Release) -> bool {
    let Some(status) = &release.status else {
        return false;
    };
    !status.gray_deployments.is_empty()
        && status.gray_deployments.iter().all(|deployment| {
            let object = serde_json::to_value(deployment).unwrap_or(Value::Null);
            object["metadata"]["deletionTimestamp"].is_string()
        })
}

/// An age as kubectl writes it: `45s`, `3m20s`, `90m`, `5h`, `12d`.
pub fn age(since: Option<DateTime<Utc>>) -> String {
    let Some(since) = since else {
        return "<unknown>".to_owned();
    };
    let seconds = (Utc::now() - since).num_seconds().max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    match () {
        () if seconds < 120 => format!("{seconds}s"),
        () if minutes < 10 => format!("{minutes}m{}s", seconds % 60),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 => format!("{hours}h{}m", minutes % 60),
        () if hours < 48 => format!("{hours}h"),
        () if days < 8 => format!("{days}d{}h", hours % 24),
        () => format!("{days}d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_as_kubectl_prints_them() {
        let rows = vec![
            vec!["NAME".to_owned(), "PHASE".to_owned(), "AGE".to_owned()],
            vec![
                "reviews-v2".to_owned(),
                "Running".to_owned(),
                "5s".to_owned(),
            ],
        ];
        assert_eq!(
            table(&rows),
            "NAME         PHASE     AGE\nreviews-v2   Running   5s\n"
        );
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let ago = |s: i64| age(Some(Utc::now() - chrono::Duration::seconds(s)));
        assert_eq!(ago(45), "45s");
        assert_eq!(ago(200), "3m20s");
        assert_eq!(ago(90 * 60), "90m");
        assert_eq!(ago(5 * 3600 + 60), "5h1m");
        assert_eq!(ago(30 * 3600), "30h");
        assert_eq!(ago(20 * 86400), "20d");
        assert_eq!(age(None), "<unknown>");
    }
}
