//! Thread-per-core serving: one single-threaded tokio runtime per worker thread,
//! each with its own listening socket on the same port (`SO_REUSEPORT`, so the
//! kernel spreads connections) and its own upstream connection pools.
//!
//! Why not one multi-threaded runtime: a proxied request is two connections and
//! several tasks (the client's connection, the handler, the upstream connection
//! driver). Spread over worker threads, every hop between them is a futex wake and
//! an eventfd write; the load harness showed those syscalls outnumbering the
//! socket reads and writes themselves. Here a request stays on one thread from
//! accept to answer, as in Envoy's worker model. A connection is pinned to the
//! worker that accepted it; keep-alive clients spread by the kernel's hash.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

use super::{AppState, Shared, serve};
use crate::config::ServerConfig;

/// Binds `count` listening sockets to `addr` (the first one picks the port when
/// it is 0; the others join it).
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<TcpListener>> {
    let first = listen(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(listen(bound)?);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The running worker threads.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    exited: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Workers {
    /// Starts one worker per listener. Each stops accepting when `shutdown`
    /// turns true and finishes within the configured grace period.
    pub fn start(
        config: Arc<ServerConfig>,
        shared: Shared,
        listeners: Vec<TcpListener>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let mut threads = Vec::new();
        let (exit_tx, exited) = tokio::sync::mpsc::unbounded_channel();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = config.clone();
            let shared = shared.clone();
            let mut shutdown = shutdown.clone();
            let exit_tx = exit_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let result = runtime.block_on(async move {
                        let state =
                            AppState::new(config, &shared).map_err(std::io::Error::other)?;
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let stop = async move {
                            let _ = shutdown.wait_for(|stop| *stop).await;
                        };
                        serve(Arc::new(state), listener, stop).await
                    });
                    let _ = exit_tx.send(());
                    result
                })?;
            threads.push(thread);
        }
        Ok(Self { threads, exited })
    }

    /// Resolves when any worker has stopped (normally only after shutdown).
    pub async fn any_exited(&mut self) {
        let _ = self.exited.recv().await;
    }

    /// Waits for every worker; the first error wins.
    pub fn join(self) -> std::io::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a worker thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}
