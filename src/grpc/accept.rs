//! Accepting gRPC connections with the bound the HTTP listeners have: at
//! most `max_connections` open; beyond it tollgate stops accepting, so new
//! connections wait in the kernel's listen backlog until one closes. A proxy
//! multiplexes its calls over few HTTP/2 connections, so the per-call bounds
//! (streams per connection, call timeout) are on tonic's builder (`grpc.rs`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection holding its place under the cap until it closes.
pub struct Counted {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Connections under `max_connections`, counted in `open`.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    open: Gauge,
) -> Pin<Box<dyn Stream<Item = io::Result<Counted>> + Send>> {
    let max = max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let state = (listener, permits, open, false);
    Box::pin(futures::stream::unfold(
        state,
        move |(listener, permits, open, mut full)| async move {
            if permits.available_permits() == 0 && !full {
                full = true;
                tracing::warn!(
                    max_connections = max,
                    "gRPC connection limit reached: new connections wait in the listen backlog"
                );
            }
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let mut failing = false;
            let tcp = loop {
                match listener.accept().await {
                    Ok((tcp, _)) => break tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, never spin.
                        if !failing {
                            tracing::warn!(error = %e, "gRPC accept failed: retrying every 50ms");
                            failing = true;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            if failing || full {
                tracing::info!("gRPC listener accepting connections again");
                full = false;
            }
            // Decisions are small request/response pairs: never wait for Nagle.
            let _ = tcp.set_nodelay(true);
            open.inc();
            let conn = Counted {
                inner: tcp,
                _permit: permit,
                open: open.clone(),
            };
            Some((Ok(conn), (listener, permits, open, full)))
        },
    ))
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
