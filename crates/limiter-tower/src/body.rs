//! [`LimitBody`]: the response body every layer of this crate returns. It is either the inner
//! service's body, carrying a guard that lives until the body ends, or a rendered refusal.
//!
//! The guard is what keeps an admission slot for as long as a streamed answer runs, and what
//! tells a quota hook whether any byte went out. It is told about each data frame, about the end
//! (or an error) of the body, and dropped with the body: a client that disconnects drops the body,
//! so the guard's `Drop` frees what it holds (as tower-http's in-flight counter does).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Something held while a response body is being sent.
pub(crate) trait BodyGuard: Send + 'static {
    /// A data frame is about to go out.
    fn data(&mut self) {}
    /// The body ended: `ok` is false when it ended with an error.
    fn end(self: Box<Self>, ok: bool);
}

pin_project! {
    /// A response body: the inner service's, with what the layer holds until it ends, or a
    /// refusal rendered by a [`crate::RejectionRenderer`].
    ///
    /// ```
    /// use http_body::Body;
    /// use limiter_tower::LimitBody;
    ///
    /// let body: LimitBody<String> = LimitBody::full("refused");
    /// assert_eq!(body.size_hint().exact(), Some(7));
    /// ```
    pub struct LimitBody<B> {
        #[pin]
        inner: Option<B>,
        full: Option<Bytes>,
        guard: Option<Box<dyn BodyGuard>>,
        // Ends the body with an error when it resolves: the slot the body held was revoked.
        stop: Option<BoxFuture<'static, ()>>,
    }
}

/// The error a [`LimitBody`] ends with: the inner body's, or [`Revoked`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body was cut because the admission slot it held was revoked (its replica could not keep
/// the slot counted in Redis; see `limiter_core::Revocation`). The client sees the response
/// end abnormally, never a truncated body passed off as complete.
#[derive(Debug, thiserror::Error)]
#[error("admission slot revoked: response cut")]
pub struct Revoked;

impl<B> std::fmt::Debug for LimitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitBody")
            .field("inner", &self.inner.is_some())
            .field("guarded", &self.guard.is_some())
            .finish()
    }
}

impl<B> LimitBody<B> {
    /// The inner service's body, unchanged.
    pub fn new(inner: B) -> Self {
        LimitBody {
            inner: Some(inner),
            full: None,
            guard: None,
            stop: None,
        }
    }

    /// A complete body (a rendered refusal).
    pub fn full(data: impl Into<Bytes>) -> Self {
        LimitBody {
            inner: None,
            full: Some(data.into()),
            guard: None,
            stop: None,
        }
    }

    /// The inner body, holding `guard` until it ends or is dropped.
    pub(crate) fn guarded(inner: B, guard: Box<dyn BodyGuard>) -> Self {
        LimitBody {
            inner: Some(inner),
            full: None,
            guard: Some(guard),
            stop: None,
        }
    }

    /// Cuts the body (ending it with [`Revoked`]) when `stop` resolves.
    pub(crate) fn stop_when(mut self, stop: BoxFuture<'static, ()>) -> Self {
        self.stop = Some(stop);
        self
    }
}

impl<B> Body for LimitBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(stop) = this.stop.as_mut()
            && stop.as_mut().poll(cx).is_ready()
        {
            *this.stop = None;
            // The inner body goes now: what it holds upstream (a streamed call) stops too.
            this.inner.set(None);
            if let Some(g) = this.guard.take() {
                g.end(false);
            }
            return Poll::Ready(Some(Err(Box::new(Revoked))));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(this.full.take().map(|d| Ok(Frame::data(d))));
        };
        let polled = std::task::ready!(inner.poll_frame(cx)).map(|r| r.map_err(Into::into));
        match &polled {
            Some(Ok(frame)) => {
                if frame.is_data()
                    && let Some(g) = this.guard.as_mut()
                {
                    g.data();
                }
            }
            Some(Err(_)) => {
                if let Some(g) = this.guard.take() {
                    g.end(false);
                }
            }
            None => {
                if let Some(g) = this.guard.take() {
                    g.end(true);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            // While a guard waits for the end, say "not yet": the server then polls once more and
            // the guard learns that the body completed (instead of only being dropped).
            Some(b) => self.guard.is_none() && b.is_end_stream(),
            None => self.full.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(self.full.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
