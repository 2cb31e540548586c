//! The actions on a release that runs itself (`pause`, `resume`,
//! `promote [--full]`, `abort`, `retry`): each asks the service, which
//! answers the release as it is after (a repeat changes nothing).

use meshrelease_wire::asm::v2 as pb;

use crate::api::Api;
use crate::errors::ServerResult as _;
use crate::output;

/// Carries out `action` ("promote --full" for a full promotion) and says
/// where the release is now.
pub async fn act(
    api: &Api,
    mesh: &str,
    namespace: &str,
    name: &str,
    action: &str,
) -> anyhow::Result<()> {
    let (verb, full) = match action {
        "promote --full" => ("promote", true),
        other => (other, false),
    };
    let release = api
        .act(mesh, namespace, name, verb, full)
        .await
        .via(&api.server)?;
    let done = match action {
        "pause" => "paused",
        "resume" => "resumed",
        "promote" => "promoted",
        "promote --full" => "promoted in full",
        "abort" => "aborted",
        "retry" => "retried",
        other => other,
    };
    println!(
        "{} {done}: {}",
        output::qualified(&release),
        where_it_is(&release)
    );
    Ok(())
}

/// The phase, the step and why it waits, in a few words.
pub fn where_it_is(release: &pb::Release) -> String {
    let status = release.status.clone().unwrap_or_default();
    let mut out = status.phase.clone();
    let step = output::step(release);
    if step != "-" {
        out.push_str(&format!(", step {step}"));
    }
    if let Some(strategy) = &status.strategy
        && !strategy.pause_reason.is_empty()
    {
        out.push_str(&format!(" ({})", strategy.pause_reason));
    }
    out
}
