//! The audit log's file: the `sipcfg::access` lines, written by a thread of its own (docs/decisions.md,
//! "The audit log").
//!
//! - **Nothing is dropped to keep up.** A request appends its line to a buffer of `log.audit_buffer_bytes`;
//!   when the buffer is full, the request waits until the writer has taken it (back-pressure). Only a write
//!   the file system refuses (disk full, I/O error) loses lines, and every such line is counted
//!   ([`AuditStats`], `sipcfg_audit_lines_dropped_total`) and reported in a warning at most once a minute.
//! - **Cheap on the request path.** The line is formatted straight from the event's fields ([`line`]),
//!   and appending it is a lock and a copy: no allocation, no system call. The writer wakes every [`FLUSH_INTERVAL`] (or at once when the buffer is half full) and writes what has
//!   gathered in one `write`; a request wakes it only after it found nothing to write for a whole interval.
//! - **Rotation without loss.** Before writing, at most once every [`ROTATION_CHECK`], the writer compares
//!   the file it holds open with the file at the path (device and inode). Renamed away (logrotate's
//!   `create`): it opens the new file. Gone: it keeps writing to the file it holds until the next check, in
//!   case a new one is about to be created, and then creates it. Lines written in between land in the
//!   renamed file, none in the void.
//! - **At exit** the guard waits up to [`CLOSE_WAIT`] for the buffered lines to reach the file.

mod line;

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long lines may gather before the writer writes them (unless the buffer is half full first).
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often, at most, the writer looks whether the file at the path is still the one it writes.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// At most one warning about lost lines (or a file that cannot be reopened) per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// At exit, how long the buffered lines get to reach the file.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Mode of an audit log sipcfg creates: it holds addresses and device names, not for everyone to read.
const FILE_MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "log.audit_file {path}: cannot create its folder: {source} (create it, writable by the user sipcfg runs \
         as, or point log.audit_file elsewhere)"
    )]
    Folder { path: PathBuf, source: io::Error },
    #[error(
        "log.audit_file {path}: cannot open it to append: {source} (the user sipcfg runs as must be able to \
         write the file and its folder)"
    )]
    Open { path: PathBuf, source: io::Error },
    #[error("log.audit_file {path}: cannot start its writer thread: {source}")]
    Thread { path: PathBuf, source: io::Error },
}

/// What the audit log has done since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats {
    written: AtomicU64,
    dropped: AtomicU64,
    waits: AtomicU64,
    reopens: AtomicU64,
}

impl AuditStats {
    /// Lines written to the file.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// Lines lost: refused by the file system, or still buffered when the process stopped waiting at exit.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Lines whose request waited for room in a full buffer.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
    /// Times the file was reopened because the one at the path had been renamed or removed.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }
}

/// Where the writer thread is, so that a request wakes it only when it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Writing, or about to look at the buffer: nobody needs to wake it.
    Busy,
    /// Letting lines gather for up to [`FLUSH_INTERVAL`]: woken early only when the buffer is half full.
    Gathering,
    /// Found nothing for a whole interval: the next line wakes it.
    Idle,
}

struct State {
    /// Lines not yet taken by the writer.
    pending: Vec<u8>,
    /// How many lines `pending` holds (one per write: the log layer writes each event's line at once).
    lines: u64,
    /// Lines the writer has taken and is writing.
    writing: u64,
    writer: Writer,
    /// Requests waiting for room.
    waiting: usize,
    /// The guard asked the writer to write what is left and stop.
    closing: bool,
    /// The writer has stopped: nothing more reaches the file.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines (or for the end of its gathering interval).
    wake: Condvar,
    /// Requests wait here for room; the guard waits here for the writer to stop.
    room: Condvar,
    limit: usize,
    stats: Arc<AuditStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn full(&self, s: &State, more: usize) -> bool {
        !s.pending.is_empty() && s.pending.len() + more > self.limit && !s.closed
    }

