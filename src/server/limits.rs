//! Connection-level limits that hyper does not provide: an idle timeout that closes a connection on which
//! nothing was read or written for a while (idle keep-alive connections, and slow readers that stop
//! consuming a response).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many checks one idle timeout spans: a connection is closed after between `timeout` and
/// `timeout * (CHECKS + 1) / CHECKS` without progress.
const CHECKS: u32 = 4;

/// Wraps a connection and closes it once nothing was read or written for the timeout. Progress only sets a
/// flag; a timer that fires every `timeout / CHECKS` looks at it. Re-arming the timer on every read and
/// write instead (a clock read and a timer-wheel update each, twice per request) cost 1,400 instructions of
/// a 24,000-instruction keep-alive revalidation.
pub struct IdleTimeout<T> {
    inner: T,
    period: Duration,
    /// Read or written since the last check.
    active: bool,
    /// Checks in a row that found no progress.
    quiet: u32,
    check: Pin<Box<Sleep>>,
    /// The waker the timer was last polled with. While the same task waits and the timer has not fired,
    /// polling it again would only register the same waker again (~290 instructions of a keep-alive
    /// revalidation, which waits for its next request once per request).
    armed: Option<Waker>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> IdleTimeout<T> {
        let period = (timeout / CHECKS).max(Duration::from_millis(1));
        let check = Box::pin(tokio::time::sleep(period));
        IdleTimeout { inner, period, active: false, quiet: 0, check, armed: None }
    }

    fn progress(&mut self) {
        self.active = true;
    }

    /// A write's outcome: progress is noted; waiting past the timeout is an error.
    fn after_write(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle())),
            other => other,
        }
    }

    /// On `Pending`: runs the checks that are due and says whether the connection is to be dropped. The
    /// timer stays registered with `cx`, so a quiet connection is woken for its next check.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let same_task = self.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if same_task && !self.check.is_elapsed() {
            return false;
        }
        if !same_task {
            self.armed = Some(cx.waker().clone());
        }
        while self.check.as_mut().poll(cx).is_ready() {
            if std::mem::take(&mut self.active) {
                self.quiet = 0;
            } else {
                self.quiet += 1;
            }
            if self.quiet >= CHECKS {
                return true;
            }
            self.check.as_mut().reset(Instant::now() + self.period);
        }
        false
    }
}

fn idle() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(8);

    fn within_a_check_of_the_timeout(waited: Duration) -> bool {
        waited >= TIMEOUT && waited <= TIMEOUT + TIMEOUT / CHECKS
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_progress_stays_open_and_closes_once_quiet() {
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut conn = IdleTimeout::new(ours, TIMEOUT);
        let reader = tokio::spawn(async move {
            let (mut bytes, mut buf) = (0, [0u8; 16]);
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => return (bytes, None),
                    Ok(n) => bytes += n,
                    Err(e) => return (bytes, Some((e.kind(), Instant::now()))),
                }
            }
        });
        // A byte every 6 s for two minutes: four checks never pass without progress.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            peer.write_all(b"x").await.unwrap();
        }
        let last = Instant::now();
        let (bytes, closed) = reader.await.unwrap();
        assert_eq!(bytes, 20, "every byte was read before the connection was closed");
        let (kind, at) = closed.expect("the quiet connection was closed");
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(within_a_check_of_the_timeout(at - last), "closed {:?} after the last byte", at - last);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped() {
        let (ours, _peer) = tokio::io::duplex(64);
        let mut conn = IdleTimeout::new(ours, TIMEOUT);
        let started = Instant::now();
        let e = conn.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(within_a_check_of_the_timeout(started.elapsed()), "{:?}", started.elapsed());
    }
}
