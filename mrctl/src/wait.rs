//! Waiting for a release, as `kubectl wait` and `kubectl rollout status` do:
//! progress while it moves (a line rewritten in place on a terminal, a line
//! per change otherwise), and an outcome a pipeline can branch on.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::bail;
use meshrelease_wire::asm::v2 as pb;

use crate::api::Api;
use crate::errors::{ServerError, ServerResult as _, TimedOut};
use crate::follow::{self, Followed, Follower};
use crate::output;

pub const PHASES: [&str; 8] = [
    "Pending",
    "Deploying",
    "Running",
    "Ending",
    "Ended",
    "Canceling",
    "Canceled",
    "Failed",
];

/// What `wait --for` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Phase(&'static str),
    /// A condition type whose status is "True".
    Condition(String),
    Deleted,
}

impl Target {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text == "delete" {
            return Ok(Self::Deleted);
        }
        match text.split_once('=') {
            Some(("phase", phase)) => PHASES
                .iter()
                .find(|p| p.eq_ignore_ascii_case(phase))
                .map(|p| Self::Phase(p))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--for: {phase:?} is not a phase: one of {}",
                        PHASES.join(", ")
                    )
                }),
            Some(("condition", kind)) if !kind.is_empty() => Ok(Self::Condition(kind.to_owned())),
            _ => match PHASES.iter().find(|p| p.eq_ignore_ascii_case(text)) {
                Some(phase) => bail!(
                    "--for must be phase=PHASE, condition=TYPE or delete, not {text:?} (did you mean phase={phase}?)"
                ),
                None => bail!("--for must be phase=PHASE, condition=TYPE or delete, not {text:?}"),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Phase(phase) => format!("be {phase}"),
            Self::Condition(kind) => format!("have {kind}=True"),
            Self::Deleted => "be deleted".to_owned(),
        }
    }
}

/// Where a release stands against what is awaited.
pub enum Outcome {
    Reached,
    /// It can no longer get there (it failed, or is over).
    Impossible(String),
    /// Still on the way: what to show meanwhile.
    Waiting(String),
}

/// Whether `from` can still become `to` by the phase machine.
pub fn reachable(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let next: &[&str] = match from {
        "Pending" => &[
            "Deploying",
            "Running",
            "Ending",
            "Ended",
            "Canceling",
            "Canceled",
            "Failed",
        ],
        "Deploying" => &[
            "Running",
            "Ending",
            "Ended",
            "Canceling",
            "Canceled",
            "Failed",
        ],
        "Running" => &["Ending", "Ended", "Canceling", "Canceled", "Failed"],
        "Ending" => &["Ended", "Failed"],
        "Canceling" => &["Canceled", "Failed"],
        "Failed" => &["Canceling", "Canceled"],
        _ => &[],
    };
    next.contains(&to)
}

pub fn phase(release: &pb::Release) -> &str {
    release.status.as_ref().map_or("", |s| s.phase.as_str())
}

/// Why a release failed, in the service's words.
pub fn failure(release: &pb::Release) -> String {
    let conditions = release
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .iter()
        .find(|c| c.r#type == "Failed" && c.status == "True")
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c.status == "False" && !c.message.is_empty())
        })
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "no reason given".to_owned())
}

pub fn check(target: &Target, release: &pb::Release) -> Outcome {
    let now = phase(release);
    let name = release.metadata.as_ref().map_or("", |m| m.name.as_str());
    let reached = match target {
        Target::Phase(phase) => *phase == now,
        Target::Condition(kind) => release.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == *kind && c.status == "True")
        }),
        Target::Deleted => false,
    };
    if reached {
        return Outcome::Reached;
    }
    let possible = match target {
        Target::Phase(phase) => reachable(now, phase),
        Target::Condition(_) => !matches!(now, "Ended" | "Canceled" | "Failed"),
        Target::Deleted => true,
    };
    if !possible {
        return Outcome::Impossible(match now {
            "Failed" => format!("release {name:?} failed ({})", failure(release)),
            _ => format!(
                "release {name:?} is {now}: it cannot {} any more",
                target.describe()
            ),
        });
    }
    Outcome::Waiting(progress(release))
}

/// `Deploying: 1 of 3 gray replicas ready`, and why it waits when it says.
pub fn progress(release: &pb::Release) -> String {
    let now = phase(release);
    let mut text = match now {
        "Pending" | "Deploying" => {
            let (ready, desired) = output::gray_replicas(release);
            format!("{now}: {ready} of {desired} gray replicas ready")
        }
        _ => format!(
            "{now}: traffic {}",
            output::traffic(release.status.as_ref().and_then(|s| s.traffic.as_ref()))
        ),
    };
    if let Some(blocked) = release.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.status == "False" && !c.message.is_empty())
    }) {
        text.push_str(&format!(" ({}: {})", blocked.r#type, blocked.message));
    }
    text
}

/// Shows progress on standard output: rewritten in place on a terminal,
/// one line per change otherwise.
pub struct Progress {
    terminal: bool,
    last: String,
    quiet: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
            last: String::new(),
            quiet: false,
        }
    }

    /// Shows nothing (while holding a promote step).
    pub fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::new()
        }
    }

    pub fn show(&mut self, line: &str) {
        if self.quiet || line == self.last {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = if self.terminal {
            write!(out, "\r\x1b[K{line}")
        } else {
            writeln!(out, "{line}")
        };
        let _ = out.flush();
        self.last = line.to_owned();
    }

    /// Ends an in-place line before other output.
    pub fn finish(&mut self) {
        if self.terminal && !self.last.is_empty() {
            println!();
            self.last.clear();
        }
    }
}

