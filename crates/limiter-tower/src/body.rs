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
    }
}

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
        }
    }

    /// A complete body (a rendered refusal).
    pub fn full(data: impl Into<Bytes>) -> Self {
        LimitBody {
            inner: None,
            full: Some(data.into()),
            guard: None,
        }
    }

    /// The inner body, holding `guard` until it ends or is dropped.
    pub(crate) fn guarded(inner: B, guard: Box<dyn BodyGuard>) -> Self {
        LimitBody {
            inner: Some(inner),
            full: None,
            guard: Some(guard),
        }
    }
}

impl<B> Body for LimitBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(this.full.take().map(|d| Ok(Frame::data(d))));
        };
        let polled = std::task::ready!(inner.poll_frame(cx));
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
