//! systemd integration: the `sd_notify(3)` protocol, spoken over the datagram socket systemd names in
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), and the service watchdog.
//!
//! | call | sends | when |
//! |---|---|---|
//! | [`notify_ready`] | `READY=1` | every listener bound and the first deployment loaded; again after each reload |
//! | [`notify_reloading`] | `RELOADING=1`, `MONOTONIC_USEC=` | a reload begins (SIGHUP or changed files) |
//! | [`notify_stopping`] | `STOPPING=1` | SIGTERM received, before open requests drain |
//! | [`notify_status`] | `STATUS=` | free text for `systemctl status` |
//! | [`watchdog`] | `WATCHDOG=1` | every half `WATCHDOG_USEC`, while the runtime is alive |
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing and returns `Ok`. Failures are returned,
//! never fatal: a server that cannot tell systemd it is ready still serves, and the caller logs.
//!
//! The packaged unit (`packaging/sipcfg.service`) is `Type=notify` with `ExecReload=kill -HUP`: Debian 12's
//! systemd (252) predates `Type=notify-reload` (253). `MONOTONIC_USEC` is sent with `RELOADING=1` anyway,
//! so a unit switched to `Type=notify-reload` on a newer systemd works unchanged.
//!
//! The environment is only read, never changed (`remove_var` is unsafe in a threaded program); sipcfg starts
//! no child processes that could inherit it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::time::Duration;

/// The environment variable naming the service manager's notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the service is ready: after start (listeners bound, first load done) and after a reload.
pub fn notify_ready() -> io::Result<()> {
    notify("READY=1")
}

/// Tells systemd a reload has begun; follow it with [`notify_ready`] when the reload is over, whether the
/// new deployment was taken or refused (the previous one keeps serving).
pub fn notify_reloading() -> io::Result<()> {
    notify(&reloading_message(monotonic_usec()?))
}

/// Tells systemd the service is stopping (SIGTERM received, open requests draining).
pub fn notify_stopping() -> io::Result<()> {
    notify("STOPPING=1")
}

/// A one-line status shown by `systemctl status` (line breaks become spaces).
pub fn notify_status(status: &str) -> io::Result<()> {
    notify(&status_message(status))
}

/// `READY=1` with a status line in the same datagram.
pub fn notify_ready_status(status: &str) -> io::Result<()> {
    notify(&format!("READY=1\n{}", status_message(status)))
}

/// Sends `message` (newline-separated `KEY=VALUE` assignments) to the socket in `NOTIFY_SOCKET`, if set.
pub fn notify(message: &str) -> io::Result<()> {
    match notify_socket() {
        Some(socket) => send(&socket, message),
        None => Ok(()),
    }
}

/// The notification socket systemd passed, if any (unset or empty means: not under systemd).
pub fn notify_socket() -> Option<OsString> {
    std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty())
}

/// Sends one notification datagram to `socket`: an absolute path, or `@name` for a Linux abstract socket.
#[cfg(unix)]
pub fn send(socket: &OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;

    let address = socket_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    // Never wait for room: the notifications are sent from the runtime's workers, and a receiver that stops
    // reading (its queue holds only net.unix.max_dgram_qlen datagrams, 10 by default) must not stall them,
    // nor a shutdown that waits for the watchdog task. A full queue is an error (WouldBlock) instead.
    sender.set_nonblocking(true)?;
    let sent = sender.send_to_addr(message.as_bytes(), &address)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("{NOTIFY_SOCKET}: sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

/// Not a unix system: there is no systemd to tell.
#[cfg(not(unix))]
pub fn send(_socket: &OsStr, _message: &str) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn socket_address(socket: &OsStr) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;

    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => abstract_address(&bytes[1..]),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{NOTIFY_SOCKET}={}: neither an absolute path nor an @abstract name", socket.to_string_lossy()),
        )),
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn abstract_address(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix sockets exist only on Linux"))
}

