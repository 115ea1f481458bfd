//! What one client connection may cost: [`GuardedIo`] wraps each accepted socket and fails it (so
//! hyper drops the connection) when the client is too slow, and holds one of the replica's
//! connection permits for as long as the socket lives.
//!
//! - **Idle**: no request running and no byte of a next one for `FLEETGATE_HTTP_IDLE_TIMEOUT_MS`
//!   (also right after connecting).
//! - **Header**: no request running, and the request whose first byte arrived has not been handed
//!   to the service within `FLEETGATE_HTTP_HEADER_TIMEOUT_MS` (a client dribbling its headers).
//! - **Write stall**: a write has made no progress for `FLEETGATE_HTTP_WRITE_TIMEOUT_MS` (the
//!   client stopped reading and every buffer on the way is full, e.g. an SSE stream nobody reads).
//!
//! While a request runs, reads have no deadline: the handler has its own (queue timeout, upstream
//! timeouts, the body deadline of [`crate::server::json::ValidJson`]). "A request runs" is counted by
//! [`track_request`] from the moment hyper hands a request to the service until its response body
//! has ended or been dropped ([`InFlight`], held in the response body, as tower-http's in-flight
//! counter does).
//!
//! hyper's own `header_read_timeout` is not used: its clock also runs while a kept-alive
//! connection waits for its next request, so it cannot give an idle timeout longer than the
//! header timeout, and the idle timeout must outlast the load balancer's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) write: Duration,
    pub(crate) body: Duration,
}

/// What a connection's socket wrapper and its requests share.
#[derive(Debug)]
pub struct Activity {
    /// Requests handed to the service whose response has not ended.
    in_flight: AtomicUsize,
    /// Incremented each time the connection turns idle (no request running).
    idle_generation: AtomicU64,
    /// Time the connection last turned idle, ms since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// The reader to wake when the connection turns idle, so its deadline is armed even if
    /// nothing else would poll the socket.
    reader: Mutex<Option<Waker>>,
    limits: ConnLimits,
}

impl Activity {
    fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_generation: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            reader: Mutex::new(None),
            limits,
        })
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// A request starts running.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Some(Arc::clone(self)))
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.idle_since_ms.store(ms, Ordering::Release);
            self.idle_generation.fetch_add(1, Ordering::AcqRel);
            let waker = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// One running request of a connection; ends it when dropped (or when its body ends).
#[derive(Debug)]
pub struct InFlight(Option<Arc<Activity>>);

impl InFlight {
    fn finish(&mut self) {
        if let Some(a) = self.0.take() {
            a.end();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish();
    }
}

/// An accepted socket with the connection's deadlines and its permit.
#[derive(Debug)]
pub struct GuardedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// When the first byte of the current idle period arrived, and in which idle period.
    head_started: Option<(u64, Instant)>,
    read_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    write_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Arms (or moves) a timer to `deadline` and reports whether it has passed.
fn expired(
    timer: &mut Option<(Instant, Pin<Box<Sleep>>)>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> bool {
    match timer {
        Some((at, sleep)) if *at == deadline => sleep.as_mut().poll(cx).is_ready(),
        Some((at, sleep)) => {
            *at = deadline;
            sleep.as_mut().reset(deadline);
            sleep.as_mut().poll(cx).is_ready()
        }
        None => {
            let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
            let done = sleep.as_mut().poll(cx).is_ready();
            *timer = Some((deadline, sleep));
            done
        }
    }
}

impl GuardedIo {
    pub(crate) fn new(
        inner: TcpStream,
        limits: ConnLimits,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        GuardedIo {
            inner,
            activity: Activity::new(limits),
            head_started: None,
            read_timer: None,
            write_timer: None,
            _permit: permit,
        }
    }

    /// The deadline of a read that would wait now, if any.
    fn read_deadline(&mut self) -> Option<Instant> {
        let a = &self.activity;
        if a.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let generation = a.idle_generation.load(Ordering::Acquire);
        match self.head_started {
            Some((g, at)) if g == generation => Some(at + a.limits.header),
            _ => Some(a.idle_since() + a.limits.idle),
        }
    }

    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let deadline = match &self.write_timer {
            Some((at, _)) => *at,
            None => Instant::now() + self.activity.limits.write,
        };
        if expired(&mut self.write_timer, deadline, cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let a = &self.activity;
                    let generation = a.idle_generation.load(Ordering::Acquire);
                    let fresh = !matches!(self.head_started, Some((g, _)) if g == generation);
                    if fresh && a.in_flight.load(Ordering::Acquire) == 0 {
                        self.head_started = Some((generation, Instant::now()));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                *self
                    .activity
                    .reader
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
                match self.read_deadline() {
                    Some(deadline) => {
                        let this = &mut *self;
                        if expired(&mut this.read_timer, deadline, cx) {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "client too slow or idle",
                            )));
                        }
                        Poll::Pending
                    }
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.write_pending(cx).map(|r| r.map(|()| 0)),
            other => {
                self.write_timer = None;
                other
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.write_pending(cx).map(|r| r.map(|()| 0)),
            other => {
                self.write_timer = None;
                other
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_pending(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.write_pending(cx),
            other => other,
        }
    }
}

/// The connect info of a guarded connection: its peer and its shared activity.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The socket peer.
    pub addr: SocketAddr,
    activity: Arc<Activity>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, super::StopAccepting>>
    for ConnInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::StopAccepting>) -> Self {
        ConnInfo {
            addr: *stream.remote_addr(),
            activity: Arc::clone(&stream.io().activity),
        }
    }
}

/// The time by which a request's body must have been read (see [`crate::server::json::ValidJson`]).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// Middleware (outermost, on served connections): counts the request as running until its
/// response body ends, sets its [`BodyDeadline`], and exposes the peer as
/// `ConnectInfo<SocketAddr>` to the layers inside.
pub async fn track_request(mut req: Request, next: Next) -> Response {
    let Some(ConnectInfo(info)) = req.extensions().get::<ConnectInfo<ConnInfo>>().cloned() else {
        return next.run(req).await;
    };
    let running = info.activity.begin();
    req.extensions_mut().insert(ConnectInfo(info.addr));
    req.extensions_mut()
        .insert(BodyDeadline(Instant::now() + info.activity.limits.body));
    let resp = next.run(req).await;
    resp.map(|inner| {
        Body::new(TrackedBody {
            inner,
            running: Some(running),
        })
    })
}

/// A response body that ends its request's [`InFlight`] when it ends or is dropped.
struct TrackedBody {
    inner: Body,
    running: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.running = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
