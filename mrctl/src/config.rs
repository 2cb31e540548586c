//! The configuration file's named contexts (as kubeconfig's), and the
//! connection settings resolved from flags, environment and the context.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::cli::{ConnectionFlags, SetContextArgs};

/// The service's default listen address (its embedded defaults).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NamedContext {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Allowed, but a token file keeps it out of the file; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Where the configuration file is: the flag or MRCTL_CONFIG, else under
/// the XDG configuration directory.
pub fn path(flags: &ConnectionFlags) -> Option<PathBuf> {
    if let Some(path) = &flags.config {
        return Some(path.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("mrctl").join("config.yaml"))
}

impl ConfigFile {
    /// The file at `path`, or an empty one when there is none.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .with_context(|| format!("reading the configuration file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file readable by its owner only (it may name a token).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_yaml_ng::to_string(self)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The context chosen by `--context`, else the current one.
    pub fn context(&self, chosen: Option<&str>) -> anyhow::Result<Option<&NamedContext>> {
        match chosen.or(self.current_context.as_deref()) {
            None => Ok(None),
            Some(name) => match self.contexts.iter().find(|c| c.name == name) {
                Some(context) => Ok(Some(context)),
                None if chosen.is_some() => {
                    bail!("no context named {name:?} in the configuration file")
                }
                None => bail!("the current context {name:?} is not in the configuration file"),
            },
        }
    }

    pub fn set_context(&mut self, args: SetContextArgs) {
        let index = match self.contexts.iter().position(|c| c.name == args.name) {
            Some(index) => index,
            None => {
                self.contexts.push(NamedContext {
                    name: args.name.clone(),
                    ..NamedContext::default()
                });
                self.contexts.len() - 1
            }
        };
        let context = &mut self.contexts[index];
        if args.server.is_some() {
            context.server = args.server;
        }
        if args.mesh.is_some() {
            context.mesh = args.mesh;
        }
        if args.namespace.is_some() {
            context.namespace = args.namespace;
        }
        if args.token_file.is_some() {
            context.token_file = args.token_file;
        }
        if args.ca_file.is_some() {
            context.ca_file = args.ca_file;
        }
    }

    /// The file as printed: tokens replaced.
    pub fn redacted(&self) -> Self {
        Self {
            current_context: self.current_context.clone(),
            contexts: self
                .contexts
                .iter()
                .map(|c| NamedContext {
                    token: c.token.as_ref().map(|_| "REDACTED".to_owned()),
                    ..c.clone()
                })
                .collect(),
        }
    }
}

/// Everything a command needs to reach the service.
pub struct Connection {
    pub server: String,
    pub token: Option<Token>,
    pub mesh: Option<String>,
    pub namespace: String,
    pub ca_file: Option<PathBuf>,
    pub request_timeout: std::time::Duration,
}

/// A token that no `{:?}` or `{}` can print.
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(REDACTED)")
    }
}

/// Which of two token settings to believe when both are given: the one on
/// the command line over the one from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFirst {
    Token,
    TokenFile,
}

impl Connection {
    pub fn resolve(
        flags: &ConnectionFlags,
        first: TokenFirst,
        file: &ConfigFile,
    ) -> anyhow::Result<Self> {
        let context = file.context(flags.context.as_deref())?;
        let from_context = |get: fn(&NamedContext) -> Option<String>| context.and_then(get);
        let from_flags = match (first, &flags.token, &flags.token_file) {
            (_, Some(token), None) => Some(Token(token.clone())),
            (_, None, Some(path)) => Some(read_token(path)?),
            (TokenFirst::Token, Some(token), Some(_)) => Some(Token(token.clone())),
            (TokenFirst::TokenFile, Some(_), Some(path)) => Some(read_token(path)?),
            (_, None, None) => None,
        };
        let token = match from_flags {
            Some(token) => Some(token),
            None => match context {
                Some(NamedContext {
                    token_file: Some(path),
                    ..
                }) => Some(read_token(path)?),
                Some(NamedContext {
                    token: Some(token), ..
                }) => Some(Token(token.clone())),
                _ => None,
            },
        };
        Ok(Self {
            server: flags
                .server
                .clone()
                .or_else(|| from_context(|c| c.server.clone()))
                .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
            token,
            mesh: flags
                .mesh
                .clone()
                .or_else(|| from_context(|c| c.mesh.clone())),
            namespace: flags
                .namespace
                .clone()
                .or_else(|| from_context(|c| c.namespace.clone()))
                .unwrap_or_else(|| "default".to_owned()),
            ca_file: flags
                .ca_file
                .clone()
                .or_else(|| context.and_then(|c| c.ca_file.clone())),
            request_timeout: flags.request_timeout,
        })
    }

    /// The mesh, which every request names.
    pub fn mesh(&self) -> anyhow::Result<&str> {
        self.mesh.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no mesh given: pass --mesh, set MESHRELEASE_MESH, or set one in the context \
                 (mrctl config set-context NAME --set-mesh MESH)"
            )
        })
    }
}

fn read_token(path: &Path) -> anyhow::Result<Token> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(Token(token.to_owned()))
}
