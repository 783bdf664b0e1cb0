//! Watching an answer's body as it passes to the client, without holding
//! it back: the meter ([`super::meter`]) and the cache's keeper
//! ([`super::caching`]) are observers of the same kind. A body stays a
//! body (its size hint is kept unless the observer rewrites frames), and the
//! observer is told once how it ended.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

/// How an observed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its last byte left (or it had none).
    Complete,
    /// The body failed (an upstream break the relay could not turn into an
    /// error event).
    Failed,
    /// Dropped before its end: the client went away.
    Dropped,
}

/// What watches a body.
pub trait Observer: Send + Unpin + 'static {
    /// One data frame. `None` passes it on as it is; `Some(bytes)` passes
    /// `bytes` instead (nothing yet when empty).
    fn data(&mut self, data: &Bytes) -> Option<Bytes>;

    /// The body ended; what the observer held back, passed on last (when
    /// it ended complete).
    fn end(self, how: End) -> Option<Bytes>;

    /// Whether [`Observer::data`] may change the frames (the length is
    /// then unknown).
    fn rewrites(&self) -> bool {
        false
    }
}

/// The frames of a body kept as they pass, up to `limit` bytes: a frame that
/// would go past it ends the keeping, so what is kept is always the body's
/// start, whole frames, in order.
#[derive(Debug)]
pub struct Kept {
    parts: Vec<Bytes>,
    len: usize,
    limit: usize,
    overflowed: bool,
}

impl Kept {
    pub fn new(limit: usize) -> Self {
        Self {
            parts: Vec::new(),
            len: 0,
            limit,
            overflowed: false,
        }
    }

    pub fn push(&mut self, data: &Bytes) {
        if self.overflowed || self.len + data.len() > self.limit {
            self.overflowed = true;
            return;
        }
        self.parts.push(data.clone());
        self.len += data.len();
    }

    /// Whether the body went past the limit (what is kept is only its start).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// What is kept: the one frame itself, or the frames joined.
    pub fn into_bytes(mut self) -> Bytes {
        if self.parts.len() == 1 {
            return self.parts.pop().unwrap_or_default();
        }
        Bytes::from(self.parts.concat())
    }

    /// What is kept, in an allocation of its own (a frame may be a slice of
    /// a much larger read buffer, which a kept slice would pin).
    pub fn copied(&self) -> Bytes {
        Bytes::from(self.parts.concat())
    }
}

/// `body` with `observer` on it.
pub fn observed<O: Observer>(body: Body, observer: O) -> Body {
    let rewrites = observer.rewrites();
    Body::new(Observed {
        inner: body,
        observer: Some(observer),
        rewrites,
        tail: None,
    })
}

struct Observed<O: Observer> {
    inner: Body,
    /// Taken when it is told the end.
    observer: Option<O>,
    rewrites: bool,
    /// What the observer held back, passed on at the end.
    tail: Option<Bytes>,
}

impl<O: Observer> Observed<O> {
    fn end(&mut self, how: End) {
        if let Some(observer) = self.observer.take()
            && let Some(tail) = observer.end(how).filter(|t| !t.is_empty())
        {
            self.tail = Some(tail);
        }
    }
}

impl<O: Observer> http_body::Body for Observed<O> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(tail) = this.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.end(End::Complete);
                    return Poll::Ready(this.tail.take().map(|t| Ok(Frame::data(t))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.end(End::Failed);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let out = match (&mut this.observer, frame.data_ref()) {
                (Some(observer), Some(data)) => match observer.data(data) {
                    None => frame,
                    Some(out) if out.is_empty() && !this.inner.is_end_stream() => continue,
                    Some(out) => Frame::data(out),
                },
                _ => frame,
            };
            // A body that knows it is over (a JSON answer) may not be polled
            // again: the observer is told now.
            if this.inner.is_end_stream() {
                this.end(End::Complete);
            }
            return Poll::Ready(Some(Ok(out)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.tail.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.rewrites {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<O: Observer> Drop for Observed<O> {
    fn drop(&mut self) {
        // Not polled to its end: complete only if nothing was left.
        let how = if self.inner.is_end_stream() {
            End::Complete
        } else {
            End::Dropped
        };
        self.end(how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Upper-cases frames, holds back a final `!`, and says how it ended.
    struct Shout(Arc<Mutex<Option<End>>>);

    impl Observer for Shout {
        fn data(&mut self, data: &Bytes) -> Option<Bytes> {
            Some(Bytes::from(data.to_ascii_uppercase()))
        }
        fn end(self, how: End) -> Option<Bytes> {
            *self.0.lock().expect("lock") = Some(how);
            Some(Bytes::from_static(b"!"))
        }
        fn rewrites(&self) -> bool {
            true
        }
    }

    #[test]
    fn kept_bytes_are_the_start_of_the_body_in_whole_frames() {
        let mut kept = Kept::new(5);
        for part in ["ab", "cde", "f", "g"] {
            kept.push(&Bytes::from_static(part.as_bytes()));
        }
        assert!(kept.overflowed());
        // Not "abcdeg" nor "abcdef": after the first frame that does not
        // fit, nothing more.
        assert_eq!(&kept.copied()[..], b"abcde");
        let mut one = Kept::new(5);
        one.push(&Bytes::from_static(b"xy"));
        assert!(!one.overflowed());
        assert_eq!(&one.into_bytes()[..], b"xy");
    }

    #[tokio::test]
    async fn observers_see_every_frame_and_the_end_once() {
        let seen = Arc::new(Mutex::new(None));
        let parts = futures_util::stream::iter(
            ["ab", "cd"]
                .map(|s| Ok::<_, std::convert::Infallible>(Bytes::from_static(s.as_bytes()))),
        );
        let body = observed(Body::from_stream(parts), Shout(seen.clone()));
        let out = axum::body::to_bytes(body, 1024).await.expect("body");
        assert_eq!(&out[..], b"ABCD!");
        assert_eq!(*seen.lock().expect("lock"), Some(End::Complete));

        // A whole body, read at once: complete without a last poll.
        let seen = Arc::new(Mutex::new(None));
        let body = observed(Body::from("xy"), Shout(seen.clone()));
        assert_eq!(
            &axum::body::to_bytes(body, 1024).await.expect("body")[..],
            b"XY!"
        );
        assert_eq!(*seen.lock().expect("lock"), Some(End::Complete));

        // Dropped unread: the client went away.
        let seen = Arc::new(Mutex::new(None));
        let pending = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        drop(observed(Body::from_stream(pending), Shout(seen.clone())));
        assert_eq!(*seen.lock().expect("lock"), Some(End::Dropped));
    }
}
