//! `asm.v2.ReleaseList`, whose JSON form always carries `items` (an empty
//! page is `"items": []`, as Kubernetes lists are) and `metadata`, with
//! `continue` only when there is a next page; and `asm.v2.ReleaseCheckList`,
//! whose `items` are there when empty too.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::asm::v2::{CheckResult, ListMeta, Release};

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ReleaseList {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub api_version: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ListMeta>,
    #[prost(message, repeated, tag = "4")]
    pub items: Vec<Release>,
}

impl Serialize for ReleaseList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("apiVersion", &self.api_version)?;
        map.serialize_entry("metadata", &self.metadata.clone().unwrap_or_default())?;
        map.serialize_entry("items", &self.items)?;
        map.end()
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ReleaseCheckList {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub api_version: String,
    #[prost(message, repeated, tag = "3")]
    pub items: Vec<CheckResult>,
}

impl Serialize for ReleaseCheckList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("apiVersion", &self.api_version)?;
        map.serialize_entry("items", &self.items)?;
        map.end()
    }
}
