//! The shutdown signal both binaries stop on.

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("received SIGTERM"),
                _ = int.recv() => tracing::info!("received SIGINT"),
            }
        }
        _ => {
            // Without signal handlers (very unusual) fall back to Ctrl-C.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
