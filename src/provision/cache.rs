//! The rendered-file cache: bounded by bytes, keyed by the deployment generation so that it can never answer
//! with a file older than the inventory and templates in force. Concurrent misses for one key render once.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

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
        match pack(body, dictionary) {
            Some(data) => RenderedFile {
                len: body.len(),
                etag: etag(body),
                body: Stored::Packed { data, dictionary: dictionary.clone() },
                content_type,
            },
            None => RenderedFile::new(Bytes::copy_from_slice(body), content_type),
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

/// Scratch space of one thread's packing: the packed form at its largest, then the round trip's unpacked
/// bytes. Reused, a cold phone's pack allocates only the packed bytes it keeps (about 130), where
/// `compress_with_dict` and `decompress_with_dict` allocated and zeroed two buffers of the file's size.
struct PackScratch {
    packed: Vec<u8>,
    unpacked: Vec<u8>,
}

/// Scratch kept between packs at most; a larger file's is dropped after its pack.
const PACK_SCRATCH_KEPT: usize = 256 * 1024;

thread_local! {
    static PACK_SCRATCH: std::cell::RefCell<PackScratch> =
        const { std::cell::RefCell::new(PackScratch { packed: Vec::new(), unpacked: Vec::new() }) };
}

/// `body` packed against `dictionary`, when that saves space and unpacks to `body` again.
fn pack(body: &[u8], dictionary: &[u8]) -> Option<Box<[u8]>> {
    PACK_SCRATCH.with_borrow_mut(|scratch| {
        let most = lz4_flex::block::get_maximum_output_size(body.len());
        if scratch.packed.len() < most {
            scratch.packed.resize(most, 0);
        }
        if scratch.unpacked.len() < body.len() {
            scratch.unpacked.resize(body.len(), 0);
        }
        let packed = lz4_flex::block::compress_into_with_dict(body, &mut scratch.packed[..most], dictionary)
            .ok()
            .map(|n| &scratch.packed[..n])
            .filter(|packed| packed.len() < body.len());
        let kept = packed.and_then(|packed| {
            let unpacked = &mut scratch.unpacked[..body.len()];
            let n = lz4_flex::block::decompress_into_with_dict(packed, unpacked, dictionary).ok()?;
            (unpacked[..n] == *body).then(|| Box::from(packed))
        });
        if scratch.packed.len() > PACK_SCRATCH_KEPT {
            *scratch = PackScratch { packed: Vec::new(), unpacked: Vec::new() };
        }
        kept
    })
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

/// A lookup key that borrows the file name: a hit allocates nothing. Hashes as [`Key`] does (same fields,
/// same order; `Box<str>` and `&str` hash as `str`).
#[derive(Hash)]
struct KeyRef<'a> {
    generation: u64,
    file: &'a str,
    revision: u64,
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.generation == key.generation && self.revision == key.revision && *self.file == *key.file
    }
}

/// Per-entry bookkeeping counted against the byte bound on top of the stored body: the entry, its key and
/// ETag, the cache's own slot and the allocator's rounding.
const ENTRY_OVERHEAD: u64 = 256;

/// Shards of the file cache (see [`FileCache::new`]): a file weighing more than about a quarter of
/// `cache.max_bytes` is served but not kept.
const FILE_CACHE_SHARDS: usize = 4;

/// Bytes an entry holds against the bound.
#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Key, Arc<RenderedFile>> for Weight {
    fn weight(&self, _key: &Key, file: &Arc<RenderedFile>) -> u64 {
        file.stored_bytes() as u64 + ENTRY_OVERHEAD
    }
}

/// Counts evictions for the metrics (once an observer is set).
#[derive(Clone)]
struct Evictions(Arc<OnceLock<Arc<dyn CacheObserver>>>);

impl quick_cache::Lifecycle<Key, Arc<RenderedFile>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Key, _file: Arc<RenderedFile>) {
        if let Some(o) = self.0.get() {
            o.evicted();
        }
    }
}

type Store = quick_cache::sync::Cache<Key, Arc<RenderedFile>, Weight, quick_cache::DefaultHashBuilder, Evictions>;

/// The cache itself: `quick_cache` (S3-FIFO), sharded, bounded by weighted bytes. It replaced moka: a boot
/// storm looks up a different file per phone, and moka's lookup (its key built with an allocation, SipHash,
/// the read recorded for its frequency sketch) cost about 2 µs of a phone's CPU (perf, 30,000 devices).
#[derive(Clone)]
pub struct FileCache {
    cache: Arc<Store>,
    observer: Arc<OnceLock<Arc<dyn CacheObserver>>>,
}

