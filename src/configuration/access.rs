//! Who may do what: `[[tokens]]`, `[[credentials]]` (AK/SK), their
//! policy statements and rate limits.

use super::{
    ConfigError, CredentialConfig, OneOrMany, RateLimitConfig, StatementConfig, TokenConfig, fail,
};
use crate::auth::TokenEntry;
use crate::auth::credentials::CredentialEntry;
use crate::auth::rate_limit::RateLimit;
use crate::domain::{Action, Condition, ConditionKey, Effect, Principal, Statement};
use crate::secrets::read_secret_file;

pub(super) fn validate_statements(
    key: &str,
    statements: Vec<StatementConfig>,
) -> Result<Vec<Statement>, ConfigError> {
    statements
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let effect = match s.effect.as_deref() {
                None | Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                Some(other) => {
                    return fail(format!(
                        "{key}[{i}].effect: must be \"Allow\" or \"Deny\", got {other:?}"
                    ));
                }
            };
            if s.actions.is_empty() {
                return fail(format!("{key}[{i}].actions: must name at least one action"));
            }
            let actions = if s.actions.iter().any(|a| a == Action::WILDCARD) {
                None
            } else {
                let mut parsed = Vec::new();
                for (j, a) in s.actions.iter().enumerate() {
                    match Action::parse(a) {
                        Some(action) => parsed.push(action),
                        None => {
                            let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                            return fail(format!(
                                "{key}[{i}].actions[{j}]: unknown action {a:?}; known: {}, {}",
                                Action::WILDCARD,
                                known.join(", ")
                            ));
                        }
                    }
                }
                Some(parsed)
            };
            if s.meshes.is_empty() {
                return fail(format!(
                    "{key}[{i}].meshes: must name at least one mesh, or \"*\""
                ));
            }
            let meshes = if s.meshes.iter().any(|m| m == "*") {
                None
            } else {
                Some(s.meshes)
            };
            let mut conditions = Vec::new();
            for (operator, keys) in s.conditions {
                if operator != "StringEquals" {
                    return fail(format!(
                        "{key}[{i}].conditions.{operator}: unknown operator; known: StringEquals"
                    ));
                }
                for (name, values) in keys {
                    let Some(condition_key) = ConditionKey::parse(&name) else {
                        return fail(format!(
                            "{key}[{i}].conditions.StringEquals.{name:?}: unknown key; known: \"g:EnterpriseProjectId\", \"g:ResourceTag/<key>\""
                        ));
                    };
                    let values = match values {
                        OneOrMany::One(v) => vec![v],
                        OneOrMany::Many(vs) => vs,
                    };
                    if values.is_empty() {
                        return fail(format!(
                            "{key}[{i}].conditions.StringEquals.{name:?}: needs at least one value"
                        ));
                    }
                    conditions.push(Condition {
                        key: condition_key,
                        values,
                    });
                }
            }
            Ok(Statement {
                effect,
                actions,
                meshes,
                conditions,
            })
        })
        .collect()
}

pub(super) fn validate_tokens(tokens: Vec<TokenConfig>) -> Result<Vec<TokenEntry>, ConfigError> {
    let mut out: Vec<TokenEntry> = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        if token.subject.is_empty() {
            return fail(format!("tokens[{i}].subject: must not be empty"));
        }
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(&token.sha256, &mut sha256).is_err() {
            return fail(format!(
                "tokens[{i}].sha256: must be 64 hex digits (the SHA-256 of the token, e.g. from `printf %s TOKEN | sha256sum`)"
            ));
        }
        if out.iter().any(|t| t.sha256 == sha256) {
            return fail(format!(
                "tokens[{i}].sha256: the same token is declared twice"
            ));
        }
        let statements = validate_statements(&format!("tokens[{i}].allow"), token.allow)?;
        let rate_limit = validate_rate_limit(&format!("tokens[{i}]"), token.rate_limit)?;
        out.push(TokenEntry {
            rate_limit,
            sha256,
            principal: Principal {
                subject: token.subject,
                statements,
            },
        });
    }
    Ok(out)
}

/// Each access key with its secret key, read from the file or environment
/// variable the configuration names (never from the configuration itself).
pub(super) fn validate_credentials(
    credentials: Vec<CredentialConfig>,
) -> Result<Vec<CredentialEntry>, ConfigError> {
    let mut out: Vec<CredentialEntry> = Vec::new();
    for (i, c) in credentials.into_iter().enumerate() {
        if c.subject.is_empty() {
            return fail(format!("credentials[{i}].subject: must not be empty"));
        }
        if c.access_key.is_empty() || !c.access_key.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return fail(format!(
                "credentials[{i}].access_key: must be letters and digits, as the cloud's AKs are"
            ));
        }
        if out.iter().any(|e| e.access_key == c.access_key) {
            return fail(format!(
                "credentials[{i}].access_key: {:?} is declared twice",
                c.access_key
            ));
        }
        let secret = match (&c.secret_key_file, &c.secret_key_env) {
            (Some(path), None) => read_secret_file(&path.relative())
                .map_err(|e| ConfigError(format!("credentials[{i}].secret_key_file: {e}")))?,
            (None, Some(variable)) => std::env::var(variable).map_err(|_| {
                ConfigError(format!(
                    "credentials[{i}].secret_key_env: the environment variable {variable:?} is not set (or not UTF-8)"
                ))
            })?,
            _ => {
                return fail(format!(
                    "credentials[{i}]: give exactly one of secret_key_file and secret_key_env (never the key itself)"
                ));
            }
        };
        let secret = secret.trim();
        if secret.len() < 16 {
            return fail(format!(
                "credentials[{i}]: the secret key is shorter than 16 characters"
            ));
        }
        let statements = validate_statements(&format!("credentials[{i}].allow"), c.allow)?;
        let rate_limit = validate_rate_limit(&format!("credentials[{i}]"), c.rate_limit)?;
        out.push(CredentialEntry {
            rate_limit,
            access_key: c.access_key,
            secret_key: secret.as_bytes().to_vec(),
            principal: Principal {
                subject: c.subject,
                statements,
            },
        });
    }
    Ok(out)
}

pub(super) fn validate_rate_limit(
    key: &str,
    config: Option<RateLimitConfig>,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(config) = config else {
        return Ok(None);
    };
    if !(config.requests_per_second.is_finite() && config.requests_per_second > 0.0) {
        return fail(format!(
            "{key}.rate_limit.requests_per_second: must be a number above 0"
        ));
    }
    let burst = config
        .burst
        .unwrap_or_else(|| config.requests_per_second.ceil().min(f64::from(u32::MAX)) as u32);
    if burst == 0 {
        return fail(format!("{key}.rate_limit.burst: must be at least 1"));
    }
    Ok(Some(RateLimit {
        requests_per_second: config.requests_per_second,
        burst,
    }))
}
