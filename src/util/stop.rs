//! The one stop signal of sipcfg's tasks (accept loops, file watch, token-state watch, certificate checks,
//! the systemd watchdog): a [`StopHandle`] sends it once, every [`Stop`] cloned from it sees it, including
//! one that starts waiting afterwards.

use tokio::sync::watch;

/// Sends the stop signal. Dropping it stops every [`Stop`] too, so a task never outlives its owner's handle.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

/// Waits for the stop signal.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

/// A stop signal and its first receiver.
pub fn stop_signal() -> (StopHandle, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopHandle(tx), Stop(rx))
}

impl StopHandle {
    /// Stops every receiver, now and later.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Another receiver of this signal.
    pub fn subscribe(&self) -> Stop {
        Stop(self.0.subscribe())
    }
}

impl Stop {
    /// Completes once the signal was sent (or its handle dropped).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Whether the signal was sent.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_sees_the_signal_even_a_late_one() {
        let (handle, mut first) = stop_signal();
        let mut second = first.clone();
        assert!(!first.is_stopped());
        handle.stop();
        first.stopped().await;
        second.stopped().await;
        let mut late = handle.subscribe();
        late.stopped().await;
        assert!(late.is_stopped());
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_too() {
        let (handle, mut stop) = stop_signal();
        drop(handle);
        stop.stopped().await;
    }
}
