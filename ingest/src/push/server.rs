//! Binding and serving a receiver's routes next to its publish worker, with `/healthz`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::queue::QueueWorker;
use crate::{IngestError, Publish};

/// Binds `addr` (port 0 picks a free one); `key` names the config key in errors.
pub async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, IngestError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| IngestError::config(key, format!("\"{addr}\""), format!("cannot listen: {e}")))
}

/// Serves `routes` plus `GET /healthz` on `listener` until `shutdown`, while `worker` publishes
/// what the handlers submit. On shutdown the listener stops accepting, requests in flight
/// finish (and are acknowledged or refused), then the worker drains and returns.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    worker: QueueWorker,
    publisher: &dyn Publish,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let app = routes.route("/healthz", get(|| async { "ok\n" }));
    // `app` holds the only queue senders; when serving ends they are dropped and the worker
    // returns after answering what was queued.
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    };
    let (served, ()) = tokio::join!(server, worker.run(publisher));
    served.map_err(|e| IngestError::External {
        system: "webhook listener".into(),
        detail: e.to_string(),
        retryable: true,
    })
}
