//! Who may do what: a principal's policy statements, evaluated per action and
//! mesh. An explicit Deny wins over any Allow.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CreateRelease,
    GetRelease,
    ListReleases,
    UpdateRelease,
    DeleteRelease,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::CreateRelease,
        Action::GetRelease,
        Action::ListReleases,
        Action::UpdateRelease,
        Action::DeleteRelease,
    ];

    /// The policy wildcard for every action.
    pub const WILDCARD: &'static str = "asm:mesh:*";

    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateRelease => "asm:mesh:createRelease",
            Action::GetRelease => "asm:mesh:getRelease",
            Action::ListReleases => "asm:mesh:listReleases",
            Action::UpdateRelease => "asm:mesh:updateRelease",
            Action::DeleteRelease => "asm:mesh:deleteRelease",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Matches actions (or all, `asm:mesh:*`) on meshes (or all, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub effect: Effect,
    /// `None` stands for every action.
    pub actions: Option<Vec<Action>>,
    /// `None` stands for every mesh.
    pub meshes: Option<Vec<String>>,
}

impl Statement {
    fn matches(&self, action: Action, mesh_id: &str) -> bool {
        let action_ok = self.actions.as_ref().is_none_or(|a| a.contains(&action));
        let mesh_ok = self
            .meshes
            .as_ref()
            .is_none_or(|m| m.iter().any(|id| id == mesh_id));
        action_ok && mesh_ok
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub statements: Vec<Statement>,
}

impl Principal {
    pub fn allows(&self, action: Action, mesh_id: &str) -> bool {
        let matching = || {
            self.statements
                .iter()
                .filter(|s| s.matches(action, mesh_id))
        };
        matching().any(|s| s.effect == Effect::Allow)
            && !matching().any(|s| s.effect == Effect::Deny)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(effect: Effect, meshes: Option<&[&str]>) -> Statement {
        Statement {
            effect,
            actions: Some(vec![Action::CreateRelease]),
            meshes: meshes.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn allow_needs_a_matching_statement() {
        let p = Principal {
            subject: "s".into(),
            statements: vec![statement(Effect::Allow, Some(&["a"]))],
        };
        assert!(p.allows(Action::CreateRelease, "a"));
        assert!(!p.allows(Action::CreateRelease, "b"));
    }

    #[test]
    fn deny_wins() {
        let p = Principal {
            subject: "s".into(),
            statements: vec![
                statement(Effect::Allow, None),
                statement(Effect::Deny, Some(&["b"])),
            ],
        };
        assert!(p.allows(Action::CreateRelease, "a"));
        assert!(!p.allows(Action::CreateRelease, "b"));
    }

    #[test]
    fn no_statements_allow_nothing() {
        let p = Principal {
            subject: "s".into(),
            statements: vec![],
        };
        assert!(!p.allows(Action::CreateRelease, "a"));
    }
}
