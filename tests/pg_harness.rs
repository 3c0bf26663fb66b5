//! Proves the harness that the cluster tests (issue 14) stand on: a real PostgreSQL that enforces SCRAM for
//! the app's role and survives stop/kill and restart, and a real HAProxy that routes around a dead backend.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::pg::Postgres;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connects to `url` and runs `SELECT 1`; Err with the reason if either fails (within 10 s).
async fn select_one(url: &str) -> Result<i32, String> {
    let opts: PgConnectOptions = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let attempt = async {
        let mut conn = PgConnection::connect_with(&opts).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(one)
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_requires_the_password_over_tcp() {
    let started = Instant::now();
    let pg = Postgres::start();
    eprintln!("Postgres::start took {:?}", started.elapsed());

    assert_eq!(select_one(&pg.url_with_password()).await, Ok(1), "log:\n{}", pg.log());
    // The password is in the file too, with a newline, and the URL without it carries none.
    let from_file = std::fs::read_to_string(pg.password_file()).expect("read the password file");
    assert_eq!(from_file, format!("{}\n", pg.password()));
    assert!(!pg.url().contains(pg.password()));
    assert!(pg.url().ends_with(&format!("127.0.0.1:{}/sipcfg", pg.port())));

    // A pool as the server will build one: PgConnectOptions with the password set separately.
    let opts: PgConnectOptions = pg.url().parse().expect("the URL parses");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts.clone().password(pg.password()))
        .await
        .expect("a pool of sipcfg's connections");
    let who: String = sqlx::query_scalar("SELECT current_user || '@' || current_database()")
        .fetch_one(&pool)
        .await
        .expect("a query on the pool");
    assert_eq!(who, "sipcfg@sipcfg");
    pool.close().await;

    // SCRAM is enforced: no password, or a wrong one, is refused.
    let without = select_one(&pg.url()).await;
    assert!(without.is_err(), "connected without a password: {without:?}");
    let wrong = format!("postgres://sipcfg:{}@127.0.0.1:{}/sipcfg", "0".repeat(32), pg.port());
    let refused = select_one(&wrong).await.expect_err("connected with a wrong password");
    assert!(refused.contains("password authentication failed"), "{refused}");
    // Nor is the superuser reachable over TCP.
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    assert!(select_one(&admin).await.is_err(), "the superuser connected over TCP without a password");

    // The superuser's channel: the socket, with the settings the harness promises.
    assert_eq!(pg.psql("SELECT rolname FROM pg_roles WHERE rolname = 'sipcfg'").trim(), "sipcfg");
    assert_eq!(pg.psql("SHOW fsync; SHOW max_connections;").trim(), "off\n200");
    assert!(
        pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'sipcfg'").starts_with("SCRAM-SHA-256$"),
        "sipcfg's password is not stored as a SCRAM verifier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stops_and_starts_again_on_the_same_port() {
    let pg = Postgres::start();
    let url = pg.url_with_password();
    pg.psql_in("sipcfg", "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42); ALTER TABLE kept OWNER TO sipcfg;");
    assert_eq!(select_one(&url).await, Ok(1));

    pg.stop();
    assert!(select_one(&url).await.is_err(), "connected to a stopped server");
    pg.start_again();
    assert_eq!(select_one(&url).await, Ok(1), "log:\n{}", pg.log());

    // A crash, then recovery: the data written before is still there.
    pg.kill();
    assert!(select_one(&url).await.is_err(), "connected to a killed server");
    pg.start_again();
    let mut conn = PgConnection::connect(&url).await.expect("connect after the crash");
    let n: i32 = sqlx::query_scalar("SELECT n FROM kept").fetch_one(&mut conn).await.expect("the table survives");
    assert_eq!(n, 42);
    assert!(pg.log().contains("database system was not properly shut down"), "no recovery in:\n{}", pg.log());
}

/// A TCP echo server on 127.0.0.1:0 that counts the bytes it echoes; aborting the task closes its port.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an echo server");
    let addr = listener.local_addr().expect("the echo server's address");
    let echoed = Arc::new(AtomicUsize::new(0));
    let counter = echoed.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    counter.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, echoed, task)
}

/// One round trip through `addr`: Err with the reason if the bytes do not come back within 3 s.
async fn echo_through(addr: SocketAddr, message: &[u8]) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        stream.write_all(message).await.map_err(|e| format!("write: {e}"))?;
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await.map_err(|e| format!("read: {e}"))?;
        if back == message { Ok(()) } else { Err(format!("got {back:?}")) }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt).await.unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_balances_and_routes_around_a_dead_backend() {
    let (a, echoed_a, _task_a) = echo_server().await;
    let (b, echoed_b, task_b) = echo_server().await;
    let started = Instant::now();
    let haproxy = Haproxy::start_tcp(&[a, b]);
    eprintln!("Haproxy::start_tcp took {:?}", started.elapsed());

    for i in 0..6 {
        let message = format!("hello {i}");
        echo_through(haproxy.addr(), message.as_bytes()).await.unwrap_or_else(|e| {
            panic!("no echo through HAProxy: {e}\n{}", haproxy.log());
        });
    }
    // Round robin: both backends echoed something.
    assert!(echoed_a.load(Ordering::Relaxed) > 0 && echoed_b.load(Ordering::Relaxed) > 0, "{}", haproxy.log());
    assert!(haproxy.backend_up(0) && haproxy.backend_up(1), "{}", haproxy.admin("show stat"));

    // Kill backend b: the health checks take it out within about a second, and connections keep working.
    task_b.abort();
    let _ = task_b.await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while haproxy.backend_up(1) {
        assert!(Instant::now() < deadline, "b1 still up 3 s after its death:\n{}", haproxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = echoed_a.load(Ordering::Relaxed);
    for i in 0..10 {
        let message = format!("still here {i}");
        echo_through(haproxy.addr(), message.as_bytes()).await.unwrap_or_else(|e| {
            panic!("no echo through HAProxy with one backend dead: {e}\n{}", haproxy.log());
        });
    }
    assert!(echoed_a.load(Ordering::Relaxed) > before);
    assert!(haproxy.log().contains("b1 is DOWN"), "{}", haproxy.log());

    haproxy.stop();
    assert!(echo_through(haproxy.addr(), b"gone").await.is_err(), "HAProxy still answers after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_through_haproxy() {
    let pg = Postgres::start();
    let haproxy = Haproxy::start_tcp(&[SocketAddr::from(([127, 0, 0, 1], pg.port()))]);
    let url = format!("postgres://sipcfg:{}@{}/sipcfg", pg.password(), haproxy.addr());
    assert_eq!(select_one(&url).await, Ok(1), "{}\n{}", pg.log(), haproxy.log());
}
