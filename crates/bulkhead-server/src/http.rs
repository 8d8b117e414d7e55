//! The HTTP/1.1 listener. Every connection is bounded in time and in number, so a slow or half-open client costs a
//! file descriptor for a few seconds at most, never the server:
//!
//! * **header timeout**: a connection must deliver a complete request head within `header_timeout` of opening, or
//!   of the first byte of its next request (slowloris and half-open connections are closed);
//! * **idle keep-alive timeout**: a connection with no request in flight is closed after `keep_alive_timeout`;
//! * **connection limit**: at most `max_connections` are served at once. One more makes the oldest connection that
//!   has not delivered a first request head yet give way (the half-open and slowloris ones are those), so clients
//!   that send requests keep being served; when every connection has sent one, the newcomer is answered `503` with
//!   the JSON error body and `Retry-After`, then closed. The accept loop never stalls;
//! * **graceful shutdown**: stop accepting, let each connection finish its request in flight, close idle ones.
//!
//! The per-request deadline (`--request-timeout-s`) is a middleware of the router (`routes`), not a connection
//! timer: it answers 504 with the JSON error body.
//!
//! Timers follow each connection's phase ([`Activity`]): the socket wrapper sees the first byte of a request, the
//! service sees the request head complete, and the response body's end marks the connection idle again.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        app,
        limits,
        metrics,
        max,
        epoch: Instant::now(),
        stop: stop_rx,
        slots: Arc::new(Semaphore::new(max)),
        refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        unstarted: Unstarted::default(),
    });
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
        shared.take(stream);
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a slot until it ends.
    let _all = shared.slots.acquire_many(max as u32).await;
    Ok(())
}

/// What the accept loop and the connection tasks share.
struct Shared {
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    max: usize,
    epoch: Instant,
    stop: watch::Receiver<bool>,
    /// One permit per connection served.
    slots: Arc<Semaphore>,
    /// One permit per connection being refused or waiting for the slot of a connection that gives way.
    refusing: Arc<Semaphore>,
    unstarted: Unstarted,
}

impl Shared {
    /// Serves `stream` in a slot of its own, or in the slot of the oldest connection without a request, or refuses
    /// it.
    fn take(self: &Arc<Self>, stream: TcpStream) {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            self.spawn(stream, slot);
            return;
        }
        let Ok(waiting) = self.refusing.clone().try_acquire_owned() else {
            // Too many at once even to answer: close it.
            self.metrics.connection_refused();
            return;
        };
        let gives_way = self.unstarted.evict_oldest();
        let me = self.clone();
        tokio::spawn(async move {
            // The connection giving way frees its slot as soon as its task sees the signal.
            let slot = if gives_way {
                tokio::time::timeout(Duration::from_secs(1), me.slots.clone().acquire_owned()).await.ok()
            } else {
                None
            };
            match slot {
                Some(Ok(slot)) => {
                    drop(waiting);
                    me.spawn(stream, slot);
                }
                _ => {
                    me.metrics.connection_refused();
                    refuse(stream, ApiError::TooManyConnections(me.max)).await;
                    drop(waiting);
                }
            }
        });
    }

    fn spawn(self: &Arc<Self>, stream: TcpStream, slot: tokio::sync::OwnedSemaphorePermit) {
        // Registered before the task runs, so that the next connection at the limit already sees it.
        let activity = Arc::new(Activity::new(self.epoch));
        self.unstarted.push(&activity, self.max);
        let me = self.clone();
        tokio::spawn(async move {
            me.metrics.connection_opened();
            let close = serve_connection(stream, activity, &me).await;
            me.metrics.connection_closed(close);
            drop(slot);
        });
    }
}

/// Connections that have not delivered a first request head, oldest first: the ones that give way at the limit.
#[derive(Default)]
struct Unstarted(std::sync::Mutex<VecDeque<Weak<Activity>>>);

