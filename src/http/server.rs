//! Serving one listener for HTTP/1.1 and HTTP/2 (h2c, or both over TLS when
//! configured), with the connection limits tonic and axum leave open set
//! explicitly, and a graceful drain.
//!
//! Connections are accepted on a thread of their own (a one-thread runtime
//! that does nothing else), so that the kernel's listen queue is emptied
//! even while every worker of the main runtime is busy with requests: a
//! burst of new connections never waits behind request work to be taken off
//! the queue, and the queue (`listen_backlog`) does not overflow into SYN
//! drops. Each accepted connection is handed to the main runtime, which
//! serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::idle::{CountInFlight, IdleTimeout};
use super::tls::Tls;

/// The address a request's connection came from (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// How long an HTTP/1 client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams the server may reset for protocol errors before it
    /// closes the connection (a rapid-reset defence).
    pub max_local_error_reset_streams: usize,
    /// HTTP/2 streams a client may reset before the server answers.
    pub max_pending_accept_reset_streams: usize,
    /// Bytes of request headers, HTTP/2 and HTTP/1 alike.
    pub max_header_bytes: u32,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// A connection with nothing read or written for this long is closed
    /// (HTTP/2 connections are pinged at half this, so live ones stay).
    pub idle_timeout: Duration,
}

/// Binds `address` with a listen queue of `backlog` connections (the
/// kernel lowers it to `net.core.somaxconn`).
pub fn bind(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std and tokio do when binding: a restarted service rebinds its
    // port at once, with old connections still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// A connection taken off the listen queue, with its place under the
/// connection cap.
type Accepted = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);

/// Accepts on a thread of its own until `stop` fires or its receiver goes,
/// closing connections over the cap at once. The listener closes when the
/// thread ends.
fn spawn_acceptor(
    listener: TcpListener,
    connections: Arc<Semaphore>,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<mpsc::UnboundedReceiver<Accepted>> {
    // Out of the main runtime: the thread's own runtime drives the listener.
    let listener = listener.into_std()?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("meshrelease-accept".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    tracing::error!("the listener could not join the accept thread");
                    return;
                };
                loop {
                    let (stream, peer) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(e) => {
                                // Out of descriptors, say: back off instead of spinning.
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                        _ = &mut stop => return,
                    };
                    let Ok(permit) = connections.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit reached; closing a new connection");
                        drop(stream);
                        continue;
                    };
                    let Ok(stream) = stream.into_std() else {
                        continue;
                    };
                    if sender.send((stream, peer, permit)).is_err() {
                        return;
                    }
                }
            });
        })?;
    Ok(receiver)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting
/// and waits (up to the drain timeout) for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(limits.idle_timeout / 2);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let service = app.into_service::<hyper::body::Incoming>();
    tokio::pin!(shutdown);
    let (stop_accepting, stop) = oneshot::channel();
    let mut accepted = match spawn_acceptor(listener, connections, stop) {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::error!(error = %e, "could not start accepting connections");
            return;
        }
    };

    loop {
        let (stream, peer, permit) = tokio::select! {
            next = accepted.recv() => match next {
                Some(next) => next,
                None => break,
            },
            () = &mut shutdown => break,
        };
        // Into the main runtime, which serves it.
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let busy = Arc::new(AtomicUsize::new(0));
        let stream = IdleTimeout::new(stream, limits.idle_timeout, busy.clone());
        let service = TowerToHyperService::new(CountInFlight::new(
            tower_http::add_extension::AddExtension::new(service.clone(), PeerAddr(peer)),
            busy,
        ));
        let Some(tls) = &tls else {
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        // The handshake in the connection's own task, bounded as a
        // request's headers are; then the same serving as without TLS.
        let (acceptor, watcher, builder) = (tls.acceptor(), graceful.watcher(), builder.clone());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }

    // The acceptor ends and closes the listener; connections it accepted
    // meanwhile are dropped unserved.
    let _ = stop_accepting.send(());
    drop(accepted);
    tracing::info!("draining requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.drain_timeout) => tracing::warn!("drain timeout passed; closing the remaining connections"),
    }
}
