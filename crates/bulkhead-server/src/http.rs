//! The HTTP/1.1 listener. Every connection is bounded in time and in number, so a slow or half-open client costs a
//! file descriptor for a few seconds at most, never the server:
//!
//! * **header timeout**: a connection must deliver a complete request head within `header_timeout` of opening, or
//!   of the first byte of its next request (slowloris and half-open connections are closed);
//! * **idle keep-alive timeout**: a connection with no request in flight is closed after `keep_alive_timeout`;
//! * **connection limit**: at most `max_connections` are served at once; one more is answered `503` with the JSON
//!   error body and `Retry-After`, then closed, without ever stalling the accept loop;
//! * **graceful shutdown**: stop accepting, let each connection finish its request in flight, close idle ones.
//!
//! The per-request deadline (`--request-timeout-s`) is a middleware of the router (`routes`), not a connection
//! timer: it answers 504 with the JSON error body.
//!
//! Timers follow each connection's phase ([`Activity`]): the socket wrapper sees the first byte of a request, the
//! service sees the request head complete, and the response body's end marks the connection idle again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower_service::Service;

use crate::error::ApiError;
use crate::metrics::{ConnectionClose, Metrics};

/// Time and count limits of the connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must be complete within this long of the connection opening or of its first byte.
    pub header_timeout: Duration,
    /// A connection without a request in flight is closed after this long.
    pub keep_alive_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Connections being refused at once (each for at most about two seconds); beyond, a refused connection is
/// closed without a response.
const MAX_REFUSING: usize = 256;

/// Serves `app` on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let epoch = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning; the connections we hold close on
                    // their timers.
                    tracing::warn!("accept failed: {e}; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (app, metrics, stop) = (app.clone(), metrics.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    metrics.connection_opened();
                    let close = serve_connection(stream, app, limits, epoch, stop).await;
                    metrics.connection_closed(close);
                    drop(slot);
                });
            }
            Err(_) => {
                metrics.connection_refused();
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, ApiError::TooManyConnections(max)).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a slot until it ends.
    let _all = slots.acquire_many(max as u32).await;
    Ok(())
}

/// Accept errors that concern one connection only (the next accept may succeed at once).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection the server cannot take: the error response, then an orderly close that lets the client read
/// it (its unread request is drained briefly so the close is not a reset).
async fn refuse(mut stream: TcpStream, err: ApiError) {
    let bytes = err.http1_bytes();
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(1), write).await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Serves one connection until the client closes it, a timer closes it, or shutdown has let it finish.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) -> ConnectionClose {
    let activity = Arc::new(Activity::new(epoch));
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            activity.set(Phase::Busy);
            let done = activity.clone();
            let mut app = app.clone();
            async move {
                let resp = app.call(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| IdleAtEnd { body, activity: Some(done) }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    tokio::pin!(conn);
    let timer = watchdog(&activity, limits);
    tokio::pin!(timer);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return ConnectionClose::Ended,
            // Dropping the connection closes the socket: nothing is in flight in these phases.
            phase = &mut timer => return match phase {
                Phase::Head => ConnectionClose::HeaderTimeout,
                _ => ConnectionClose::IdleTimeout,
            },
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight and no byte of the next one: the keep-alive timer runs.
    Idle = 0,
    /// Opened, or the first bytes of a request arrived: the header timer runs.
    Head = 1,
    /// A request is being served: no connection timer (the request deadline applies).
    Busy = 2,
}

/// A connection's phase and since when (milliseconds after `epoch`), shared by the socket wrapper, the service
/// and the watchdog; every change wakes the watchdog.
struct Activity {
    phase: AtomicU8,
    since_ms: AtomicU64,
    epoch: Instant,
    changed: Notify,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            epoch,
            changed: Notify::new(),
        };
        a.since_ms.store(a.now_ms(), Ordering::Relaxed);
        a
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    fn get(&self) -> (Phase, u64) {
        let phase = match self.phase.load(Ordering::Acquire) {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        };
        (phase, self.since_ms.load(Ordering::Relaxed))
    }
}

/// Resolves (with the phase that timed out) once the connection stays idle or in its request head too long.
async fn watchdog(activity: &Activity, limits: ConnectionLimits) -> Phase {
    loop {
        let (phase, since) = activity.get();
        let limit = match phase {
            Phase::Idle => limits.keep_alive_timeout,
            Phase::Head => limits.header_timeout,
            Phase::Busy => {
                activity.changed.notified().await;
                continue;
            }
        };
        let deadline = activity.epoch + Duration::from_millis(since) + limit;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if activity.get() == (phase, since) {
                    return phase;
                }
            }
            () = activity.changed.notified() => {}
        }
    }
}

/// The socket, noting the first byte of a request that arrives while the connection is idle.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before && self.activity.get().0 == Phase::Idle {
            self.activity.set(Phase::Head);
        }
        res
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

/// A response body that marks the connection idle once it has been sent (or dropped).
struct IdleAtEnd {
    body: Body,
    activity: Option<Arc<Activity>>,
}

impl IdleAtEnd {
    fn finish(&mut self) {
        if let Some(a) = self.activity.take() {
            a.set(Phase::Idle);
        }
    }
}

impl Drop for IdleAtEnd {
    fn drop(&mut self) {
        self.finish();
    }
}

impl hyper::body::Body for IdleAtEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let res = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(res, Poll::Ready(None)) {
            self.finish();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Raises this process's soft limit of open files to its hard limit (connections and worker pipes are files) and
/// returns the soft limit now in force (`None` where it cannot be read).
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_in_its_head() {
        let a = Activity::new(Instant::now());
        let t0 = Instant::now();
        assert_eq!(watchdog(&a, limits()).await, Phase::Head);
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_have_no_timer_and_idle_ones_the_keep_alive_one() {
        let a = Arc::new(Activity::new(Instant::now()));
        a.set(Phase::Busy);
        let t0 = Instant::now();
        let b = a.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            b.set(Phase::Idle);
        });
        assert_eq!(watchdog(&a, limits()).await, Phase::Idle);
        assert_eq!(t0.elapsed(), Duration::from_secs(35), "30 s busy, then 5 s idle");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_request_restarts_the_head_timer() {
        let a = Arc::new(Activity::new(Instant::now()));
        a.set(Phase::Idle);
        let t0 = Instant::now();
        let b = a.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            b.set(Phase::Head);
        });
        assert_eq!(watchdog(&a, limits()).await, Phase::Head);
        assert_eq!(t0.elapsed(), Duration::from_secs(6), "4 s idle, then 2 s in the head");
    }
}