fn status_message(status: &str) -> String {
    let line: String = status.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    format!("STATUS={line}")
}

fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd compares a reload's start against.
#[cfg(unix)]
fn monotonic_usec() -> io::Result<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let (secs, nanos) = (u64::try_from(now.tv_sec), u64::try_from(now.tv_nsec));
    match (secs, nanos) {
        (Ok(s), Ok(n)) => Ok(s.saturating_mul(1_000_000).saturating_add(n / 1000)),
        _ => Err(io::Error::other("CLOCK_MONOTONIC returned a negative time")),
    }
}

#[cfg(not(unix))]
fn monotonic_usec() -> io::Result<u64> {
    Ok(0)
}

/// How often systemd expects `WATCHDOG=1` (`WatchdogSec=` in the unit), if the watchdog is on for this
/// process.
pub fn watchdog_timeout() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_timeout_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// `WATCHDOG_USEC` and `WATCHDOG_PID` as `sd_watchdog_enabled(3)` reads them: the watchdog is on when the
/// timeout is a positive number and the pid, if given, is this process's.
fn watchdog_timeout_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` every half watchdog timeout until `stop`; returns at once when the unit
/// has no watchdog. It runs on the server's runtime, so a runtime whose workers are all stuck stops the
/// pings and systemd restarts the service (`Restart=on-failure`).
pub async fn watchdog(mut stop: crate::util::stop::Stop) {
    let Some(timeout) = watchdog_timeout() else { return };
    let every = (timeout / 2).max(Duration::from_millis(100));
    tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.stopped() => return,
            _ = ticks.tick() => {
                match notify("WATCHDOG=1") {
                    Ok(()) => {}
                    // systemd has not read the last ones yet: the next tick tries again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tracing::debug!("systemd's notification queue is full; watchdog ping skipped");
                    }
                    Err(e) => tracing::warn!(error = %e, "systemd watchdog notification failed"),
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_receiver_that_stops_reading_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _receiver = UnixDatagram::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let mut refused = 0;
        for _ in 0..1000 {
            if let Err(e) = send(path.as_os_str(), "WATCHDOG=1") {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                refused += 1;
            }
        }
        assert!(refused > 0, "the queue never filled: the test proves nothing");
        assert!(started.elapsed() < Duration::from_secs(5), "a send waited");
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&listener), "READY=1");
        send(path.as_os_str(), &status_message("serving 3 devices\non [::]:6971")).unwrap();
        assert_eq!(receive(&listener), "STATUS=serving 3 devices on [::]:6971");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sipcfg-test-notify-{}-{:?}", std::process::id(), std::thread::current().id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let before = monotonic_usec().unwrap();
        send(path.as_os_str(), &reloading_message(monotonic_usec().unwrap())).unwrap();
        let message = receive(&listener);
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines.next().and_then(|l| l.strip_prefix("MONOTONIC_USEC=")).unwrap().parse().unwrap();
        assert!(usec >= before && usec < before + 60_000_000, "{usec} vs {before}");
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn a_missing_socket_is_an_error_and_a_relative_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("absent").as_os_str(), "READY=1").is_err());
        let err = send(OsStr::new("relative/notify"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        // The test harness runs under no service manager; CI under systemd would set NOTIFY_SOCKET only for
        // a Type=notify unit, which `cargo test` is not.
        if notify_socket().is_none() {
            notify_ready().unwrap();
            notify_reloading().unwrap();
            notify_stopping().unwrap();
            notify_status("idle").unwrap();
        }
    }

    #[test]
    fn watchdog_settings() {
        assert_eq!(watchdog_timeout_from(Some("30000000"), None, 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_timeout_from(Some("30000000"), Some("7"), 7), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_timeout_from(Some("30000000"), Some("8"), 7), None, "another process's watchdog");
        assert_eq!(watchdog_timeout_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_timeout_from(None, Some("7"), 7), None);
    }
}
