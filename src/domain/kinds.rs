//! The words a release is classified by: its type and its phase. A leaf.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseType {
    Canary,
    BlueGreen,
}

impl ReleaseType {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseType::Canary => "canary",
            ReleaseType::BlueGreen => "blue-green",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "canary" => Some(ReleaseType::Canary),
            "blue-green" => Some(ReleaseType::BlueGreen),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Deploying,
    Running,
    Ending,
    Ended,
    Canceling,
    Canceled,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Deploying,
        Phase::Running,
        Phase::Ending,
        Phase::Ended,
        Phase::Canceling,
        Phase::Canceled,
        Phase::Failed,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Deploying => "Deploying",
            Phase::Running => "Running",
            Phase::Ending => "Ending",
            Phase::Ended => "Ended",
            Phase::Canceling => "Canceling",
            Phase::Canceled => "Canceled",
            Phase::Failed => "Failed",
        }
    }

    /// An active release holds its service: no second release may start on
    /// it. Only an ended or canceled release is over.
    pub fn is_active(self) -> bool {
        match self {
            Phase::Pending
            | Phase::Deploying
            | Phase::Running
            | Phase::Ending
            | Phase::Canceling
            // Its gray Deployments and routing stay until it is canceled.
            | Phase::Failed => true,
            Phase::Ended | Phase::Canceled => false,
        }
    }

    /// Whether the release still goes forward in this phase (and so can
    /// fail), as opposed to being cleaned up or over.
    pub fn goes_forward(self) -> bool {
        match self {
            Phase::Pending | Phase::Deploying | Phase::Running => true,
            Phase::Failed | Phase::Ending | Phase::Ended | Phase::Canceling | Phase::Canceled => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_phases_read_back_what_they_write() {
        for t in [ReleaseType::Canary, ReleaseType::BlueGreen] {
            assert_eq!(ReleaseType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ReleaseType::Canary.as_str(), "canary");
        assert_eq!(ReleaseType::BlueGreen.as_str(), "blue-green");
        for other in ["", "Canary", "bluegreen", "blue_green"] {
            assert_eq!(ReleaseType::parse(other), None, "{other:?}");
        }
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("running"), None);
        let over: Vec<Phase> = Phase::ALL.into_iter().filter(|p| !p.is_active()).collect();
        assert_eq!(over, [Phase::Ended, Phase::Canceled]);
        let forward: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| p.goes_forward())
            .collect();
        assert_eq!(forward, [Phase::Pending, Phase::Deploying, Phase::Running]);
    }
}
