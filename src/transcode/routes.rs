//! The REST route table, read from the `google.api.http` options in the
//! descriptor set: nothing else declares a route.

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, MessageDescriptor, MethodDescriptor};

use super::MethodCall;
use super::template::PathTemplate;
use crate::pb::google::api::{HttpRule, http_rule::Pattern};

/// One HTTP binding of an RPC.
#[derive(Clone)]
pub struct Route {
    pub http_method: http::Method,
    pub template: PathTemplate,
    /// `asm.v2.ReleaseService.CreateRelease`
    pub rpc: String,
    /// `asm.v2.ReleaseService/CreateRelease`: the RPC as gRPC names it in
    /// its path (and as `/metrics` labels it).
    pub method_path: Arc<String>,
    /// The request field the body fills, `*` for the whole request, empty for none.
    pub body: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub(super) call: MethodCall,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.http_method, self.template, self.rpc)
    }
}

impl Route {
    /// Whether the RPC streams its responses (served as NDJSON).
    pub fn is_streaming(&self) -> bool {
        self.call.is_streaming()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteTableError {
    #[error("reading the descriptor set: {0}")]
    Descriptor(String),
    #[error("{rpc}: {reason}")]
    Rule { rpc: String, reason: String },
}

/// What a request path and method found.
pub enum Found<'r> {
    Route(&'r Route, Vec<(String, String)>),
    /// The path exists, but not for this method.
    WrongMethod(Vec<http::Method>),
    Nothing,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table from every `google.api.http` option in `descriptor_set`,
    /// binding each to its implementation in `methods`.
    pub fn from_descriptor_set(
        descriptor_set: &[u8],
        methods: Vec<(&'static str, MethodCall)>,
    ) -> Result<Self, RouteTableError> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| RouteTableError::Descriptor(e.to_string()))?;
        let mut methods: HashMap<&str, MethodCall> = methods.into_iter().collect();
        let mut routes = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let Some(rule) = http_rule(&pool, &method)? else {
                    continue;
                };
                let rpc = method.full_name().to_owned();
                let call = methods
                    .remove(rpc.as_str())
                    .ok_or_else(|| RouteTableError::Rule {
                        rpc: rpc.clone(),
                        reason: "has google.api.http but no transcodable implementation".into(),
                    })?;
                let bindings =
                    std::iter::once(rule.clone()).chain(rule.additional_bindings.clone());
                for binding in bindings {
                    routes.push(route(&rpc, &method, binding, call.clone())?);
                }
            }
        }
        if let Some(rpc) = methods.keys().next() {
            return Err(RouteTableError::Rule {
                rpc: (*rpc).to_owned(),
                reason: "is implemented for REST but has no google.api.http rule".into(),
            });
        }
        Ok(Self { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` at `path`. HEAD is served wherever GET is (the
    /// caller sends no body), as HTTP requires; the methods a path allows
    /// include HEAD and OPTIONS accordingly.
    pub fn find(&self, method: &http::Method, path: &str) -> Found<'_> {
        let wanted = if method == http::Method::HEAD {
            &http::Method::GET
        } else {
            method
        };
        let matching: Vec<(&Route, Vec<(String, String)>)> = self
            .routes
            .iter()
            .filter_map(|route| route.template.matches(path).map(|b| (route, b)))
            .collect();
        // A path that ends in a custom verb is that custom method's, as
        // grpc-gateway reads it: `.../releases/x:pause` is not also a
        // release named "x:pause" that GET, PUT or DELETE would take.
        let verbs = matching.iter().any(|(route, _)| route.template.has_verb());
        let mut allowed = Vec::new();
        for (route, bindings) in matching {
            if verbs && !route.template.has_verb() {
                continue;
            }
            if route.http_method == *wanted {
                return Found::Route(route, bindings);
            }
            allowed.push(route.http_method.clone());
        }
        if allowed.is_empty() {
            return Found::Nothing;
        }
        if allowed.contains(&http::Method::GET) {
            allowed.push(http::Method::HEAD);
        }
        allowed.push(http::Method::OPTIONS);
        Found::WrongMethod(allowed)
    }
}

fn http_rule(
    pool: &DescriptorPool,
    method: &MethodDescriptor,
) -> Result<Option<HttpRule>, RouteTableError> {
    let Some(extension) = pool.get_extension_by_name("google.api.http") else {
        return Ok(None);
    };
    let options = method.options();
    if !options.has_extension(&extension) {
        return Ok(None);
    }
    let fail = |reason: String| RouteTableError::Rule {
        rpc: method.full_name().to_owned(),
        reason,
    };
    let value = options.get_extension(&extension);
    let Some(rule) = value.as_message() else {
        return Err(fail(format!("google.api.http is not a message: {value:?}")));
    };
    rule.transcode_to::<HttpRule>()
        .map(Some)
        .map_err(|e| fail(format!("malformed google.api.http: {e}")))
}

fn route(
    rpc: &str,
    method: &MethodDescriptor,
    rule: HttpRule,
    call: MethodCall,
) -> Result<Route, RouteTableError> {
    let fail = |reason: String| RouteTableError::Rule {
        rpc: rpc.to_owned(),
        reason,
    };
    let (http_method, path) = match rule.pattern {
        Some(Pattern::Get(p)) => (http::Method::GET, p),
        Some(Pattern::Put(p)) => (http::Method::PUT, p),
        Some(Pattern::Post(p)) => (http::Method::POST, p),
        Some(Pattern::Delete(p)) => (http::Method::DELETE, p),
        Some(Pattern::Patch(p)) => (http::Method::PATCH, p),
        Some(Pattern::Custom(c)) => (
            http::Method::from_bytes(c.kind.as_bytes())
                .map_err(|e| fail(format!("custom method: {e}")))?,
            c.path,
        ),
        None => return Err(fail("google.api.http has no pattern".into())),
    };
    let template = PathTemplate::parse(&path).map_err(|e| fail(e.to_string()))?;
    let input = method.input();
    for variable in template.variables() {
        super::request::field_by_path(&input, variable).ok_or_else(|| {
            fail(format!(
                "path variable {variable:?} is not a field of {}",
                input.full_name()
            ))
        })?;
    }
    if !rule.body.is_empty() && rule.body != "*" && input.get_field_by_name(&rule.body).is_none() {
        return Err(fail(format!(
            "body {:?} is not a field of {}",
            rule.body,
            input.full_name()
        )));
    }
    if !rule.response_body.is_empty() {
        return Err(fail("response_body is not supported".into()));
    }
    Ok(Route {
        http_method,
        template,
        rpc: rpc.to_owned(),
        method_path: Arc::new(match rpc.rsplit_once('.') {
            Some((service, method)) => format!("{service}/{method}"),
            None => rpc.to_owned(),
        }),
        body: rule.body,
        input,
        output: method.output(),
        call,
    })
}
