//! A strategy's webhooks, called as Flagger calls them, so that its users'
//! gates and load testers work unchanged: an HTTP POST of the release's
//! name, namespace, phase, checksum, the webhook's type and metadata (and
//! ours: the mesh, the uid, the step and the weight); a 2xx answer within
//! the webhook's timeout is yes, anything else (another status, a timeout,
//! no connection) is no.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::domain::Release;
use crate::domain::strategy::{CheckResult, Verdict, Webhook, WebhookType};
use crate::domain::traffic::TrafficPolicy;
use crate::metrics::{DriverMetrics, WebhookLabels};

/// How a webhook answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Yes,
    No,
    Timeout,
    Error,
}

impl Answer {
    fn label(self) -> &'static str {
        match self {
            Answer::Yes => "yes",
            Answer::No => "no",
            Answer::Timeout => "timeout",
            Answer::Error => "error",
        }
    }
}

/// The webhook client: one connection pool, bounded by each webhook's own
/// timeout (never more than 60 s, as validation holds them).
#[derive(Clone)]
pub struct Webhooks {
    http: reqwest::Client,
    metrics: DriverMetrics,
}

impl Webhooks {
    pub fn new(metrics: DriverMetrics) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("meshrelease/", env!("CARGO_PKG_VERSION")))
            // A webhook's answer is its status: a redirect elsewhere is
            // not followed (it could leave the allowed prefixes).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Webhooks { http, metrics }
    }

    /// Calls `webhook` for `release`, saying `message` when the webhook
    /// hears of an event; answers the check result (Pass for yes, Fail for
    /// anything else).
    pub async fn call(
        &self,
        webhook: &Webhook,
        release: &Release,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> CheckResult {
        let mut metadata = webhook.metadata.clone();
        if let Some(message) = message {
            metadata.insert("eventMessage".into(), message.to_owned());
            metadata.insert("eventType".into(), "Normal".into());
        }
        let step = release
            .status
            .strategy
            .as_ref()
            .map_or(0, |s| s.current_step);
        let weight = match &release.traffic_policy {
            TrafficPolicy::Weight(w) => i64::from(*w),
            TrafficPolicy::Match(_) => -1,
        };
        let payload = json!({
            "name": release.name,
            "namespace": release.namespace,
            "phase": release.status.phase.as_str(),
            "checksum": checksum(release),
            "type": webhook.kind.as_str(),
            "metadata": metadata,
            "meshId": release.mesh_id,
            "uid": release.uid.to_string(),
            "step": step,
            "weight": weight,
        });
        let sent = self
            .http
            .post(&webhook.url)
            .timeout(webhook.timeout)
            .json(&payload)
            .send()
            .await;
        let (answer, said) = match sent {
            Ok(response) if response.status().is_success() => (
                Answer::Yes,
                format!("answered {}", response.status().as_u16()),
            ),
            Ok(response) => (
                Answer::No,
                format!("answered {}", response.status().as_u16()),
            ),
            Err(e) if e.is_timeout() => (
                Answer::Timeout,
                format!(
                    "no answer within {}",
                    crate::domain::durations::format(webhook.timeout)
                ),
            ),
            Err(e) => (Answer::Error, format!("no answer: {}", error_chain(&e))),
        };
        self.metrics
            .webhook_calls
            .get_or_create(&WebhookLabels {
                r#type: webhook.kind.as_str().into(),
                result: answer.label().into(),
            })
            .inc();
        let yes = answer == Answer::Yes;
        let meaning = match (webhook.kind, yes) {
            (WebhookType::Rollback, true) => "yes: roll back",
            (WebhookType::Rollback, false) => "no rollback asked",
            (_, true) => "yes",
            (_, false) => "no",
        };
        CheckResult {
            name: webhook.name.clone(),
            kind: webhook.kind.as_str().to_owned(),
            verdict: if yes { Verdict::Pass } else { Verdict::Fail },
            value: None,
            min: None,
            max: None,
            query: webhook.url.clone(),
            requests: None,
            time: now,
            message: format!("{said} ({meaning})"),
            round: 0,
        }
    }
}

/// Changes with the release's spec generation, as Flagger's checksum does
/// with the canary's spec.
fn checksum(release: &Release) -> String {
    let digest = Sha256::digest(format!("{}/{}", release.uid, release.generation));
    hex::encode(&digest[..8])
}

/// An error with its causes, for a check's message (no secrets are in it:
/// the URL is the configuration's).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
