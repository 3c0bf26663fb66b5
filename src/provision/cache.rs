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
    body: Stored,
    len: usize,
    /// Strong entity tag, quoted: a digest of the body.
    pub etag: String,
    pub content_type: &'static str,
}

#[derive(Debug)]
enum Stored {
    Plain(Bytes),
    /// LZ4 against a dictionary: another file of the same template, so only what differs costs memory (a
    /// 7 KB configuration packs to about 130 bytes). Unpacking takes well under a microsecond.
    Packed {
        data: Box<[u8]>,
        dictionary: Arc<[u8]>,
    },
}

/// A packed entry that did not unpack: a bug, never the client's doing.
#[derive(Debug, thiserror::Error)]
#[error("a cached file did not unpack: {0}")]
pub struct CorruptEntry(String);

impl RenderedFile {
    pub fn new(body: impl Into<Bytes>, content_type: &'static str) -> RenderedFile {
        let body = body.into();
        RenderedFile { len: body.len(), etag: etag(&body), body: Stored::Plain(body), content_type }
    }

    /// A file kept packed against `dictionary` (see [`Stored::Packed`]); kept as it is when packing does
    /// not save anything. The packed form is unpacked and compared once here, so serving it cannot fail.
    pub fn packed(body: &[u8], content_type: &'static str, dictionary: &Arc<[u8]>) -> RenderedFile {
        let data = lz4_flex::block::compress_with_dict(body, dictionary);
        let round_trip = || lz4_flex::block::decompress_with_dict(&data, body.len(), dictionary).ok();
        if data.len() >= body.len() || round_trip().as_deref() != Some(body) {
            return RenderedFile::new(Bytes::copy_from_slice(body), content_type);
        }
        RenderedFile {
            len: body.len(),
            etag: etag(body),
            body: Stored::Packed { data: data.into_boxed_slice(), dictionary: dictionary.clone() },
            content_type,
        }
    }

    /// The file's content.
    pub fn body(&self) -> Result<Bytes, CorruptEntry> {
        match &self.body {
            Stored::Plain(b) => Ok(b.clone()),
            Stored::Packed { data, dictionary } => lz4_flex::block::decompress_with_dict(data, self.len, dictionary)
                .map(Bytes::from)
                .map_err(|e| CorruptEntry(e.to_string())),
        }
    }

    /// Length of the content in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes this entry holds in memory (the packed size when packed; a shared dictionary is not counted).
    pub fn stored_bytes(&self) -> usize {
        match &self.body {
            Stored::Plain(b) => b.len(),
            Stored::Packed { data, .. } => data.len(),
        }
    }
}

/// 128 bits of XXH3 of the body, quoted. The tag only has to change when the body does, the same on every
/// node and across restarts: XXH3 is deterministic and ~30x cheaper than the SHA-256 it replaced (4 µs of a
/// 7 KB render on this machine). A phone cannot choose the body, so nothing adversarial hinges on it.
fn etag(body: &[u8]) -> String {
    let digest = xxhash_rust::xxh3::xxh3_128(body).to_be_bytes();
    format!("\"{}\"", crate::util::encoding::hex(&digest))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    generation: u64,
    /// Canonical file identity (a device name, or a shared file's name).
    file: Box<str>,
    /// How many times the file's device changed within the generation.
    revision: u64,
}

/// Per-entry bookkeeping counted against the byte bound on top of the stored body: the entry, its key and
/// ETag, moka's own node and the allocator's rounding.
const ENTRY_OVERHEAD: u32 = 256;

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
                u32::try_from(v.stored_bytes()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD)
            })
            .build();
        FileCache { cache, observer }
    }

    /// The cached file, or the result of `render` (run once however many callers wait for it). Errors are
    /// not cached.
    pub async fn get_or_render<E, F>(
        &self,
        generation: u64,
        file: &str,
        revision: u64,
        render: F,
    ) -> Result<Arc<RenderedFile>, Arc<E>>
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
        let key = Key { generation, file: file.into(), revision };
        // A lookup first: the render and moka's single-flight machinery make a future several kilobytes
        // large, boxed so that only a miss pays for it (every request's future would be as large otherwise).
        if let Some(file) = self.cache.get(&key).await {
            if let Some(o) = observer {
                o.hit();
            }
            return Ok(file);
        }
        let result = Box::pin(self.cache.try_get_with(key, timed)).await;
        if let (false, Some(o)) = (rendered.load(Ordering::Relaxed), observer) {
            o.hit();
        }
        result
    }

    /// Counts a hit answered outside the cache, from a file a connection remembered
    /// ([`FetchMemo`](crate::provision::FetchMemo)), so that the metrics still show every answer.
    pub fn count_hit(&self) {
        if let Some(o) = self.observer.get() {
            o.hit();
        }
    }

    /// Drops one file's entry (its device changed: the entry is dead weight).
    pub async fn forget(&self, generation: u64, file: &str, revision: u64) {
        let key = Key { generation, file: file.into(), revision };
        self.cache.invalidate(&key).await;
    }

    /// Drops every entry (after a new generation is in force, so old entries are dead weight).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// The bound, in weighted bytes.
    pub fn max_bytes(&self) -> u64 {
        self.cache.policy().max_capacity().unwrap_or(u64::MAX)
    }

    /// Weighted size as last counted (pending maintenance not run).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
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
