//! Accepting connections, with bounds no client can talk its way past:
//!
//! - at most `server.max_connections` open per listener: beyond it tollgate
//!   stops accepting, so new connections wait in the kernel's listen backlog
//!   until one closes (`tollgate_open_connections{listener}` shows the count);
//! - a request must arrive whole (head and body) and be answered within
//!   `server.request_timeout` of its first byte, else the connection is closed
//!   (slowloris);
//! - a keep-alive connection with no request for `server.idle_timeout` is closed;
//! - a request head may not exceed 64 KiB (hyper answers 431).
//!
//! hyper's own `header_read_timeout` also runs while a connection is idle, so
//! it cannot tell a slow request from a quiet keep-alive connection; the
//! connection's [`Activity`] does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use crate::http::Handler;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest request head hyper buffers (its minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serve `router` on `listener` until `stop`; then stop accepting, let every
/// connection finish its request, and return once all are closed.
pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    limits: Limits,
    open: Gauge,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let permits = Arc::new(Semaphore::new(max as usize));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    let mut failing = false;
    let mut full = false;
    loop {
        if permits.available_permits() == 0 && !full {
            full = true;
            tracing::warn!(
                max_connections = max,
                "connection limit reached: new connections wait in the listen backlog"
            );
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never spin.
                    if !failing {
                        tracing::warn!(error = %e, "accept failed: retrying every 50ms");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if failing || full {
            tracing::info!("accepting connections again");
            (failing, full) = (false, false);
        }
        // Decisions are tiny request/response pairs: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
        open.inc();
        let (handler, builder, open, stop) =
            (handler.clone(), builder.clone(), open.clone(), stop.clone());
        tokio::spawn(async move {
            connection(tcp, peer, handler, &builder, limits, stop).await;
            open.dec();
            drop(permit);
        });
    }
    // Every connection holds a permit until it closes.
    let _ = permits.acquire_many(max).await;
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    builder: &hyper::server::conn::http1::Builder,
    limits: Limits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
    });
    let watch = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        watch.request_started();
        let answer = handler(req, peer);
        let watch = watch.clone();
        async move {
            let r = answer.await;
            watch.answered();
            Ok::<_, Infallible>(r)
        }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(activity.deadline(&limits)) => {
                if activity.expired(&limits) {
                    // Dropping the connection closes the socket.
                    tracing::debug!(%peer, "connection timed out");
                    return;
                }
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, and since when: waiting for a request (idle),
/// or in a request (from its first byte until its answer).
struct Activity {
    in_request: AtomicBool,
    since: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_request: AtomicBool::new(false),
            since: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Bytes arrived: a request starts with the first of them.
    fn read(&self) {
        if !self.in_request.swap(true, Ordering::Relaxed) {
            self.since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Bytes left while idle (the tail of an answer): the connection is not idle.
    fn wrote(&self) {
        if !self.in_request.load(Ordering::Relaxed) {
            self.since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// hyper has the head (maybe of a pipelined request read earlier).
    fn request_started(&self) {
        self.read();
    }

    fn answered(&self) {
        self.since.store(self.now_ms(), Ordering::Relaxed);
        self.in_request.store(false, Ordering::Relaxed);
    }

    fn allowed(&self, limits: &Limits) -> Duration {
        if self.in_request.load(Ordering::Relaxed) {
            limits.request_timeout
        } else {
            limits.idle_timeout
        }
    }

    /// When to look again: the state may change without waking the
    /// connection's task (a request starting on an idle connection), so wake
    /// by the shorter of the two timeouts; `since` only moves forward.
    fn deadline(&self, limits: &Limits) -> Instant {
        let since = Duration::from_millis(self.since.load(Ordering::Relaxed));
        self.origin + since + limits.request_timeout.min(limits.idle_timeout)
    }

    fn expired(&self, limits: &Limits) -> bool {
        let since = self.since.load(Ordering::Relaxed);
        self.now_ms().saturating_sub(since) >= self.allowed(limits).as_millis() as u64
    }
}

/// The socket, telling its [`Activity`] when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