impl FileCache {
    pub fn new(max_bytes: u64) -> FileCache {
        let observer: Arc<OnceLock<Arc<dyn CacheObserver>>> = Arc::default();
        // A packed configuration and its overhead weigh about 400 bytes; the estimate only sizes the tables.
        let items = usize::try_from(max_bytes / 512).unwrap_or(usize::MAX).clamp(64, 4_000_000);
        let (weight, hasher, evictions) =
            (max_bytes.max(1), quick_cache::DefaultHashBuilder::default(), Evictions(observer.clone()));
        // Four shards whatever the CPU count: a file is kept only if it fits in one shard's share of the
        // bound, so more shards would refuse common files (firmware) of a few megabytes on a large machine.
        // Lookups take a shard's read lock only; inserts are rare after the pre-render.
        let options = quick_cache::OptionsBuilder::new()
            .shards(FILE_CACHE_SHARDS)
            .estimated_items_capacity(items)
            .weight_capacity(weight)
            .build();
        let cache = match options {
            Ok(options) => Store::with_options(options, Weight, hasher, evictions),
            Err(_) => Store::with(items, weight, Weight, hasher, evictions),
        };
        FileCache { cache: Arc::new(cache), observer }
    }

    /// The cached file, or the result of `render` (run once however many callers wait for it; when it fails,
    /// the next waiter renders). Errors are not cached.
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
        if let Some(found) = self.cache.get(&KeyRef { generation, file, revision }) {
            if let Some(o) = observer {
                o.hit();
            }
            return Ok(found);
        }
        // A miss: the key is built once, and the render and the wait for another caller's render make a
        // future several kilobytes large, boxed so that only a miss pays for it.
        Box::pin(async move {
            let key = Key { generation, file: file.into(), revision };
            match self.cache.get_value_or_guard_async(&key).await {
                Ok(found) => {
                    // Another caller rendered it meanwhile.
                    if let Some(o) = observer {
                        o.hit();
                    }
                    Ok(found)
                }
                Err(guard) => {
                    let started = Instant::now();
                    let result = render.await;
                    if let Some(o) = observer {
                        o.rendered(started.elapsed());
                    }
                    let file = result.map_err(Arc::new)?;
                    // Refused only when the file alone outweighs a shard of the bound: it is served, not kept.
                    let _ = guard.insert(file.clone());
                    Ok(file)
                }
            }
        })
        .await
    }

    /// Counts a hit answered outside the cache, from a file a connection remembered
    /// ([`FetchMemo`](crate::provision::FetchMemo)), so that the metrics still show every answer.
    pub fn count_hit(&self) {
        if let Some(o) = self.observer.get() {
            o.hit();
        }
    }

    /// Drops one file's entry (its device changed: the entry is dead weight).
    pub fn forget(&self, generation: u64, file: &str, revision: u64) {
        self.cache.remove(&KeyRef { generation, file, revision });
    }

    /// Drops every entry (after a new generation is in force, so old entries are dead weight).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// The bound, in weighted bytes.
    pub fn max_bytes(&self) -> u64 {
        self.cache.capacity()
    }

    /// Weighted size now.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weight()
    }

    /// Entries and weighted size.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.len() as u64, self.cache.weight())
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Files of every size around the dictionary's, packed one after another on one thread (sharing its
    /// scratch, a larger one dropping it), each unpack to their bytes; what does not pack is kept plain.
    #[test]
    fn packed_files_unpack_to_their_bytes_whatever_came_before() {
        let line = |i: usize| format!("<line><n>{i}</n><label>Line {i}</label></line>\n");
        let dictionary: Arc<[u8]> = (0..150).map(line).collect::<String>().into_bytes().into();
        let mut noise = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    noise as u8
                })
                .collect()
        };
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for count in [1, 10, 150, 151, 2000, 20_000, 3, 150] {
            bodies.push((count / 2..count / 2 + count).map(line).collect::<String>().into_bytes());
        }
        bodies.push(random(5000));
        bodies.push(random(300_000));
        bodies.push(b"<a/>".to_vec());
        let mut packed = 0;
        for body in &bodies {
            let file = RenderedFile::packed(body, "text/xml", &dictionary);
            assert_eq!(file.body().unwrap().as_ref(), body.as_slice(), "{} bytes", body.len());
            assert_eq!((file.len(), file.etag.clone()), (body.len(), etag(body)));
            match file.body {
                Stored::Packed { .. } => {
                    packed += 1;
                    assert!(file.stored_bytes() < body.len());
                }
                Stored::Plain(_) => assert_eq!(file.stored_bytes(), body.len()),
            }
        }
        assert_eq!(packed, 8, "the line files pack, the random ones and the tiny one do not");
        let kept = PACK_SCRATCH.with_borrow(|s| s.packed.len() + s.unpacked.len());
        assert!(kept <= 2 * PACK_SCRATCH_KEPT, "{kept}");
    }

    #[derive(Default)]
    struct Counts {
        hits: AtomicUsize,
        renders: AtomicUsize,
        evictions: AtomicUsize,
        took: Mutex<Vec<Duration>>,
    }

    impl CacheObserver for Counts {
        fn hit(&self) {
            self.hits.fetch_add(1, Ordering::SeqCst);
        }
        fn rendered(&self, elapsed: Duration) {
            self.renders.fetch_add(1, Ordering::SeqCst);
            self.took.lock().unwrap().push(elapsed);
        }
        fn evicted(&self) {
            self.evictions.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn observed(max_bytes: u64) -> (FileCache, Arc<Counts>) {
        let cache = FileCache::new(max_bytes);
        let counts = Arc::new(Counts::default());
        cache.set_observer(counts.clone());
        (cache, counts)
    }

    fn file(bytes: usize) -> Arc<RenderedFile> {
        Arc::new(RenderedFile::new(vec![b'x'; bytes], "application/xml"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_render_once_and_the_rest_are_hits() {
        let (cache, counts) = observed(1 << 20);
        let renders = Arc::new(AtomicUsize::new(0));
        let waiting: Vec<_> = (0..16)
            .map(|_| {
                let (cache, renders) = (cache.clone(), renders.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_render(1, "SEP001122334455", 0, async {
                            renders.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, String>(file(100))
                        })
                        .await
                        .map(|f| f.len())
                })
            })
            .collect();
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(100));
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert_eq!(counts.renders.load(Ordering::SeqCst), 1);
        assert_eq!(counts.hits.load(Ordering::SeqCst), 15);
        // Another generation, revision or name is another file.
        for (generation, name, revision) in
            [(2, "SEP001122334455", 0), (1, "SEP001122334455", 1), (1, "SEP001122334466", 0)]
        {
            let r = cache.get_or_render(generation, name, revision, async { Ok::<_, String>(file(7)) }).await;
            assert_eq!(r.map(|f| f.len()), Ok(7));
        }
        assert_eq!(counts.renders.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn errors_are_not_kept_and_forget_drops_one_entry() {
        let (cache, counts) = observed(1 << 20);
        let failed =
            cache.get_or_render(1, "SEP001122334455", 0, async { Err::<Arc<RenderedFile>, _>("broken") }).await;
        assert_eq!(failed.err().map(|e| *e), Some("broken"));
        let ok = cache.get_or_render(1, "SEP001122334455", 0, async { Ok::<_, &str>(file(10)) }).await;
        assert!(ok.is_ok());
        assert_eq!(counts.renders.load(Ordering::SeqCst), 2, "the error was not cached");
        assert_eq!(cache.usage(), (1, 10 + ENTRY_OVERHEAD));
        cache.forget(1, "SEP001122334455", 0);
        assert_eq!(cache.usage(), (0, 0));
        let again = cache.get_or_render(1, "SEP001122334455", 0, async { Ok::<_, &str>(file(10)) }).await;
        assert!(again.is_ok());
        assert_eq!(counts.renders.load(Ordering::SeqCst), 3);
        cache.clear();
        assert_eq!(cache.usage().0, 0);
    }

    #[tokio::test]
    async fn the_bound_holds_evictions_are_counted_and_an_oversized_file_is_served_not_kept() {
        const MIB: u64 = 1 << 20;
        let (cache, counts) = observed(MIB);
        assert_eq!(cache.max_bytes(), MIB);
        for i in 0..400 {
            let r = cache.get_or_render(1, &format!("SEP{i:012}"), 0, async { Ok::<_, ()>(file(4096)) }).await;
            assert!(r.is_ok());
            assert!(cache.weighted_size() <= MIB, "{} bytes held after {i} files", cache.weighted_size());
        }
        assert!(counts.evictions.load(Ordering::SeqCst) > 0);
        let (entries, held) = cache.usage();
        assert!(entries > 100 && held <= MIB, "{entries} entries, {held} bytes");
        let big = cache.get_or_render(1, "RingList.xml", 0, async { Ok::<_, ()>(file(MIB as usize / 2)) }).await;
        assert_eq!(big.map(|f| f.len()), Ok(MIB as usize / 2));
        assert!(cache.weighted_size() <= MIB);
        let renders = counts.renders.load(Ordering::SeqCst);
        let _ = cache.get_or_render(1, "RingList.xml", 0, async { Ok::<_, ()>(file(MIB as usize / 2)) }).await;
        assert_eq!(counts.renders.load(Ordering::SeqCst), renders + 1, "too large to keep: rendered again");
    }
}
