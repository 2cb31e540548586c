//! The phases of a release as one state machine: every move a client or the
//! cluster driver may make is in [`transition`], and nowhere else.
//!
//! ```text
//!  Pending --start--> Deploying --gray ready--> Running --end (gray 100%)--> Ending --done--> Ended
//!     |                   |                        |
//!     |                   +--fail--> Failed <--fail+
//!     |                   |            |
//!     +--cancel--> Canceled           cancel (also from Deploying, or Running with original 100%)
//!                         ^            v
//!                         +--done-- Canceling
//! ```
//!
//! A cancel from `Pending` needs no cluster work (the driver writes
//! `Deploying` before it changes anything), so it ends at once.

use super::kinds::Phase;
use super::traffic::TrafficPolicy;

/// What moves a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// A client: `DELETE ?action=end`.
    End,
    /// A client: `DELETE ?action=cancel`.
    Cancel,
    /// The driver: the checks passed, it starts changing the clusters.
    StartDeploying,
    /// The driver: every gray Deployment is ready.
    GrayReady,
    /// The driver: the release cannot go on (not ready in time, refused).
    Fail,
    /// The driver: the end or cancel is carried out in the clusters.
    Finish,
    /// A client (`:retry`): a release its strategy rolled back runs again.
    Retry,
}

impl Move {
    pub const ALL: [Move; 7] = [
        Move::End,
        Move::Cancel,
        Move::StartDeploying,
        Move::GrayReady,
        Move::Fail,
        Move::Finish,
        Move::Retry,
    ];
}

/// The answer to a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The release goes to this phase.
    To(Phase),
    /// A retried end or cancel of a release that already did it: nothing
    /// changes, and the client is answered as if it had.
    AlreadyThere,
    /// Not allowed now; the message says what to do first.
    Refused(String),
}

/// The one transition function. `policy` is the release's traffic policy:
/// end and cancel depend on who holds the traffic.
pub fn transition(phase: Phase, step: Move, policy: &TrafficPolicy) -> Outcome {
    use Outcome::{AlreadyThere, Refused, To};
    use Phase::{Canceled, Canceling, Deploying, Ended, Ending, Failed, Pending, Running};
    match (step, phase) {
        (Move::End, Running) if policy.gray_holds_all() => To(Ending),
        (Move::End, Running) => Refused(
            "the gray version must hold all traffic before the release can end: set spec.trafficPolicy to weight 100 first".into(),
        ),
        (Move::End, Ending | Ended) => AlreadyThere,
        (Move::End, Pending | Deploying) => Refused(format!(
            "release is {}: it can end once it is Running with weight 100 (or cancel it)",
            phase.as_str()
        )),
        (Move::End, Failed) => {
            Refused("release has failed: cancel it to clean up; it cannot end".into())
        }
        (Move::End, Canceling | Canceled) => Refused(format!(
            "release is {}: it can no longer end",
            phase.as_str()
        )),

        (Move::Cancel, Pending) => To(Canceled),
        (Move::Cancel, Deploying | Failed) => To(Canceling),
        (Move::Cancel, Running) if policy.original_holds_all() => To(Canceling),
        (Move::Cancel, Running) => Refused(
            "a Running release is canceled only once the original version holds all traffic (from Deploying or Failed it cancels at once): move all traffic to the original first (spec.trafficPolicy {\"weight\": 0}; `mrctl traffic NAME --takeover original`; the console's \"All to original\")".into(),
        ),
        (Move::Cancel, Canceling | Canceled) => AlreadyThere,
        (Move::Cancel, Ending | Ended) => Refused(format!(
            "release is {}: it can no longer be canceled",
            phase.as_str()
        )),

        (Move::StartDeploying, Pending) => To(Deploying),
        (Move::GrayReady, Deploying) => To(Running),
        (Move::Fail, Pending | Deploying | Running) => To(Failed),
        (Move::Finish, Ending) => To(Ended),
        (Move::Finish, Canceling) => To(Canceled),
        (Move::Retry, Failed) => To(Running),
        (Move::Retry, Pending | Deploying | Running | Ending | Ended | Canceling | Canceled) => {
            Refused(format!(
                "release is {}: only a release its strategy rolled back can be retried",
                phase.as_str()
            ))
        }
        (
            Move::StartDeploying | Move::GrayReady | Move::Fail | Move::Finish,
            Pending | Deploying | Running | Ending | Ended | Canceling | Canceled | Failed,
        ) => Refused(format!(
            "the driver cannot {step:?} a release that is {}",
            phase.as_str()
        )),
    }
}