    /// Appends one line; waits while the buffer has no room for it.
    fn push(&self, line: &[u8]) {
        let mut s = self.lock();
        if self.full(&s, line.len()) {
            self.stats.waits.fetch_add(1, Ordering::Relaxed);
            s.waiting += 1;
            self.wake_writer(&mut s);
            while self.full(&s, line.len()) {
                s = self.room.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            s.waiting -= 1;
        }
        if s.closed {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        s.pending.extend_from_slice(line);
        s.lines += 1;
        if s.writer == Writer::Idle || (s.writer == Writer::Gathering && s.pending.len() >= self.limit / 2) {
            self.wake_writer(&mut s);
        }
    }

    fn wake_writer(&self, s: &mut State) {
        if s.writer != Writer::Busy {
            s.writer = Writer::Busy;
            self.wake.notify_one();
        }
    }
}

/// The audit log, a layer of the log subscriber ([`line`]): each event's line is appended to the buffer.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl AuditLog {
    /// Opens (or creates, with its folder) the audit log at `path` and starts its writer thread, which holds
    /// at most `buffer_bytes` of lines waiting to be written.
    pub fn open(path: &Path, buffer_bytes: usize) -> Result<(AuditLog, AuditGuard), AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::Folder { path: path.to_owned(), source })?;
        }
        let file = AuditFile::open(path).map_err(|source| AuditError::Open { path: path.to_owned(), source })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::with_capacity(buffer_bytes.min(1 << 20)),
                lines: 0,
                writing: 0,
                writer: Writer::Busy,
                waiting: 0,
                closing: false,
                closed: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
            limit: buffer_bytes,
            stats: Arc::new(AuditStats::default()),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sipcfg-audit".into())
            .spawn(move || write_until_closed(&writer, file))
            .map_err(|source| AuditError::Thread { path: path.to_owned(), source })?;
        Ok((AuditLog { shared: shared.clone() }, AuditGuard { shared, thread: Some(thread) }))
    }

    /// The counters `/metrics` reports.
    pub fn stats(&self) -> Arc<AuditStats> {
        self.shared.stats.clone()
    }
}

