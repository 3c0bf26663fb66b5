//! systemd readiness, spoken to a real notification socket (`NOTIFY_SOCKET`): `READY=1` once the ports
//! accept, `RELOADING=1` then `READY=1` around a reload, `WATCHDOG=1` when the unit has a watchdog, and
//! `STOPPING=1` on SIGTERM.
#![cfg(unix)]

mod common;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDeployment;

/// Reads notifications until one contains `want`; returns it and counts the `WATCHDOG=1` pings on the way.
fn until(socket: &UnixDatagram, want: &str, watchdogs: &mut usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no {want} from the server");
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => panic!("notify socket: {e}"),
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message == "WATCHDOG=1" {
            *watchdogs += 1;
        }
        if message.lines().any(|l| l == want) {
            return message;
        }
    }
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn readiness_reloads_watchdog_and_stop_reach_systemd() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, admin) = (free(), free());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--listen", &addr.to_string(), "--admin-listen", &admin.to_string(), "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watchdogs = 0;

    // READY=1 only once the listeners accept: connecting right after it must work.
    let ready = until(&socket, "READY=1", &mut watchdogs);
    TcpStream::connect(addr).expect("READY=1 came before the phone port accepted");
    TcpStream::connect(admin).expect("READY=1 came before the admin port accepted");
    assert!(ready.contains("STATUS=serving 21 devices on 127.0.0.1:"), "{ready}");

    // SIGHUP: RELOADING=1 (with the monotonic clock systemd needs), then READY=1 again.
    signal(&child, "-HUP");
    let reloading = until(&socket, "RELOADING=1", &mut watchdogs);
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    let ready = until(&socket, "READY=1", &mut watchdogs);
    assert!(ready.contains("STATUS=serving 21 devices"), "{ready}");
    assert!(!ready.contains("refused"), "{ready}");

    // A reload that is refused still ends with READY=1: the previous deployment keeps serving.
    d.append("example/inventory.toml", "\n[devices.BROKEN\n");
    signal(&child, "-HUP");
    until(&socket, "RELOADING=1", &mut watchdogs);
    let ready = until(&socket, "READY=1", &mut watchdogs);
    assert!(ready.contains("the last reload was refused"), "{ready}");

    // The watchdog pings every half WATCHDOG_USEC (100 ms here).
    let started = Instant::now();
    while watchdogs < 3 && started.elapsed() < Duration::from_secs(5) {
        until(&socket, "WATCHDOG=1", &mut watchdogs);
    }
    assert!(watchdogs >= 3, "{watchdogs} watchdog pings");

    signal(&child, "-TERM");
    until(&socket, "STOPPING=1", &mut watchdogs);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn without_notify_socket_nothing_changes() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let addr = free();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--listen", &addr.to_string(), "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
