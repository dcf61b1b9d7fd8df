//! The request body, read with a bound: counted frame by frame as it streams in and
//! refused as soon as it passes `max_body`, so an oversize body is never held whole.
//! Frames are copied into one buffer (sized from `Content-Length` when given), so a body
//! at the limit costs its size once, not twice. A body that stalls (no bytes for the
//! `stall` time) ends the request too: a slowloris on the body holds nothing for long.
//! Every byte is first covered by the sandbox's `max_body_buffer` budget: a declared
//! `Content-Length` all at once before reading, a chunked body in steps of `STEP`.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::limits::budget::{Exhausted, Held};

/// A chunked body's share of the budget grows in steps of this many bytes.
pub const STEP: u64 = 64 << 10;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body grew past the limit; reading stopped there.
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// No bytes arrived for this long.
    #[error("no body bytes arrived for {0:?}")]
    Stalled(std::time::Duration),
    /// The client's stream broke (or was malformed) before the end.
    #[error("{0}")]
    Stream(Box<dyn std::error::Error + Send + Sync>),
    /// The sandbox's `max_body_buffer` has no room for the body.
    #[error("{0}")]
    Budget(#[from] Exhausted),
}

/// Reads `body` whole if it is at most `max` bytes, each frame arriving within `stall`.
/// `declared` is its `Content-Length`. `share` grows to cover the bytes before they are
/// read; the caller keeps it as long as it keeps the bytes.
pub async fn read_limited<B>(
    mut body: B,
    max: u64,
    declared: Option<u64>,
    stall: std::time::Duration,
    share: &mut Held,
) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared.is_some_and(|n| n > max) {
        return Err(ReadError::TooLarge { limit: max });
    }
    share.cover(declared.unwrap_or(0))?;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        let Ok(next) = tokio::time::timeout(stall, body.frame()).await else {
            return Err(ReadError::Stalled(stall));
        };
        let Some(frame) = next else {
            break;
        };
        let frame = frame.map_err(|e| ReadError::Stream(e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let len = buf.len() as u64 + data.len() as u64;
        if len > max {
            return Err(ReadError::TooLarge { limit: max });
        }
        // A declared body is covered already (a no-op unless it outgrows its length).
        share.cover(match declared {
            Some(_) => len,
            None => len.next_multiple_of(STEP).min(max),
        })?;
        if buf.is_empty() && declared.is_none() && body.is_end_stream() {
            return Ok(data); // one frame: no copy
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::Full;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// `left` frames of `size` bytes each.
    struct Chunks {
        left: usize,
        size: usize,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
        }
    }

    const T: std::time::Duration = std::time::Duration::from_secs(30);

    /// A body that never sends anything.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_the_read() {
        let e = read_limited(Silent, 40, Some(10), T, &mut Held::unbounded())
            .await
            .unwrap_err();
        assert!(matches!(e, ReadError::Stalled(t) if t == T));
    }

    #[tokio::test]
    async fn bodies_within_and_over_the_limit() {
        let b = read_limited(
            Chunks { left: 4, size: 10 },
            40,
            None,
            T,
            &mut Held::unbounded(),
        )
        .await
        .unwrap();
        assert_eq!(b.len(), 40);
        let e = read_limited(
            Chunks { left: 5, size: 10 },
            40,
            None,
            T,
            &mut Held::unbounded(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 40 }));
        // An endless body is refused once past the limit, not read to its end.
        let e = read_limited(
            Chunks {
                left: usize::MAX,
                size: 1000,
            },
            40_000,
            None,
            T,
            &mut Held::unbounded(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }));
        let e = read_limited(
            Full::new(Bytes::from_static(b"{}")),
            40,
            Some(41),
            T,
            &mut Held::unbounded(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, ReadError::TooLarge { .. }),
            "refused before reading"
        );
        let one = read_limited(
            Full::new(Bytes::from_static(b"{}")),
            40,
            None,
            T,
            &mut Held::unbounded(),
        )
        .await
        .unwrap();
        assert_eq!(&one[..], b"{}");
    }

    #[tokio::test]
    async fn the_budget_covers_the_bytes_before_they_are_read() {
        let budget = crate::limits::budget::BodyBudget::new(128 << 10);
        let max = 1 << 20;
        // Declared: all of it up front, refused before a byte is read.
        let mut share = budget.share();
        let e = read_limited(Silent, max, Some(200 << 10), T, &mut share)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ReadError::Budget(x) if x.max == 128 << 10),
            "{e:?}"
        );
        assert_eq!(budget.held(), 0);
        let b = read_limited(
            Chunks {
                left: 2,
                size: 50 << 10,
            },
            max,
            Some(100 << 10),
            T,
            &mut share,
        )
        .await
        .unwrap();
        assert_eq!((b.len(), share.bytes()), (100 << 10, 100 << 10));
        drop(share);
        // Chunked: in steps of STEP, refused once a step does not fit.
        let mut share = budget.share();
        let b = read_limited(Chunks { left: 1, size: 10 }, max, None, T, &mut share)
            .await
            .unwrap();
        assert_eq!((b.len(), budget.held()), (10, STEP));
        let mut other = budget.share();
        let e = read_limited(
            Chunks {
                left: 3,
                size: 50 << 10,
            },
            max,
            None,
            T,
            &mut other,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, ReadError::Budget(x) if x.held == 2 * STEP),
            "{e:?}"
        );
        assert_eq!(other.bytes(), STEP, "the first step fitted");
        drop((share, other));
        assert_eq!(budget.held(), 0);
    }
}
