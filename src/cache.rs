//! The rendered-file cache: bounded by bytes, keyed by the deployment generation so that it can never answer
//! with a file older than the inventory and templates in force. Concurrent misses for one key render once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;

/// A rendered, checked file ready to be served.
#[derive(Debug)]
pub struct RenderedFile {
    pub body: Bytes,
    /// Strong entity tag, quoted: a digest of the body.
    pub etag: String,
    pub content_type: &'static str,
}

impl RenderedFile {
    pub fn new(body: impl Into<Bytes>, content_type: &'static str) -> RenderedFile {
        let body = body.into();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        RenderedFile { body, etag: format!("\"{}\"", crate::encoding::hex(&digest.as_ref()[..16])), content_type }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    generation: u64,
    /// Canonical file identity (a device name, or a shared file's name).
    file: Box<str>,
}

/// Per-entry bookkeeping counted against the byte bound on top of the body.
const ENTRY_OVERHEAD: u32 = 160;

#[derive(Clone)]
pub struct FileCache {
    cache: Cache<Key, Arc<RenderedFile>>,
    observer: Arc<OnceLock<Arc<dyn CacheObserver>>>,
}

impl FileCache {
    pub fn new(max_bytes: u64) -> FileCache {
        let observer: Arc<OnceLock<Arc<dyn CacheObserver>>> = Arc::default();
        let evictions = observer.clone();
        let cache = Cache::builder()
            .eviction_listener(move |_k, _v, cause| {
                if let (moka::notification::RemovalCause::Size, Some(o)) = (cause, evictions.get()) {
                    o.evicted();
                }
            })
            .max_capacity(max_bytes)
            .weigher(|_k: &Key, v: &Arc<RenderedFile>| {
                u32::try_from(v.body.len()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD)
            })
            .build();
        FileCache { cache, observer }
    }

    /// The cached file, or the result of `render` (run once however many callers wait for it). Errors are
    /// not cached.
    pub async fn get_or_render<E, F>(&self, generation: u64, file: &str, render: F) -> Result<Arc<RenderedFile>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Arc<RenderedFile>, E>>,
    {
        let observer = self.observer.get();
        let rendered = AtomicBool::new(false);
        let timed = async {
            let started = Instant::now();
            let result = render.await;
            rendered.store(true, Ordering::Relaxed);
            if let Some(o) = observer {
                o.rendered(started.elapsed());
            }
            result
        };
        let result = self.cache.try_get_with(Key { generation, file: file.into() }, timed).await;
        if let (false, Some(o)) = (rendered.load(Ordering::Relaxed), observer) {
            o.hit();
        }
        result
    }

    /// Drops every entry (after a new generation is in force, so old entries are dead weight).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Entries and weighted size, after pending maintenance.
    pub async fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Reports lookups, renders and evictions to `observer` from now on (once; later calls are ignored).
    pub fn set_observer(&self, observer: Arc<dyn CacheObserver>) {
        let _ = self.observer.set(observer);
    }
}

/// What the cache reports, for metrics; the cache itself knows nothing of them.
pub trait CacheObserver: Send + Sync {
    /// A lookup answered without rendering (also a caller that waited for another's render).
    fn hit(&self);
    /// A render ran (a miss), whatever its outcome, and took `elapsed`.
    fn rendered(&self, elapsed: Duration);
    /// An entry was evicted to stay within the byte bound.
    fn evicted(&self);
}
