//! One shutdown signal (SIGINT or SIGTERM) drains both protocols; a second
//! one exits at once.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGINT or SIGTERM; from then on, another one ends
/// the process immediately. The handlers are installed when this is
/// called, not when the future is first polled, so that a signal sent as
/// soon as the service says it listens is not taken by the default action.
pub fn signal_received() -> impl std::future::Future<Output = ()> {
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = handlers else {
            tracing::error!("cannot listen for shutdown signals; stop the process with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown signal received; draining (send it again to exit at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::warn!("second shutdown signal; exiting now");
            std::process::exit(130);
        });
    }
}
