//! SIGHUP: the configuration is read again (file, environment and flags, as
//! at start) and what can change while the service runs is swapped in at
//! once: tokens, access keys, their policies and rate limits, meshes,
//! clusters, and the listener's certificates (for new connections). Everything new is read and checked before anything is
//! swapped, so an invalid file, or a cluster whose kubeconfig cannot be
//! read, changes nothing: the running configuration is kept and the error
//! logged. Connections and watch streams stay open across a reload; the
//! next request on them is checked against the new tokens.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::configuration::{Cli, Settings};
use crate::domain::{Meshes, ReleaseManager};
use crate::driver::kube::KubeClusters;
use crate::http::authenticate::Authenticator;
use crate::http::tls::Tls;

/// The parts of a running service a reload replaces.
pub struct Reloader {
    pub(crate) authenticator: Arc<Authenticator>,
    pub(crate) manager: Arc<ReleaseManager>,
    pub(crate) clusters: Arc<KubeClusters>,
    /// The keys that need a restart, as the service started with them.
    pub(crate) restart_only: Mutex<Vec<(&'static str, String)>>,
    /// The listener's certificates, when it speaks TLS.
    pub(crate) tls: Option<Arc<Tls>>,
}

/// What a reload took in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub tokens: usize,
    pub credentials: usize,
    pub meshes: usize,
    pub clusters: usize,
    /// Keys whose new values wait for a restart.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    /// Applies `settings` (already validated), all of it or nothing.
    pub async fn apply(&self, settings: Settings) -> Result<Reloaded, String> {
        let clients = KubeClusters::prepare(&settings.clusters).await?;
        // The certificate files are read again (a renewed certificate under
        // the same names); turning TLS on or off needs a restart.
        let tls = match (&self.tls, &settings.tls) {
            (Some(_), Some(files)) => Some(crate::http::tls::server_config(files)?),
            _ => None,
        };
        let need_restart = {
            let running = self.restart_only.lock().unwrap_or_else(|e| e.into_inner());
            running
                .iter()
                .zip(settings.restart_only())
                .filter(|(old, new)| old.1 != new.1)
                .map(|(old, _)| old.0)
                .collect()
        };
        let reloaded = Reloaded {
            tokens: settings.tokens.len(),
            credentials: settings.credentials.len(),
            meshes: settings.meshes.len(),
            clusters: settings.clusters.len(),
            need_restart,
        };
        // Everything is read: swap.
        self.authenticator
            .replace(settings.tokens, settings.credentials);
        self.manager.replace_meshes(Meshes::new(settings.meshes));
        self.clusters.replace(clients);
        if let (Some(running), Some(config)) = (&self.tls, tls) {
            running.replace(config);
        }
        Ok(reloaded)
    }
}

/// Reloads on every SIGHUP until `shutdown` fires. The handler is installed
/// when this is called (before the service says it listens), so that an
/// early SIGHUP does not end the process, as its default action would.
pub fn on_hangup(
    cli: Cli,
    reloader: Reloader,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handler = signal(SignalKind::hangup());
    async move {
        let Ok(mut hangups) = handler else {
            tracing::error!("cannot listen for SIGHUP; the configuration is read at start only");
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            reload_now(&cli, &reloader).await;
        }
    }
}

/// One reload, logged: what was taken in, or why nothing was.
pub async fn reload_now(cli: &Cli, reloader: &Reloader) -> Option<Reloaded> {
    let outcome = match Settings::load(cli) {
        Ok(settings) => reloader.apply(settings).await,
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(reloaded) => {
            // Before the line that says it is done, so that whoever waits
            // for that line has read this one too.
            if !reloaded.need_restart.is_empty() {
                tracing::warn!(
                    keys = reloaded.need_restart.join(", "),
                    "these changed keys take effect at the next restart"
                );
            }
            if reloaded.tokens == 0 && reloaded.credentials == 0 {
                tracing::warn!(
                    "no tokens or access keys are configured now: every release operation will answer 401"
                );
            }
            tracing::info!(
                tokens = reloaded.tokens,
                credentials = reloaded.credentials,
                meshes = reloaded.meshes,
                clusters = reloaded.clusters,
                "configuration reloaded"
            );
            Some(reloaded)
        }
        Err(error) => {
            tracing::error!(%error, "configuration not reloaded; the running one is kept");
            None
        }
    }
}
