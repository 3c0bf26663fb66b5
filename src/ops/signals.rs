//! Signals, registered before the server announces that it serves (log line, `READY=1`): a SIGHUP or
//! SIGTERM sent as soon as it says so must reload or stop it, not meet the default action (which kills).

/// SIGHUP, registered now; `None` if the OS refused (or on a platform without it). The file watch
/// ([`crate::ops::reload::watch`]) reloads on it.
#[cfg(unix)]
pub type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub type Hangup = Option<()>;

/// Registers the SIGHUP handler now (see [`Hangup`]).
pub fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The next SIGHUP; never, without a handler.
pub async fn next_hangup(hup: &mut Hangup) {
    #[cfg(unix)]
    match hup.as_mut() {
        Some(h) => {
            if h.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
    #[cfg(not(unix))]
    {
        let _ = hup;
        std::future::pending::<()>().await
    }
}

/// Registers the SIGTERM handler at once (not on first poll) and returns the future that waits for
/// SIGTERM or an interrupt (Ctrl-C).
pub fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt: shutting down");
    }
}
