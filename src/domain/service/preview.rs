//! A dry run's answer: what the next round would change. The gray
//! Deployments always; with the release's clusters connected, also the
//! VirtualService and DestinationRule as they would become, planned from
//! what the clusters hold now (read, never written) and each write tried as
//! the cluster's own server-side dry run, so that an admission webhook, a
//! quota or another field manager shows before anything changes.

use super::ReleaseManager;
use crate::domain::change::{Preview, PreviewedChange};
use crate::domain::kinds::Phase;
use crate::domain::mesh::Mesh;
use crate::domain::phase::Move;
use crate::domain::plan::{self, Placement};
use crate::domain::release::Release;

impl ReleaseManager {
    /// `release` with its preview, for a dry-run answer.
    pub(super) async fn with_plan(&self, mesh: &Mesh, mut release: Release) -> Release {
        release.status.plan = self.preview(mesh, &release).await;
        release
    }

    async fn preview(&self, mesh: &Mesh, release: &Release) -> Preview {
        // Without the clusters: the gray Deployments, untried.
        let untried = |message: String| Preview {
            changes: plan::preview(release)
                .into_iter()
                .map(|change| PreviewedChange {
                    change,
                    dry_run: None,
                })
                .collect(),
            message,
        };
        let Some(clusters) = self.clusters.as_ref() else {
            return untried(
                "routing not planned: this service has no clusters connected; the gray \
                 Deployments only"
                    .into(),
            );
        };
        if let Some(cluster) = self.unconnected_cluster(mesh, release) {
            return untried(format!(
                "routing not planned: cluster {cluster} is not connected to this service; the \
                 gray Deployments only, not tried in any cluster"
            ));
        }
        let placement = Placement::for_release(mesh, release);
        let observed = clusters.observe(release, &placement, true).await;
        if !observed.unreachable.is_empty() {
            return untried(format!(
                "routing not planned: cluster(s) {} did not answer; the gray Deployments only, \
                 not tried in any cluster",
                observed.unreachable.join(", ")
            ));
        }
        let mut planned = plan::plan(release, &observed, &placement);
        if planned.changes.is_empty() && planned.step == Some(Move::StartDeploying) {
            // A pending release's first round only saves the routing as its
            // owners left it and moves to Deploying; the round after it
            // writes. That one is what a person wants to see.
            let mut deploying = release.clone();
            deploying.status.phase = Phase::Deploying;
            deploying.status.saved_routing = planned.saved_routing.take();
            planned = plan::plan(&deploying, &observed, &placement);
        }
        let mut changes = Vec::with_capacity(planned.changes.len());
        for change in planned.changes {
            let dry_run = clusters.try_out(&change).await.map_err(|e| e.to_string());
            changes.push(PreviewedChange {
                change,
                dry_run: Some(dry_run),
            });
        }
        let refused = changes
            .iter()
            .filter(|c| matches!(c.dry_run, Some(Err(_))))
            .count();
        let message = match (changes.is_empty(), refused) {
            (true, _) => "nothing to change: the clusters already hold what the next round would write".to_owned(),
            (false, 0) => "planned from what the clusters hold now; every change was accepted by its cluster's own dry run (dryRun=All), nothing was written".to_owned(),
            (false, n) => format!(
                "planned from what the clusters hold now; {n} of {} change(s) refused by their cluster's own dry run (dryRun=All): see each one's dryRun; nothing was written",
                changes.len()
            ),
        };
        Preview { changes, message }
    }
}
