//! A strategy's decision as a write: the status it reached, the traffic
//! policy its steps set (a change of the spec, so the generation moves and
//! the driver applies it), a phase move, and conditions, all in one write
//! so that the step is stored before the traffic it implies is applied.

use chrono::{DateTime, Utc};

use super::Decision;
use crate::domain::conditions;
use crate::domain::phase::{self, Outcome};
use crate::domain::release::Release;
use crate::domain::status::enter_phase;

/// A decision, to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate(pub Decision);

impl ProgressUpdate {
    /// `current` with the decision applied at `now`; `None` when it changes
    /// nothing. A phase move the phase machine refuses is an error, with
    /// its reason.
    pub fn apply_to(
        &self,
        current: &Release,
        now: DateTime<Utc>,
    ) -> Result<Option<Release>, String> {
        let decision = &self.0;
        let mut next = current.clone();
        if let Some(policy) = &decision.policy
            && *policy != current.traffic_policy
        {
            next.traffic_policy = policy.clone();
            next.generation = current.generation + 1;
        }
        next.status.strategy = Some(decision.status.clone());
        if let Some(step) = decision.step {
            // With the policy the decision set: an end needs the gray
            // version at 100, which the same write gives it.
            match phase::transition(current.status.phase, step, &next.traffic_policy) {
                Outcome::To(phase) => enter_phase(&mut next, phase, now),
                Outcome::AlreadyThere => {}
                Outcome::Refused(why) => return Err(why),
            }
        }
        for change in &decision.conditions {
            conditions::set(&mut next.status.conditions, change, now);
        }
        next.status.update_time = current.status.update_time;
        if next == *current {
            return Ok(None);
        }
        next.status.update_time = now;
        Ok(Some(next))
    }
}