/// One release, and the service that has it.
#[derive(Clone, Copy)]
pub struct Watched<'a> {
    pub api: &'a Api,
    pub mesh: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Watched<'_> {
    /// The release as it is now.
    pub async fn get(&self) -> Result<pb::Release, ServerError> {
        self.api
            .get(self.mesh, self.namespace, self.name)
            .await
            .via(&self.api.server)
    }

    /// Sends `weight` percent of requests to the gray version.
    pub async fn set_weight(&self, weight: i32) -> Result<pb::Release, ServerError> {
        let policy = pb::TrafficPolicy {
            weight: Some(weight),
            r#match: Vec::new(),
        };
        self.api
            .set_traffic(self.mesh, self.namespace, self.name, policy, false)
            .await
            .via(&self.api.server)
    }

    /// Ends or cancels the release (`action`).
    pub async fn delete(&self, action: &str) -> Result<pb::Release, ServerError> {
        self.api
            .delete(self.mesh, self.namespace, self.name, action)
            .await
            .via(&self.api.server)
    }
}

/// Follows the release until `decide` says it is reached (the release then)
/// or impossible (an error), or `timeout` passes (a `TimedOut` error).
pub async fn until(
    watched: Watched<'_>,
    timeout: Duration,
    what: &str,
    progress: &mut Progress,
    decide: impl Fn(&pb::Release) -> Outcome,
) -> anyhow::Result<pb::Release> {
    let Watched {
        api,
        mesh,
        namespace,
        name,
    } = watched;
    let mut last_seen = String::from("not seen yet");
    let watched = async {
        let mut follower = Follower::new(api, mesh, Some(namespace));
        loop {
            let event = match follower.next().await? {
                Followed::Event(event) => *event,
                Followed::Lost { since, why } => {
                    progress.finish();
                    eprintln!("{}", follow::lost_line(since, &why));
                    continue;
                }
                Followed::Back { since } => {
                    eprintln!("{}", follow::back_line(since));
                    continue;
                }
                Followed::Restarted => continue,
            };
            let Some(release) = event.release else {
                continue;
            };
            if release.metadata.as_ref().is_none_or(|m| m.name != name) {
                continue;
            }
            if event.r#type == "DELETED" {
                progress.finish();
                bail!("release {name:?} was deleted");
            }
            match decide(&release) {
                Outcome::Reached => return Ok(release),
                Outcome::Impossible(why) => {
                    progress.finish();
                    bail!(why)
                }
                Outcome::Waiting(line) => {
                    progress.show(&format!("Waiting for release {name:?} to {what}: {line}"));
                    last_seen = line;
                }
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, watched).await;
    progress.finish();
    match outcome {
        Ok(result) => result,
        Err(_) => Err(TimedOut(format!(
            "after {} waiting for release {name:?} to {what} (last seen: {last_seen})",
            seconds(timeout)
        ))
        .into()),
    }
}

/// `mrctl wait`.
pub async fn run(
    api: &Api,
    mesh: &str,
    namespace: &str,
    name: &str,
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<()> {
    let found = api.find(mesh, namespace, name).await.via(&api.server)?;
    if found.is_none() {
        if *target == Target::Deleted {
            println!("release.asm/v2/{name} deleted");
            return Ok(());
        }
        bail!("release {name:?} not found in mesh {mesh:?}, namespace {namespace:?}");
    }
    let mut progress = Progress::new();
    let watched = Watched {
        api,
        mesh,
        namespace,
        name,
    };
    let waited = until(watched, timeout, &target.describe(), &mut progress, |r| {
        check(target, r)
    })
    .await;
    match waited {
        Ok(_) => {
            println!("release.asm/v2/{name} condition met");
            Ok(())
        }
        // Waiting for a deletion ends well when the release goes.
        Err(e) if *target == Target::Deleted && e.to_string().ends_with("was deleted") => {
            println!("release.asm/v2/{name} deleted");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

pub fn seconds(duration: Duration) -> String {
    let s = duration.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s}s")
    } else {
        format!("{s:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_reads_phases_conditions_and_delete() {
        assert_eq!(
            Target::parse("phase=running").unwrap(),
            Target::Phase("Running")
        );
        assert_eq!(
            Target::parse("condition=GrayReady").unwrap(),
            Target::Condition("GrayReady".into())
        );
        assert_eq!(Target::parse("delete").unwrap(), Target::Deleted);
        for bad in ["phase=Done", "Running", "condition=", "phase"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_phase_behind_or_off_the_path_cannot_be_reached() {
        assert!(reachable("Pending", "Running"));
        assert!(reachable("Running", "Ended"));
        assert!(!reachable("Running", "Deploying"));
        assert!(!reachable("Failed", "Running"));
        assert!(reachable("Failed", "Canceled"));
        assert!(!reachable("Ended", "Canceled"));
        assert!(!reachable("Canceling", "Ended"));
    }
}
