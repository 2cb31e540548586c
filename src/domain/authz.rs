//! Who may do what: a principal's policy statements, evaluated per action and
//! mesh, and narrowed by conditions on the mesh's enterprise project and
//! tags. An explicit Deny wins over any Allow.

use super::mesh::Mesh;

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

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `g:EnterpriseProjectId`
    EnterpriseProjectId,
    /// `g:ResourceTag/<key>`
    ResourceTag(String),
}

impl ConditionKey {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "g:EnterpriseProjectId" => Some(Self::EnterpriseProjectId),
            _ => text
                .strip_prefix("g:ResourceTag/")
                .filter(|key| !key.is_empty())
                .map(|key| Self::ResourceTag(key.to_owned())),
        }
    }
}

/// `StringEquals`: the key's value equals one of `values` (one value is
/// "equals", several are "in a list"). A mesh without the tag never matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: ConditionKey,
    pub values: Vec<String>,
}

impl Condition {
    fn matches(&self, mesh: &Mesh) -> bool {
        let actual = match &self.key {
            ConditionKey::EnterpriseProjectId => Some(&mesh.enterprise_project_id),
            ConditionKey::ResourceTag(key) => mesh.tags.get(key),
        };
        actual.is_some_and(|actual| self.values.iter().any(|v| v == actual))
    }
}

/// Matches actions (or all, `asm:mesh:*`) on meshes (or all, `*`) whose
/// attributes meet every condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub effect: Effect,
    /// `None` stands for every action.
    pub actions: Option<Vec<Action>>,
    /// `None` stands for every mesh.
    pub meshes: Option<Vec<String>>,
    /// All must hold. A statement with conditions never matches a mesh that
    /// is not configured (it has no attributes to meet them).
    pub conditions: Vec<Condition>,
}

impl Statement {
    fn matches(&self, action: Action, mesh_id: &str, mesh: Option<&Mesh>) -> bool {
        let action_ok = self.actions.as_ref().is_none_or(|a| a.contains(&action));
        let mesh_ok = self
            .meshes
            .as_ref()
            .is_none_or(|m| m.iter().any(|id| id == mesh_id));
        let conditions_ok = self.conditions.is_empty()
            || mesh.is_some_and(|mesh| self.conditions.iter().all(|c| c.matches(mesh)));
        action_ok && mesh_ok && conditions_ok
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub statements: Vec<Statement>,
}

impl Principal {
    /// Whether `action` on `mesh_id` (whose configuration is `mesh`, when it
    /// is a configured mesh) is allowed.
    pub fn allows(&self, action: Action, mesh_id: &str, mesh: Option<&Mesh>) -> bool {
        let matching = || {
            self.statements
                .iter()
                .filter(|s| s.matches(action, mesh_id, mesh))
        };
        matching().any(|s| s.effect == Effect::Allow)
            && !matching().any(|s| s.effect == Effect::Deny)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn actions_have_the_contracts_names_and_read_back() {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "asm:mesh:createRelease",
                "asm:mesh:getRelease",
                "asm:mesh:listReleases",
                "asm:mesh:updateRelease",
                "asm:mesh:deleteRelease",
            ]
        );
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(*action));
        }
        assert_eq!(Action::parse("asm:mesh:eraseRelease"), None);
    }

    fn statement(effect: Effect, meshes: Option<&[&str]>) -> Statement {
        Statement {
            effect,
            actions: Some(vec![Action::CreateRelease]),
            meshes: meshes.map(|m| m.iter().map(|s| s.to_string()).collect()),
            conditions: vec![],
        }
    }

    fn principal(statements: Vec<Statement>) -> Principal {
        Principal {
            subject: "s".into(),
            statements,
        }
    }

    fn mesh(id: &str, project: &str, tags: &[(&str, &str)]) -> Mesh {
        Mesh {
            id: id.into(),
            clusters: vec!["c".into()],
            enterprise_project_id: project.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Mesh::default()
        }
    }

    #[test]
    fn allow_needs_a_matching_statement() {
        let p = principal(vec![statement(Effect::Allow, Some(&["a"]))]);
        assert!(p.allows(Action::CreateRelease, "a", None));
        assert!(!p.allows(Action::CreateRelease, "b", None));
    }

    #[test]
    fn deny_wins() {
        let p = principal(vec![
            statement(Effect::Allow, None),
            statement(Effect::Deny, Some(&["b"])),
        ]);
        assert!(p.allows(Action::CreateRelease, "a", None));
        assert!(!p.allows(Action::CreateRelease, "b", None));
    }

    #[test]
    fn no_statements_allow_nothing() {
        assert!(!principal(vec![]).allows(Action::CreateRelease, "a", None));
    }

    #[test]
    fn conditions_narrow_by_project_and_tags() {
        let mut allow = statement(Effect::Allow, None);
        allow.conditions = vec![
            Condition {
                key: ConditionKey::EnterpriseProjectId,
                values: vec!["ep-1".into(), "ep-2".into()],
            },
            Condition {
                key: ConditionKey::ResourceTag("team".into()),
                values: vec!["payments".into()],
            },
        ];
        let p = principal(vec![allow]);
        let ok = mesh("a", "ep-2", &[("team", "payments")]);
        assert!(p.allows(Action::CreateRelease, "a", Some(&ok)));
        let wrong_project = mesh("a", "ep-3", &[("team", "payments")]);
        assert!(!p.allows(Action::CreateRelease, "a", Some(&wrong_project)));
        let untagged = mesh("a", "ep-1", &[]);
        assert!(!p.allows(Action::CreateRelease, "a", Some(&untagged)));
        // An unknown mesh has nothing to meet the conditions with.
        assert!(!p.allows(Action::CreateRelease, "a", None));
    }

    #[test]
    fn a_conditional_deny_wins_only_where_it_matches() {
        let mut deny = statement(Effect::Deny, None);
        deny.conditions = vec![Condition {
            key: ConditionKey::ResourceTag("env".into()),
            values: vec!["prod".into()],
        }];
        let p = principal(vec![statement(Effect::Allow, None), deny]);
        assert!(!p.allows(
            Action::CreateRelease,
            "a",
            Some(&mesh("a", "0", &[("env", "prod")]))
        ));
        assert!(p.allows(
            Action::CreateRelease,
            "a",
            Some(&mesh("a", "0", &[("env", "dev")]))
        ));
    }

    #[test]
    fn condition_keys_are_parsed() {
        assert_eq!(
            ConditionKey::parse("g:EnterpriseProjectId"),
            Some(ConditionKey::EnterpriseProjectId)
        );
        assert_eq!(
            ConditionKey::parse("g:ResourceTag/env"),
            Some(ConditionKey::ResourceTag("env".into()))
        );
        assert_eq!(ConditionKey::parse("g:ResourceTag/"), None);
        assert_eq!(ConditionKey::parse("g:Other"), None);
    }
}
