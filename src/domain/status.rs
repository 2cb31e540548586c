//! What the cluster driver records of a release after a round, and how it
//! applies: status only, never the spec. Pure: the store write
//! (`ReleaseManager::write_status`) and the planner's test world both apply
//! an update through [`StatusUpdate::apply_to`].

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::conditions::{self, ConditionChange};
use super::kinds::Phase;
use super::object::JsonObject;
use super::phase::{self, Move, Outcome};
use super::release::{Release, SavedRouting, SeenDeployment};
use super::traffic::TrafficPolicy;

/// What the cluster driver writes after a round: status only, never the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusUpdate {
    /// The phase move the round made, if any.
    pub step: Option<Move>,
    /// The generation of the spec the round carried out.
    pub observed_generation: Option<u32>,
    /// Conditions to set, by type (others stay).
    pub conditions: Vec<ConditionChange>,
    /// The traffic policy now applied.
    pub traffic: Option<TrafficPolicy>,
    /// The original Deployment as it is now.
    pub deployment: Option<Arc<JsonObject>>,
    /// What was seen of the gray Deployments.
    pub gray_seen: Option<Vec<SeenDeployment>>,
    /// The routing before this release changed it (written once).
    pub saved_routing: Option<SavedRouting>,
}

impl StatusUpdate {
    /// `current` with this update applied at `now`, or `None` when it
    /// changes nothing (so that nothing is written, no event sent, and no
    /// new round caused). A phase move the phase machine refuses is an
    /// error, with its reason.
    pub fn apply_to(
        self,
        current: &Release,
        now: DateTime<Utc>,
    ) -> Result<Option<Release>, String> {
        let mut next = current.clone();
        if let Some(step) = self.step {
            match phase::transition(current.status.phase, step, &current.traffic_policy) {
                Outcome::To(phase) => enter_phase(&mut next, phase, now),
                Outcome::AlreadyThere => {}
                Outcome::Refused(why) => return Err(why),
            }
        }
        for change in &self.conditions {
            conditions::set(&mut next.status.conditions, change, now);
        }
        if let Some(generation) = self.observed_generation {
            next.status.observed_generation = generation.min(current.generation);
        }
        if self.traffic.is_some() && self.traffic != current.status.traffic {
            next.status.traffic = self.traffic;
            next.status.traffic_time = Some(now);
        }
        if self.deployment.is_some() {
            next.status.deployment = self.deployment;
        }
        if let Some(seen) = self.gray_seen {
            next.status.gray_seen = seen;
        }
        if next.status.saved_routing.is_none() {
            next.status.saved_routing = self.saved_routing;
        }
        next.status.update_time = current.status.update_time;
        if next == *current {
            return Ok(None);
        }
        next.status.update_time = now;
        Ok(Some(next))
    }
}

/// The release enters `phase` at `now`.
pub fn enter_phase(release: &mut Release, phase: Phase, now: DateTime<Utc>) {
    release.status.phase = phase;
    release.status.phase_time = Some(now);
    release.status.update_time = now;
}