/// Whether the traffic policy may change in `phase` (on create it always may).
pub fn policy_may_change(phase: Phase) -> bool {
    phase == Phase::Running
}

/// Whether the gray Deployment templates may change in `phase`.
pub fn templates_may_change(phase: Phase) -> bool {
    matches!(phase, Phase::Pending | Phase::Deploying | Phase::Running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::*;

    #[test]
    fn templates_change_while_the_release_is_active_and_policies_while_running() {
        for phase in [
            Pending, Deploying, Running, Failed, Ending, Ended, Canceling, Canceled,
        ] {
            assert_eq!(
                templates_may_change(phase),
                matches!(phase, Pending | Deploying | Running),
                "{phase:?}"
            );
            assert_eq!(policy_may_change(phase), phase == Running, "{phase:?}");
        }
    }

    /// Every move from every phase, with both traffic extremes and a split:
    /// the allowed ones are exactly these.
    #[test]
    fn every_allowed_move_is_listed_and_nothing_else_is_allowed() {
        let policies = [
            TrafficPolicy::Weight(0),
            TrafficPolicy::Weight(30),
            TrafficPolicy::Weight(100),
            TrafficPolicy::Match(Vec::new()),
        ];
        let allowed = |phase: Phase, step: Move, policy: &TrafficPolicy| -> Option<Outcome> {
            Some(match (step, phase) {
                (Move::End, Running) if policy.gray_holds_all() => Outcome::To(Ending),
                (Move::End, Ending | Ended) => Outcome::AlreadyThere,
                (Move::Cancel, Pending) => Outcome::To(Canceled),
                (Move::Cancel, Deploying | Failed) => Outcome::To(Canceling),
                (Move::Cancel, Running) if policy.original_holds_all() => Outcome::To(Canceling),
                (Move::Cancel, Canceling | Canceled) => Outcome::AlreadyThere,
                (Move::StartDeploying, Pending) => Outcome::To(Deploying),
                (Move::GrayReady, Deploying) => Outcome::To(Running),
                (Move::Fail, Pending | Deploying | Running) => Outcome::To(Failed),
                (Move::Finish, Ending) => Outcome::To(Ended),
                (Move::Finish, Canceling) => Outcome::To(Canceled),
                (Move::Retry, Failed) => Outcome::To(Running),
                _ => return None,
            })
        };
        let mut checked = 0;
        for phase in Phase::ALL {
            for step in Move::ALL {
                for policy in &policies {
                    let got = transition(phase, step, policy);
                    match allowed(phase, step, policy) {
                        Some(expected) => {
                            assert_eq!(got, expected, "{phase:?} {step:?} {policy:?}")
                        }
                        None => assert!(
                            matches!(&got, Outcome::Refused(m) if !m.is_empty()),
                            "{phase:?} {step:?} {policy:?} should be refused, got {got:?}"
                        ),
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 8 * 7 * 4);
    }

    #[test]
    fn refusals_say_what_to_do_first() {
        let Outcome::Refused(m) = transition(Running, Move::End, &TrafficPolicy::Weight(30)) else {
            panic!()
        };
        assert!(m.contains("weight 100"), "{m}");
        let Outcome::Refused(m) = transition(Running, Move::Cancel, &TrafficPolicy::Weight(30))
        else {
            panic!()
        };
        assert!(m.contains(r#"{"weight": 0}"#), "{m}");
        assert!(m.contains("--takeover original"), "{m}");
    }

    #[test]
    fn a_finished_release_holds_nothing_and_changes_nothing() {
        for phase in [Ended, Canceled] {
            assert!(!phase.is_active());
            assert!(!policy_may_change(phase));
            assert!(!templates_may_change(phase));
        }
        assert!(
            Failed.is_active(),
            "a failed release keeps its service until canceled"
        );
        assert!(policy_may_change(Running));
        assert!(!policy_may_change(Pending));
    }
}