impl Unstarted {
    fn push(&self, a: &Arc<Activity>, max: usize) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= 2 * max {
            q.retain(|w| w.upgrade().is_some_and(|a| a.start.load(Ordering::Relaxed) == UNSTARTED));
        }
        q.push_back(Arc::downgrade(a));
    }

    /// Tells the oldest connection still without a request to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(w) = q.pop_front() {
            if w.upgrade().is_some_and(|a| a.evict()) {
                return true;
            }
        }
        false
    }
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

/// Serves one connection until the client closes it, a timer closes it, it gives way at the limit, or shutdown has
/// let it finish.
async fn serve_connection(stream: TcpStream, activity: Arc<Activity>, shared: &Shared) -> ConnectionClose {
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = {
        let (activity, app) = (activity.clone(), shared.app.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            activity.started();
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
    let timer = watchdog(&activity, shared.limits);
    tokio::pin!(timer);
    let mut stop = shared.stop.clone();
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return ConnectionClose::Ended,
            // Dropping the connection closes the socket: nothing is in flight in these cases.
            why = &mut timer => return why,
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
    /// [`UNSTARTED`], [`STARTED`] (a request head arrived) or [`EVICTED`] (told to give way before one did).
    start: AtomicU8,
}

const UNSTARTED: u8 = 0;
const STARTED: u8 = 1;
const EVICTED: u8 = 2;

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity {
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            epoch,
            changed: Notify::new(),
            start: AtomicU8::new(UNSTARTED),
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

    /// A request head arrived: the connection no longer gives way at the limit.
    fn started(&self) {
        let _ = self.start.compare_exchange(UNSTARTED, STARTED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Asks a connection that has not started to close; false when it has started (or was asked already).
    fn evict(&self) -> bool {
        let won = self.start.compare_exchange(UNSTARTED, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if won {
            self.changed.notify_one();
        }
        won
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

/// Resolves once the connection stays idle or in its request head too long, or is told to give way.
async fn watchdog(activity: &Activity, limits: ConnectionLimits) -> ConnectionClose {
    loop {
        if activity.start.load(Ordering::Acquire) == EVICTED {
            return ConnectionClose::GaveWay;
        }
        let (phase, since) = activity.get();
        let (limit, why) = match phase {
            Phase::Idle => (limits.keep_alive_timeout, ConnectionClose::IdleTimeout),
            Phase::Head => (limits.header_timeout, ConnectionClose::HeaderTimeout),
            Phase::Busy => {
                activity.changed.notified().await;
                continue;
            }
        };
        let deadline = activity.epoch + Duration::from_millis(since) + limit;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if activity.get() == (phase, since) {
                    return why;
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
        assert_eq!(watchdog(&a, limits()).await, ConnectionClose::HeaderTimeout);
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
        assert_eq!(watchdog(&a, limits()).await, ConnectionClose::IdleTimeout);
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
        assert_eq!(watchdog(&a, limits()).await, ConnectionClose::HeaderTimeout);
        assert_eq!(t0.elapsed(), Duration::from_secs(6), "4 s idle, then 2 s in the head");
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_connection_without_a_request_gives_way() {
        let q = Unstarted::default();
        let (old, served, new) = (
            Arc::new(Activity::new(Instant::now())),
            Arc::new(Activity::new(Instant::now())),
            Arc::new(Activity::new(Instant::now())),
        );
        for a in [&served, &old, &new] {
            q.push(a, 4);
        }
        served.started();
        assert!(q.evict_oldest(), "`old` gives way: `served` has sent a request");
        assert_eq!(watchdog(&old, limits()).await, ConnectionClose::GaveWay);
        assert!(!served.evict(), "a connection that sent a request never gives way");
        assert!(q.evict_oldest() && !q.evict_oldest(), "then `new`, then nobody");
        new.started();
        assert_eq!(new.start.load(Ordering::Relaxed), EVICTED, "a request after the signal does not undo it");
    }
}
