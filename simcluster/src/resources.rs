//! The kinds of object the simulated cluster serves, and where: what its
//! discovery documents list and what its paths name.

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    /// Every version served; objects are stored once, whatever version wrote them.
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    /// Whether its objects live in a namespace (Namespaces themselves do not).
    pub namespaced: bool,
}

pub const DEPLOYMENTS: Resource = Resource {
    group: "apps",
    versions: &["v1"],
    plural: "deployments",
    singular: "deployment",
    kind: "Deployment",
    short_names: &["deploy"],
    namespaced: true,
};

pub const SERVICES: Resource = Resource {
    group: "",
    versions: &["v1"],
    plural: "services",
    singular: "service",
    kind: "Service",
    short_names: &["svc"],
    namespaced: true,
};

pub const NAMESPACES: Resource = Resource {
    group: "",
    versions: &["v1"],
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    short_names: &["ns"],
    namespaced: false,
};

pub const VIRTUAL_SERVICES: Resource = Resource {
    group: "networking.istio.io",
    versions: &["v1", "v1beta1"],
    plural: "virtualservices",
    singular: "virtualservice",
    kind: "VirtualService",
    short_names: &["vs"],
    namespaced: true,
};

pub const DESTINATION_RULES: Resource = Resource {
    group: "networking.istio.io",
    versions: &["v1", "v1beta1"],
    plural: "destinationrules",
    singular: "destinationrule",
    kind: "DestinationRule",
    short_names: &["dr"],
    namespaced: true,
};

pub const ALL: [Resource; 5] = [
    DEPLOYMENTS,
    SERVICES,
    NAMESPACES,
    VIRTUAL_SERVICES,
    DESTINATION_RULES,
];

impl Resource {
    pub fn find(group: &str, version: &str, plural: &str) -> Option<Resource> {
        ALL.into_iter()
            .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether it has a `status` subresource (Deployments do; the Istio
    /// CRDs are served here without one, so status is part of the object).
    pub fn has_status(&self) -> bool {
        self.group == "apps"
    }

    /// Verbs, as discovery lists them.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}