/// Writes what is buffered and stops the writer when dropped (at the end of `serve`).
pub struct AuditGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.closing = true;
        s.writer = Writer::Busy;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + CLOSE_WAIT;
        while !s.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.shared.room.wait_timeout(s, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        if !s.closed {
            // The writer is stuck in a write (a hung disk): its lines are lost with the process.
            let lost = s.lines + s.writing;
            self.shared.stats.dropped.fetch_add(lost, Ordering::Relaxed);
            drop(s);
            tracing::error!(
                lines = lost,
                "audit log: the writer did not finish within {} s at exit; these lines are lost",
                CLOSE_WAIT.as_secs()
            );
            return;
        }
        drop(s);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: takes the buffer every [`FLUSH_INTERVAL`] (or when woken) and writes it.
fn write_until_closed(shared: &Shared, mut file: AuditFile) {
    let mut batch = Vec::with_capacity(shared.limit.min(1 << 20));
    let mut s = shared.lock();
    loop {
        if s.pending.is_empty() && s.closing {
            break;
        }
        if !s.closing && s.pending.len() < shared.limit / 2 && s.waiting == 0 {
            s.writer = Writer::Gathering;
            s = shared
                .wake
                .wait_timeout_while(s, FLUSH_INTERVAL, |s| s.writer == Writer::Gathering)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if s.pending.is_empty() && !s.closing {
                s.writer = Writer::Idle;
                s = shared.wake.wait_while(s, |s| s.writer == Writer::Idle).unwrap_or_else(PoisonError::into_inner);
            }
        }
        s.writer = Writer::Busy;
        std::mem::swap(&mut s.pending, &mut batch);
        s.writing = std::mem::take(&mut s.lines);
        let lines = s.writing;
        if s.waiting > 0 {
            shared.room.notify_all();
        }
        drop(s);
        if !batch.is_empty() {
            file.write_batch(&batch, lines, &shared.stats);
            batch.clear();
        }
        s = shared.lock();
        s.writing = 0;
    }
    drop(s);
    file.report_lost(true);
    let mut s = shared.lock();
    s.closed = true;
    // Lines appended after the last batch (the server has stopped by now, so there should be none).
    shared.stats.dropped.fetch_add(std::mem::take(&mut s.lines), Ordering::Relaxed);
    shared.room.notify_all();
}

/// The open audit file and what the writer knows about it.
struct AuditFile {
    path: PathBuf,
    file: File,
    /// Device and inode of `file`, to tell whether the path still names it.
    id: (u64, u64),
    checked: Instant,
    /// The path named no file at the last check.
    missing: bool,
    /// The last write stopped inside a line: the next write starts on a new line.
    torn: bool,
    /// Lost lines not yet reported in a warning, the last warning, and the last error seen.
    unreported: u64,
    warned: Option<Instant>,
    error: Option<String>,
}

impl AuditFile {
    fn open(path: &Path) -> io::Result<AuditFile> {
        let (file, id) = open_append(path)?;
        Ok(AuditFile {
            path: path.to_owned(),
            file,
            id,
            checked: Instant::now(),
            missing: false,
            torn: false,
            unreported: 0,
            warned: None,
            error: None,
        })
    }

    fn write_batch(&mut self, batch: &[u8], lines: u64, stats: &AuditStats) {
        if self.checked.elapsed() >= ROTATION_CHECK {
            self.follow_rotation(stats);
        }
        if self.torn && write_fully(&mut self.file, b"\n").0.is_ok() {
            self.torn = false;
        }
        match write_fully(&mut self.file, batch) {
            (Ok(()), _) => {
                stats.written.fetch_add(lines, Ordering::Relaxed);
            }
            (Err(e), done) => {
                let lost = lines_in(&batch[done..]).min(lines);
                self.torn = done > 0 && batch[done - 1] != b'\n';
                stats.written.fetch_add(lines - lost, Ordering::Relaxed);
                stats.dropped.fetch_add(lost, Ordering::Relaxed);
                self.unreported += lost;
                self.error = Some(e.to_string());
                self.report_lost(false);
            }
        }
    }

    /// Reopens the path when it names another file than the one held (renamed away and replaced), or
    /// names none at two checks in a row (renamed or removed, and nobody made a new one).
    fn follow_rotation(&mut self, stats: &AuditStats) {
        self.checked = Instant::now();
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => self.missing = false,
            Ok(_) => self.reopen(stats),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if std::mem::replace(&mut self.missing, true) {
                    self.reopen(stats);
                }
            }
            Err(e) => self.warn_reopen(&e),
        }
    }

    fn reopen(&mut self, stats: &AuditStats) {
        match open_append(&self.path) {
            Ok((file, id)) => {
                self.file = file;
                self.id = id;
                self.missing = false;
                self.torn = false;
                stats.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "audit log reopened: the file was renamed or removed");
            }
            Err(e) => self.warn_reopen(&e),
        }
    }

    fn warn_reopen(&mut self, e: &io::Error) {
        if self.warned.is_none_or(|w| w.elapsed() >= WARN_INTERVAL) {
            self.warned = Some(Instant::now());
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "audit log: the file at its path cannot be opened; lines go on to the file already open"
            );
        }
    }

    /// Warns about lines lost since the last warning, at most once per [`WARN_INTERVAL`] (or at exit).
    fn report_lost(&mut self, at_exit: bool) {
        if self.unreported == 0 || !(at_exit || self.warned.is_none_or(|w| w.elapsed() >= WARN_INTERVAL)) {
            return;
        }
        self.warned = Some(Instant::now());
        tracing::warn!(
            path = %self.path.display(),
            lines = self.unreported,
            error = self.error.as_deref().unwrap_or(""),
            "audit log: lines could not be written and are lost (counted in sipcfg_audit_lines_dropped_total); \
             free space on its file system or fix the error"
        );
        self.unreported = 0;
    }
}

fn open_append(path: &Path) -> io::Result<(File, (u64, u64))> {
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino())))
}

/// Writes all of `data`, or says how far it got before the error.
fn write_fully(file: &mut File, data: &[u8]) -> (io::Result<()>, usize) {
    let mut done = 0;
    while done < data.len() {
        match file.write(&data[done..]) {
            Ok(0) => return (Err(io::Error::from(io::ErrorKind::WriteZero)), done),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), done),
        }
    }
    (Ok(()), done)
}

/// Lines ending in `data`: of a batch cut short by an error, the lines lost (one cut in two counts).
fn lines_in(data: &[u8]) -> u64 {
    data.iter().filter(|&&b| b == b'\n').count() as u64
}
