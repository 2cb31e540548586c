//! The parts of Istio's `VirtualService` and `DestinationRule`
//! (networking.istio.io, `v1beta1` and `v1`, whose schemas are the same) that
//! a release reads or changes, as typed structs. Every other field, of the
//! object or of any nested part, is kept in `rest` as it was read, so that
//! an edit changes only what the plan changes. The JSON names are Istio's
//! CRD field names (checked in the tests below).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::object::JsonObject;

pub const GROUP: &str = "networking.istio.io";

/// Which version of Istio's networking API to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IstioApi {
    /// Served by every Istio since 1.5, and still by today's.
    #[default]
    V1beta1,
    /// Istio 1.22 and later.
    V1,
}

impl IstioApi {
    pub fn api_version(self) -> &'static str {
        match self {
            IstioApi::V1beta1 => "networking.istio.io/v1beta1",
            IstioApi::V1 => "networking.istio.io/v1",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "v1beta1" => Some(IstioApi::V1beta1),
            "v1" => Some(IstioApi::V1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRoute>>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<HttpMatchRequest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<HttpRouteDestination>>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_json::Map<String, Value>>,
    #[serde(
        rename = "queryParams",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub query_params: Option<serde_json::Map<String, Value>>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationRuleSpec {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Vec<Subset>>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(flatten)]
    pub rest: JsonObject,
}

/// Whether `host` (as a VirtualService or DestinationRule names it) is the
/// Service `service` in `namespace`: the short name, or a longer form of it.
pub fn names_service(host: &str, service: &str, namespace: &str) -> bool {
    // Compared piece by piece: a cache of thousands of routing objects is
    // searched this way for every release's read.
    let Some(rest) = host.strip_prefix(service) else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('.')
            .and_then(|r| r.strip_prefix(namespace))
            .is_some_and(|r| matches!(r, "" | ".svc" | ".svc.cluster.local"))
}

/// The `spec` of an Istio object read as JSON.
pub fn spec_of<T: serde::de::DeserializeOwned + Default>(object: &JsonObject) -> Result<T, String> {
    match object.get("spec") {
        None => Ok(T::default()),
        Some(spec) => T::deserialize(spec).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_configured_api_versions_are_parsed() {
        assert_eq!(IstioApi::parse("v1beta1"), Some(IstioApi::V1beta1));
        assert_eq!(IstioApi::parse("v1"), Some(IstioApi::V1));
        for other in ["v1alpha3", "V1", "", "networking.istio.io/v1"] {
            assert_eq!(IstioApi::parse(other), None, "{other:?}");
        }
        assert_eq!(
            IstioApi::V1beta1.api_version(),
            "networking.istio.io/v1beta1"
        );
        assert_eq!(IstioApi::V1.api_version(), "networking.istio.io/v1");
    }

    /// Field names of Istio's published CRDs (istio/api,
    /// `kubernetes/customresourcedefinitions.gen.yaml`, networking v1, read
    /// at commit b8f8791): every name these types write must be one.
    const VIRTUAL_SERVICE: &[&str] = &["exportTo", "gateways", "hosts", "http", "tcp", "tls"];
    const HTTP_ROUTE: &[&str] = &[
        "corsPolicy",
        "delegate",
        "directResponse",
        "fault",
        "headers",
        "match",
        "mirror",
        "mirrorPercent",
        "mirrorPercentage",
        "mirrors",
        "name",
        "redirect",
        "retries",
        "rewrite",
        "route",
        "timeout",
    ];
    const HTTP_MATCH: &[&str] = &[
        "authority",
        "gateways",
        "headers",
        "ignoreUriCase",
        "method",
        "name",
        "port",
        "queryParams",
        "scheme",
        "sourceLabels",
        "sourceNamespace",
        "statPrefix",
        "uri",
        "withoutHeaders",
    ];
    const ROUTE_DESTINATION: &[&str] = &["destination", "headers", "weight"];
    const DESTINATION: &[&str] = &["host", "port", "subset"];
    const DESTINATION_RULE: &[&str] = &[
        "exportTo",
        "host",
        "subsets",
        "trafficPolicy",
        "workloadSelector",
    ];
    const SUBSET: &[&str] = &["labels", "name", "trafficPolicy"];

    fn keys_within(value: &serde_json::Value, allowed: &[&str], what: &str) {
        for key in value.as_object().unwrap().keys() {
            assert!(
                allowed.contains(&key.as_str()),
                "{what}.{key} is not an Istio field"
            );
        }
    }

    #[test]
    fn json_names_are_istios() {
        let vs = VirtualServiceSpec {
            hosts: vec!["r".into()],
            http: Some(vec![HttpRoute {
                name: Some("n".into()),
                matches: Some(vec![HttpMatchRequest {
                    headers: Some(Default::default()),
                    query_params: Some(Default::default()),
                    rest: Default::default(),
                }]),
                route: Some(vec![HttpRouteDestination {
                    destination: Destination {
                        host: "r".into(),
                        subset: Some("v1".into()),
                        rest: Default::default(),
                    },
                    weight: Some(100),
                    rest: Default::default(),
                }]),
                rest: Default::default(),
            }]),
            rest: Default::default(),
        };
        let vs = serde_json::to_value(&vs).unwrap();
        keys_within(&vs, VIRTUAL_SERVICE, "VirtualService");
        let route = &vs["http"][0];
        keys_within(route, HTTP_ROUTE, "http");
        keys_within(&route["match"][0], HTTP_MATCH, "http.match");
        keys_within(&route["route"][0], ROUTE_DESTINATION, "http.route");
        keys_within(
            &route["route"][0]["destination"],
            DESTINATION,
            "destination",
        );
        assert_eq!(
            route["match"][0].as_object().unwrap().len(),
            2,
            "both match fields written"
        );
        assert_eq!(
            route["route"][0]["destination"].as_object().unwrap().len(),
            2
        );

        let dr = DestinationRuleSpec {
            host: "r".into(),
            subsets: Some(vec![Subset {
                name: "v1".into(),
                labels: Some([("version".to_owned(), "v1".to_owned())].into()),
                rest: Default::default(),
            }]),
            rest: Default::default(),
        };
        let dr = serde_json::to_value(&dr).unwrap();
        keys_within(&dr, DESTINATION_RULE, "DestinationRule");
        keys_within(&dr["subsets"][0], SUBSET, "subsets");
        assert_eq!(dr["subsets"][0].as_object().unwrap().len(), 2);
    }

    #[test]
    fn fields_of_others_survive_a_round_trip() {
        let spec = json!({
            "hosts": ["reviews"], "gateways": ["mesh"], "exportTo": ["."],
            "tcp": [{"route": [{"destination": {"host": "db"}}]}],
            "http": [{"name": "a", "timeout": "3s", "retries": {"attempts": 3},
                      "match": [{"uri": {"prefix": "/x"}, "ignoreUriCase": true}],
                      "route": [{"destination": {"host": "reviews", "port": {"number": 9080}},
                                 "headers": {"request": {"set": {"x": "y"}}}}]}]
        });
        let typed: VirtualServiceSpec = serde_json::from_value(spec.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), spec);
    }

    #[test]
    fn hosts_name_a_service_in_any_of_its_forms() {
        for host in [
            "reviews",
            "reviews.default",
            "reviews.default.svc",
            "reviews.default.svc.cluster.local",
        ] {
            assert!(names_service(host, "reviews", "default"), "{host}");
        }
        assert!(!names_service("reviews.prod", "reviews", "default"));
        assert!(!names_service("ratings", "reviews", "default"));
        for other in [
            "reviews2",
            "reviews.defaults",
            "reviews.default.",
            "reviews.default.svc.cluster",
            "reviews.default.svc.cluster.local.",
            "reviewsdefault",
            "reviews..default",
        ] {
            assert!(!names_service(other, "reviews", "default"), "{other}");
        }
    }
}
