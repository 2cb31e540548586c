//! `mrctl promote`: the step-wise canary of Flagger and Argo Rollouts, from
//! the client. Each step sets the weight, waits until the clusters apply it,
//! then holds for the interval watching for failure. A failure stops the
//! promotion (and, when asked, rolls the release back and cancels it).

use std::time::Duration;

use anyhow::bail;
use meshrelease_wire::asm::v2 as pb;

use crate::api::Api;
use crate::cli::PromoteArgs;
use crate::errors::TimedOut;
use crate::wait::{self, Outcome, Progress, Target, Watched};

pub async fn run(api: &Api, mesh: &str, namespace: &str, args: &PromoteArgs) -> anyhow::Result<()> {
    let watched = Watched {
        api,
        mesh,
        namespace,
        name: &args.name,
    };
    if args.end && args.steps.last() != Some(&100) {
        bail!(
            "--end needs the last step to be 100: only a gray version with all traffic can take over"
        );
    }
    match steps(watched, args).await {
        Ok(()) => Ok(()),
        Err(error) if args.cancel_on_failure => {
            eprintln!(
                "promotion of release {:?} stopped; rolling it back and canceling it",
                args.name
            );
            if let Err(rollback) = roll_back(watched, args.timeout).await {
                eprintln!("rolling back failed too: {rollback:#}");
            }
            // The exit code is the promotion's (1, or 2 for a timeout).
            Err(error)
        }
        Err(error) => Err(error),
    }
}

async fn steps(watched: Watched<'_>, args: &PromoteArgs) -> anyhow::Result<()> {
    let name = watched.name;
    let mut progress = Progress::new();
    reach(watched, "Running", args.timeout, &mut progress).await?;
    let count = args.steps.len();
    for (index, weight) in args.steps.iter().copied().enumerate() {
        set_weight(watched, weight, args.timeout, &mut progress).await?;
        println!(
            "step {}/{count}: {weight}% of requests go to the gray version",
            index + 1
        );
        if index + 1 < count && !args.interval.is_zero() {
            hold(watched, args.interval).await?;
        }
    }
    if args.end {
        watched.delete("end").await?;
        reach(watched, "Ended", args.timeout, &mut progress).await?;
        println!("release.asm/v2/{name} Ended: the gray version took over");
    } else {
        println!("release.asm/v2/{name} promoted");
    }
    Ok(())
}

/// Waits (within `timeout`) until the release is in `phase`.
async fn reach(
    watched: Watched<'_>,
    phase: &'static str,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let target = Target::Phase(phase);
    wait::until(watched, timeout, &target.describe(), progress, |r| {
        wait::check(&target, r)
    })
    .await?;
    Ok(())
}

/// Sends `weight` percent to the gray version and waits (within `timeout`)
/// until the clusters hold it.
async fn set_weight(
    watched: Watched<'_>,
    weight: i32,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let changed = watched.set_weight(weight).await?;
    let generation = changed.metadata.as_ref().map_or(0, |m| m.generation);
    let what = format!("apply {weight}% to the gray version");
    wait::until(watched, timeout, &what, progress, |r| {
        applied(r, weight, generation)
    })
    .await?;
    Ok(())
}

/// The weight is in the clusters: the spec of `generation` (or later) is
/// observed and the applied policy is the weight.
fn applied(release: &pb::Release, weight: i32, generation: i32) -> Outcome {
    let status = release.status.clone().unwrap_or_default();
    if status.phase != "Running" {
        return wait::check(&Target::Phase("Running"), release);
    }
    let observed = status.observed_generation >= generation;
    let traffic = status
        .traffic
        .as_ref()
        .is_some_and(|t| t.r#match.is_empty() && t.weight.unwrap_or(0) == weight);
    if observed && traffic {
        Outcome::Reached
    } else {
        Outcome::Waiting(wait::progress(release))
    }
}

/// Watches the release for `interval`; a failure meanwhile ends the hold.
async fn hold(watched: Watched<'_>, interval: Duration) -> anyhow::Result<()> {
    let mut quiet = Progress::quiet();
    let held = wait::until(
        watched,
        interval,
        "hold",
        &mut quiet,
        |r| match wait::phase(r) {
            "Running" => Outcome::Waiting(String::new()),
            _ => wait::check(&Target::Phase("Running"), r),
        },
    )
    .await;
    match held {
        // Nothing went wrong for the whole interval.
        Err(e) if e.downcast_ref::<TimedOut>().is_some() => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// Back to the original version: its weight to 100% (a cancel needs it),
/// then cancel, and wait until the gray Deployments are gone.
async fn roll_back(watched: Watched<'_>, timeout: Duration) -> anyhow::Result<()> {
    let name = watched.name;
    let release = watched.get().await?;
    let mut progress = Progress::new();
    if wait::phase(&release) == "Running" {
        set_weight(watched, 0, timeout, &mut progress).await?;
    }
    watched.delete("cancel").await?;
    reach(watched, "Canceled", timeout, &mut progress).await?;
    eprintln!("release.asm/v2/{name} Canceled: traffic is back on the original version");
    Ok(())
}
