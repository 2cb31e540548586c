//! How an object in a cluster is marked as a release's, and how to tell
//! whose it is: only what carries a release's uid is that release's to
//! change or delete (besides the owners' routing it edits and restores).

use serde_json::Value;

use crate::domain::object::{JsonObject, annotation, identity, name_of, object_mut};
use crate::domain::release::Release;

/// The label on every object this service creates or edits.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "meshrelease";
/// The annotation naming the release that created or edited an object.
pub const RELEASE_UID_ANNOTATION: &str = "meshrelease.io/release-uid";

/// Marks an object as created or edited by this release.
pub(super) fn mark(object: &mut JsonObject, release: &Release) {
    let meta = object_mut(object, "metadata");
    object_mut(meta, "labels").insert(MANAGED_BY_LABEL.into(), Value::from(MANAGED_BY));
    object_mut(meta, "annotations").insert(
        RELEASE_UID_ANNOTATION.into(),
        Value::from(release.uid.to_string()),
    );
}

/// Whether the object carries this release's uid: only then may the
/// release change or delete an object it did not find as the owners'
/// routing.
pub(super) fn is_ours(object: &JsonObject, release: &Release) -> bool {
    uid_of(object) == Some(release.uid.to_string().as_str())
}

/// The release uid an object carries, if any.
pub(super) fn uid_of(object: &JsonObject) -> Option<&str> {
    annotation(object, RELEASE_UID_ANNOTATION)
}

/// The field managers of an object, as its `managedFields` name them.
pub(super) fn managers_of(object: &JsonObject) -> Vec<String> {
    let mut managers: Vec<String> = object
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("manager")?.as_str().map(str::to_owned))
        .collect();
    managers.dedup();
    managers
}

/// The identity of an object seen in a cluster, with its Kubernetes uid:
/// a delete (or scale) of it carries the uid as a precondition, so that it
/// can never remove a newer object of the same name.
pub(super) fn pinned_identity(
    api_version: &str,
    kind: &str,
    seen: &JsonObject,
    namespace: &str,
) -> JsonObject {
    let mut object = identity(api_version, kind, name_of(seen), namespace);
    if let Some(uid) = seen.get("metadata").and_then(|m| m.get("uid")) {
        object_mut(&mut object, "metadata").insert("uid".into(), uid.clone());
    }
    object
}

/// Who an object belongs to, in words: another release (its uid), or
/// whoever its field managers are.
pub(super) fn owner_in_words(object: &JsonObject) -> String {
    match uid_of(object) {
        Some(uid) => format!("belongs to another release (meshrelease.io/release-uid {uid})"),
        None => match managers_of(object).as_slice() {
            [] => "was not made by this release".to_owned(),
            managers => format!(
                "was not made by this release (field managers: {})",
                managers.join(", ")
            ),
        },
    }
}
