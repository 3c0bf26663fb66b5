//! The audit log (`[log] audit_file`): it loses no line to keep up, counts every line the file system
//! refuses, and follows its file when log rotation renames it. Each test runs `sipcfg serve` as a process
//! (the audit log belongs to the process) and speaks to it over TLS.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ServeProcess, TempDeployment};
use http::StatusCode;

/// The example deployment with its `[log]` section replaced and no plain-HTTP port.
fn deployment(log: &str) -> TempDeployment {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    d.edit(
        "example/sipcfg.toml",
        "audit_file = \"state/audit.log\"  # one JSON line per request: every download and refusal, never a token",
        log,
    );
    d
}

/// The paths of the audit lines in `text`, each line checked to be whole JSON.
fn paths(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            v["fields"]["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// `count` requests named `/<prefix>-<i>.txt` on one kept connection (401: no token; each is logged).
async fn requests(served: &ServeProcess, prefix: &str, range: std::ops::Range<usize>) {
    let mut conn = served.client().connect().await.unwrap();
    for i in range {
        let r = conn.send("GET", &format!("/{prefix}-{i}.txt"), &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

fn expected(prefix: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("/{prefix}-{i}.txt")).collect()
}

/// A writer that cannot keep up (a FIFO nobody reads, standing for a stalled disk) and a burst many times
/// the buffer: the requests wait for room, and once the writer can write again every line arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_larger_than_the_buffer_loses_no_line() {
    let d = deployment("audit_file = \"audit.fifo\"\naudit_buffer_bytes = 4096");
    let fifo = d.path("example/audit.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&fifo).unwrap(); // until the server opens it to write
        wait_for_go.recv().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap(); // until the server exits
        text
    });
    let served = ServeProcess::start(&d.path("example/sipcfg.toml"), "info").await;

    // 8 connections × 250 requests: about 600 KB of lines, against 4 KiB of buffer and the pipe's 64 KiB.
    const CONNECTIONS: usize = 8;
    const EACH: usize = 250;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let burst: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (client, done) = (served.client(), done.clone());
            tokio::spawn(async move {
                let mut conn = client.connect().await.unwrap();
                for i in 0..EACH {
                    let r = conn.send("GET", &format!("/burst-{}.txt", c * EACH + i), &[]).await;
                    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_reading = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        before_reading < CONNECTIONS * EACH / 2,
        "{before_reading} requests were answered while nothing could be written: their lines went somewhere else"
    );
    go.send(()).unwrap();
    for task in burst {
        task.await.unwrap();
    }
    let metrics = served.metrics().await;
    assert!(metrics.get("sipcfg_audit_waits_total") > 0.0, "requests waited for room:\n{}", metrics.0);
    assert_eq!(metrics.get("sipcfg_audit_lines_dropped_total"), 0.0);
    served.stop();

    let text = reader.join().unwrap();
    let logged = paths(&text);
    assert_eq!(logged.len(), CONNECTIONS * EACH, "one line per request, none twice");
    assert_eq!(logged.into_iter().collect::<BTreeSet<_>>(), expected("burst", 0..CONNECTIONS * EACH));
}

/// Lines the file system refuses (here every write: /dev/full) are counted in /metrics, and warned about with
/// their count, not once per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_file_system_refuses_are_counted_as_dropped() {
    let d = deployment("audit_file = \"/dev/full\"");
    let served = ServeProcess::start(&d.path("example/sipcfg.toml"), "info").await;
    requests(&served, "full", 0..40).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = served.metrics().await;
        if m.get("sipcfg_audit_lines_dropped_total") >= 40.0 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metrics.get("sipcfg_audit_lines_dropped_total"), 40.0, "{}", metrics.0);
    assert_eq!(metrics.get("sipcfg_audit_lines_written_total"), 0.0);
    let log = served.stop();
    // The first loss at once, then at most one a minute; what was lost since the last one, at exit. Whether
    // the 40 lines were written in one batch or more, that is one or two warnings.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("audit log: lines could not be written")).collect();
    assert!(matches!(warnings.len(), 1 | 2), "{log}");
    assert!(warnings.iter().all(|w| w.contains("No space left on device")), "{log}");
    let counted: u64 = warnings
        .iter()
        .map(|w| w.split(" lines=").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 40, "the warnings account for every lost line:\n{log}");
}

/// Sends requests until the file at `path` holds a line (the writer has reopened it).
async fn until_written(served: &ServeProcess, path: &Path, prefix: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = served.client().connect().await.unwrap();
    let mut sent = 0;
    while std::fs::metadata(path).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "{} still empty: the old file is still being written", path.display());
        conn.send("GET", &format!("/{prefix}-{sent}.txt"), &[]).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent
}

/// logrotate without copytruncate: the file is renamed and a new one created (`create`), or only renamed
/// (`nocreate`; sipcfg then creates it). Lines go on to the renamed file until sipcfg notices, then to the
/// new one; every line is in exactly one of the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rename_lines_land_in_the_new_file_and_none_is_lost() {
    let d = deployment("audit_file = \"logs/audit.log\"");
    let log = d.path("example/logs/audit.log");
    let rotated = |n: u32| d.path(&format!("example/logs/audit.log.{n}"));
    let served = ServeProcess::start(&d.path("example/sipcfg.toml"), "info").await;
    requests(&served, "a", 0..100).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // written (100 ms batches)

    // `create`: renamed, and a new empty file made at once.
    std::fs::rename(&log, rotated(1)).unwrap();
    std::fs::File::create(&log).unwrap();
    let b = until_written(&served, &log, "b").await;
    requests(&served, "c", 0..100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `nocreate` (or the file removed): sipcfg makes the new file itself.
    std::fs::rename(&log, rotated(2)).unwrap();
    let d_sent = until_written(&served, &log, "d").await;
    requests(&served, "e", 0..100).await;
    let metrics = served.metrics().await;
    assert_eq!(metrics.get("sipcfg_audit_reopens_total"), 2.0, "{}", metrics.0);
    served.stop();

    let read = |p: &Path| paths(&std::fs::read_to_string(p).unwrap());
    let (first, second, current) = (read(&rotated(1)), read(&rotated(2)), read(&log));
    let all: Vec<&String> = first.iter().chain(&second).chain(&current).collect();
    let want: BTreeSet<String> = [
        expected("a", 0..100),
        expected("b", 0..b),
        expected("c", 0..100),
        expected("d", 0..d_sent),
        expected("e", 0..100),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(all.len(), want.len(), "no line lost, none twice");
    assert_eq!(all.into_iter().cloned().collect::<BTreeSet<_>>(), want);
    assert!(expected("a", 0..100).iter().all(|p| first.contains(p)), "before the first rename: the first file");
    assert!(expected("c", 0..100).iter().all(|p| second.contains(p)), "after the reopen: the file created by `create`");
    assert!(expected("e", 0..100).iter().all(|p| current.contains(p)), "after the second: the file sipcfg created");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "sipcfg creates its audit log without access for others: {mode:o}");
}

/// The buffer has a default, and a value outside its range is refused with the key named.
#[test]
fn the_buffer_size_has_a_default_and_a_range() {
    let example = std::fs::read_to_string(common::repo().join("example/sipcfg.toml")).unwrap();
    let parse = |log: &str| {
        let text = example.replace("audit_file = \"state/audit.log\"", log);
        sipcfg::config::Config::parse(Path::new("/etc/sipcfg/sipcfg.toml"), &text)
    };
    assert_eq!(parse("audit_file = \"a.log\"").unwrap().log.audit_buffer_bytes, 4 * 1024 * 1024);
    for bad in ["audit_buffer_bytes = 100", "audit_buffer_bytes = 2000000000"] {
        let err = parse(bad).expect_err(bad).to_string();
        assert!(err.contains("/etc/sipcfg/sipcfg.toml: log.audit_buffer_bytes") && err.contains("4096"), "{err}");
    }
}
