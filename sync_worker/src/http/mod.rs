// The worker's two HTTP servers: webhooks (`/sync/webhook/<token>`, meant to be public
// behind a reverse proxy) and the admin API (loopback by default, optional bearer token).
pub mod admin;
mod buttons;
pub mod request_body;
mod token_lookup;
pub mod webhooks;

use crate::shared::Shared;
use crate::startup::Listeners;
use std::net::SocketAddr;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{setting}: cannot serve on the bound socket: {source}")]
    Socket {
        setting: &'static str,
        source: std::io::Error,
    },
}

/// Serve both listeners in the background. The webhook server stops taking connections
/// at the first stop signal (calls under way are answered); the admin API serves until
/// the process exits.
pub fn serve(
    listeners: Listeners,
    state: Shared,
    stop: watch::Receiver<u32>,
) -> Result<(), HttpError> {
    if let Some(l) = listeners.webhook {
        let listener =
            tokio::net::TcpListener::from_std(l).map_err(|source| HttpError::Socket {
                setting: "webhook_listen",
                source,
            })?;
        if let Some(addr) = state.webhook_addr {
            tracing::info!("webhooks: listening on http://{addr}/sync/webhook/<token>");
        }
        let app = webhooks::router(state.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
            if let Err(e) = served {
                tracing::error!("webhook server stopped: {e}");
            }
        });
    }
    if let Some(l) = listeners.admin {
        let listener =
            tokio::net::TcpListener::from_std(l).map_err(|source| HttpError::Socket {
                setting: "admin_listen",
                source,
            })?;
        if let Some(addr) = state.admin_addr {
            tracing::info!("admin API: listening on http://{addr}/");
        }
        let app = admin::router(state);
        tokio::spawn(async move {
            // The peer's address: the console limits failed sign-ins per address.
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("admin API server stopped: {e}");
            }
        });
    }
    Ok(())
}
