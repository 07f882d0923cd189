//! The signal that starts every binary's drain: the first Ctrl-C (SIGINT)
//! or SIGTERM.

use std::{future::Future, pin::Pin};

/// The future [`signal`] returns.
pub type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub fn signal() -> Signal {
    Box::pin(wait_for_signal())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, draining"),
        () = terminate => tracing::info!("SIGTERM received, draining"),
    }
}
