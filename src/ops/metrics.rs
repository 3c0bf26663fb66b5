//! Prometheus metrics, served by the admin listener's `/metrics` in the Prometheus text exposition format
//! (0.0.4). Every name starts with `sipcfg_`; counters end in `_total`, durations and times are in seconds.
//!
//! The server layer counts what it sees (requests, refusals, handshakes, connections, token grants); the
//! cache reports through [`CacheObserver`]; gauges of state (cache size, inventory, certificates, readiness)
//! are read when scraped. Label values are a fixed set known at compile time: never a device name, a user,
//! a path or an address.
//!
//! Cost on the hot path: one relaxed atomic add per request (the label set is an index into a table made at
//! start), one per connection and handshake; a refused request adds a lookup of its (static) reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::app::channel::Channel;
use crate::ops::audit::AuditStats;
use crate::ops::inflight::{InFlight, Shed};
use crate::provision::cache::CacheObserver;
use crate::provision::filename::NameShape;

/// `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// What a request asked for, judged from its path alone (no decoding, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    DeviceConfig,
    DefaultConfig,
    CaConfig,
    EncryptedConfig,
    Common,
    OauthToken,
    OauthRevoke,
    Jwks,
    /// Anything else: a name outside the file-name grammar, an unparsable request.
    Other,
}

impl FileKind {
    pub const ALL: [FileKind; 9] = [
        FileKind::DeviceConfig,
        FileKind::DefaultConfig,
        FileKind::CaConfig,
        FileKind::EncryptedConfig,
        FileKind::Common,
        FileKind::OauthToken,
        FileKind::OauthRevoke,
        FileKind::Jwks,
        FileKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::DeviceConfig => "device-config",
            FileKind::DefaultConfig => "default-config",
            FileKind::CaConfig => "ca-config",
            FileKind::EncryptedConfig => "encrypted-config",
            FileKind::Common => "common",
            FileKind::OauthToken => "oauth-token",
            FileKind::OauthRevoke => "oauth-revoke",
            FileKind::Jwks => "jwks",
            FileKind::Other => "other",
        }
    }

    /// The kind of a file name, as the file-name grammar shapes it.
    pub fn of_name(shape: NameShape<'_>) -> FileKind {
        match shape {
            NameShape::DeviceConfig(_) => FileKind::DeviceConfig,
            NameShape::EncryptedConfig(_) => FileKind::EncryptedConfig,
            NameShape::DefaultConfig => FileKind::DefaultConfig,
            NameShape::CaConfig => FileKind::CaConfig,
            NameShape::Common => FileKind::Common,
        }
    }
}

/// The status codes counted one by one; any other is counted as `code="other"`.
const CODES: [(u16, &str); 15] = [
    (200, "200"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (413, "413"),
    (414, "414"),
    (429, "429"),
    (431, "431"),
    (500, "500"),
    (503, "503"),
];
const CODE_SLOTS: usize = CODES.len() + 1;
const LISTENERS: [Channel; 3] = Channel::ALL;

fn code_slot(status: u16) -> usize {
    CODES.iter().position(|&(c, _)| c == status).unwrap_or(CODES.len())
}

fn code_label(slot: usize) -> &'static str {
    CODES.get(slot).map_or("other", |&(_, s)| s)
}

fn listener_slot(channel: Channel) -> usize {
    match channel {
        Channel::Https => 0,
        Channel::Legacy => 1,
        Channel::Edge => 2,
    }
}

/// Requests by listener, kind and status: a flat table of atomics, indexed, made once.
#[derive(Debug)]
struct RequestCounts(Box<[AtomicU64]>);

impl RequestCounts {
    fn new() -> RequestCounts {
        RequestCounts((0..LISTENERS.len() * FileKind::ALL.len() * CODE_SLOTS).map(|_| AtomicU64::new(0)).collect())
    }

    fn slot(channel: Channel, kind: FileKind, status: u16) -> usize {
        let kind = FileKind::ALL.iter().position(|&k| k == kind).unwrap_or(FileKind::ALL.len() - 1);
        (listener_slot(channel) * FileKind::ALL.len() + kind) * CODE_SLOTS + code_slot(status)
    }

    fn add(&self, channel: Channel, kind: FileKind, status: u16) {
        if let Some(c) = self.0.get(Self::slot(channel, kind, status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, channel: Channel, kind: FileKind, status: u16) -> u64 {
        self.0.get(Self::slot(channel, kind, status)).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Upper bounds of the request-duration buckets, in seconds (the last bucket, +Inf, is implicit).
const LATENCY_BOUNDS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const LATENCY_SLOTS: usize = LATENCY_BOUNDS.len() + 1;

/// Request durations by listener and kind: per label set, a count per bucket and the sum in nanoseconds,
/// all atomics in flat tables made once (a request adds to three of them; no lock, no allocation).
#[derive(Debug)]
struct Latencies {
    buckets: Box<[AtomicU64]>,
    sum_ns: Box<[AtomicU64]>,
}

impl Latencies {
    fn new() -> Latencies {
        let sets = LISTENERS.len() * FileKind::ALL.len();
        Latencies {
            buckets: (0..sets * LATENCY_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: (0..sets).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(channel: Channel, kind: FileKind) -> usize {
        let kind = FileKind::ALL.iter().position(|&k| k == kind).unwrap_or(FileKind::ALL.len() - 1);
        listener_slot(channel) * FileKind::ALL.len() + kind
    }

    fn observe(&self, channel: Channel, kind: FileKind, took: Duration) {
        let set = Self::set(channel, kind);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BOUNDS.len());
        if let Some(b) = self.buckets.get(set * LATENCY_SLOTS + bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = self.sum_ns.get(set) {
            s.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct LatencyCollector(Arc<Latencies>);

impl Collector for LatencyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "Time from a request's head to its answer on the phone-facing listeners, by listener and file kind \
             (TLS handshakes not included).",
            None,
            MetricType::Histogram,
        )?;
        for (l, channel) in LISTENERS.iter().enumerate() {
            for (k, kind) in FileKind::ALL.iter().enumerate() {
                let set = l * FileKind::ALL.len() + k;
                let counts: Vec<u64> = (0..LATENCY_SLOTS)
                    .map(|b| self.0.buckets.get(set * LATENCY_SLOTS + b).map_or(0, |c| c.load(Ordering::Relaxed)))
                    .collect();
                let count: u64 = counts.iter().sum();
                if count == 0 {
                    continue;
                }
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
                    .iter()
                    .copied()
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(counts.iter().copied())
                    .collect();
                let sum = self.0.sum_ns.get(set).map_or(0, |s| s.load(Ordering::Relaxed)) as f64 / 1e9;
                let labels: [(&str, &str); 2] = [("listener", channel.as_str()), ("kind", kind.as_str())];
                family.encode_family(&labels)?.encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// Encodes the request table, one series per label set that has counted something (a full table of
/// zeros would be hundreds of series nobody reads).
#[derive(Debug)]
struct RequestCollector(Arc<RequestCounts>);

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "http_requests",
            "Requests answered on the phone-facing listeners, by listener, file kind and status code.",
            None,
            MetricType::Counter,
        )?;
        for (l, channel) in LISTENERS.iter().enumerate() {
            for (k, kind) in FileKind::ALL.iter().enumerate() {
                for code in 0..CODE_SLOTS {
                    let index = (l * FileKind::ALL.len() + k) * CODE_SLOTS + code;
                    let value = self.0.0.get(index).map_or(0, |c| c.load(Ordering::Relaxed));
                    if value == 0 {
                        continue;
                    }
                    let labels: [(&str, &str); 3] =
                        [("listener", channel.as_str()), ("kind", kind.as_str()), ("code", code_label(code))];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The audit log's counters, once `serve` has opened it; nothing is listed without an audit log.
#[derive(Debug, Default)]
struct AuditCollector(Arc<OnceLock<Arc<AuditStats>>>);

impl Collector for AuditCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.0.get() else { return Ok(()) };
        let counters: [(&str, &str, u64); 4] = [
            ("audit_lines_written", "Lines written to the audit log", stats.written()),
            (
                "audit_lines_dropped",
                "Audit lines lost: refused by the file system (disk full, I/O error) or still buffered when the \
                 writer could not finish at exit. Never to keep up: a full buffer makes requests wait instead",
                stats.dropped(),
            ),
            (
                "audit_waits",
                "Requests that waited for room in the audit log's full buffer (log.audit_buffer_bytes)",
                stats.waits(),
            ),
            (
                "audit_reopens",
                "Times the audit log was reopened after its file was renamed or removed",
                stats.reopens(),
            ),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        Ok(())
    }
}

/// The bound on work in flight (server.max_in_flight): its limits, what is in flight now, and what was shed,
/// read from the server's [`InFlight`] at scrape time; nothing is listed before the server has attached it.
#[derive(Debug, Default)]
struct InFlightCollector(Arc<OnceLock<Arc<InFlight>>>);

impl Collector for InFlightCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(f) = self.0.get() else { return Ok(()) };
        let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let gauges: [(&str, &str, usize); 4] = [
            (
                "in_flight",
                "Work in flight now on the phone-facing listeners: TLS handshakes in progress and requests being \
                 served (bounded by server.max_in_flight)",
                f.now(),
            ),
            ("in_flight_handshakes", "TLS handshakes in progress now (a part of sipcfg_in_flight)", f.handshakes()),
            ("in_flight_limit", "server.max_in_flight: past it, requests are answered 503 with Retry-After", f.limit()),
            (
                "in_flight_handshake_limit",
                "The share of server.max_in_flight TLS handshakes may hold now (three quarters, less while \
                 connections wait more than 10 ms for a worker); past it, new connections are closed before \
                 their handshake",
                f.effective_handshake_limit(),
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(as_i64(value)).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "shed",
            "Work refused past the in-flight bound, by reason: handshakes-at-bound (a new connection closed before \
             its TLS handshake), in-flight-at-bound (a request answered 503 with Retry-After)",
            None,
            MetricType::Counter,
        )?;
        for (reason, what) in [("handshakes-at-bound", Shed::Connection), ("in-flight-at-bound", Shed::Request)] {
            ConstCounter::new(f.shed(what)).encode(family.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// A token grant's type, as the token endpoint names it in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    ActivationCode,
    RefreshToken,
    /// Missing or unsupported `grant_type`.
    Other,
}

impl GrantType {
    const ALL: [GrantType; 3] = [GrantType::ActivationCode, GrantType::RefreshToken, GrantType::Other];

    fn as_str(self) -> &'static str {
        match self {
            GrantType::ActivationCode => "activation_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::Other => "other",
        }
    }

    fn slot(self) -> usize {
        match self {
            GrantType::ActivationCode => 0,
            GrantType::RefreshToken => 1,
            GrantType::Other => 2,
        }
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, Copy)]
pub enum HandshakeFailure {
    Error,
    Timeout,
}

/// Values read at scrape time from the state of the server.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub cache_entries: u64,
    pub cache_bytes: u64,
    pub devices: usize,
    pub users: usize,
    pub profiles: usize,
    pub generation: u64,
    /// The earliest `notAfter` (unix seconds) per certificate role (`server`, `edge-client-ca`,
    /// `phone-edge-trust`).
    pub certificate_expiry: Vec<(&'static str, i64)>,
    pub ready: bool,
    pub draining: bool,
    /// The files on disk loaded and serve (0: they do not load, and an older deployment serves).
    pub files_loaded: bool,
    /// The node started from the last good deployment kept in the state folder.
    pub serving_last_good: bool,
    /// Revocations the token service has taken in since start.
    pub revocations: u64,
    /// A shared store is configured.
    pub store_shared: bool,
    /// The shared store was reachable at the last look (true without one).
    pub store_up: bool,
    /// The shared store's last change number in force here.
    pub store_applied: u64,
}

/// Every metric of one server. Handles are made at start; recording is an atomic add.
pub struct Metrics {
    registry: Registry,
    scrape: Mutex<()>,
    requests: Arc<RequestCounts>,
    latencies: Arc<Latencies>,
    refusals: Family<Labels1, Counter>,
    handshakes: [Counter; 3],
    handshake_failures: [[Counter; 2]; 3],
    connections: [Gauge; 3],
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    render_seconds: Histogram,
    reloads: [Counter; 2],
    reload_last_success: Gauge,
    generation: Gauge,
    devices: Gauge,
    users: Gauge,
    profiles: Gauge,
    grants: [[Counter; 2]; 3],
    refreshes: Counter,
    revocations: Counter,
    codes_redeemed: Counter,
    certificate_expiry: Family<Labels1, Gauge>,
    ready: Gauge,
    draining: Gauge,
    files_loaded: Gauge,
    serving_last_good: Gauge,
    store_shared: Gauge,
    store_up: Gauge,
    store_applied: Gauge,
    store_lag: Histogram,
    store_unreachable: Counter,
    audit: Arc<OnceLock<Arc<AuditStats>>>,
    in_flight: Arc<OnceLock<Arc<InFlight>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sipcfg");
        let requests = Arc::new(RequestCounts::new());
        registry.register_collector(Box::new(RequestCollector(requests.clone())));
        let latencies = Arc::new(Latencies::new());
        registry.register_collector(Box::new(LatencyCollector(latencies.clone())));
        let audit = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(AuditCollector(audit.clone())));
        let in_flight = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(InFlightCollector(in_flight.clone())));

        let refusals = Family::<Labels1, Counter>::default();
        registry.register(
            "refusals",
            "Requests not answered with the file asked for, by the reason of the access line (no-token, \
             token-expired, not-own, rate-limited, header-too-large, unknown-file...)",
            refusals.clone(),
        );

        // Plain HTTP has no handshake: its slots exist (indexing stays simple) but are not exported.
        let tls = |l: Channel| l != Channel::Legacy;
        let handshake_family = Family::<Labels1, Counter>::default();
        let handshakes = LISTENERS.map(|l| match tls(l) {
            true => handshake_family.get_or_create_owned(&[("listener", l.as_str())]),
            false => Counter::default(),
        });
        registry.register("tls_handshakes", "TLS handshakes completed, by listener", handshake_family);
        let failure_family = Family::<Labels2, Counter>::default();
        let handshake_failures = LISTENERS.map(|l| {
            ["error", "timeout"].map(|r| match tls(l) {
                true => failure_family.get_or_create_owned(&[("listener", l.as_str()), ("reason", r)]),
                false => Counter::default(),
            })
        });
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (error) or did not finish in time (timeout), by listener",
            failure_family,
        );
        let connection_family = Family::<Labels1, Gauge>::default();
        let connections = LISTENERS.map(|l| connection_family.get_or_create_owned(&[("listener", l.as_str())]));
        registry.register(
            "open_connections",
            "Connections open now (TLS handshake included), by listener",
            connection_family,
        );

        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let cache_hits = counter(
            &mut registry,
            "cache_hits",
            "Rendered-file cache lookups answered without rendering (waiting for another request's render included)",
        );
        let cache_misses = counter(&mut registry, "cache_misses", "Rendered-file cache lookups that rendered the file");
        let cache_evictions = counter(
            &mut registry,
            "cache_evictions",
            "Rendered files evicted to keep the cache within cache.max_bytes",
        );
        let cache_bytes = Gauge::default();
        registry.register_with_unit(
            "cache_size",
            "Rendered-file cache size now, in weighted bytes (bodies plus per-entry overhead)",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let cache_entries = gauge(&mut registry, "cache_entries", "Rendered files in the cache now");
        // 50 us to 1.6 s: a device configuration renders in about a millisecond.
        let render_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register_with_unit(
            "render_duration",
            "Time to render a file on a cache miss (template, XML check, ETag)",
            Unit::Seconds,
            render_seconds.clone(),
        );

        let reload_family = Family::<Labels1, Counter>::default();
        let reloads = ["success", "failure"].map(|o| reload_family.get_or_create_owned(&[("outcome", o)]));
        registry.register(
            "reloads",
            "Reloads of the configuration and everything it names (a refused reload keeps the previous one serving)",
            reload_family,
        );
        let reload_last_success = Gauge::default();
        registry.register_with_unit(
            "reload_last_success_timestamp",
            "When the deployment in force was loaded (start or last successful reload), unix time",
            Unit::Seconds,
            reload_last_success.clone(),
        );
        let generation = gauge(&mut registry, "deployment_generation", "Generation of the deployment in force");
        let devices = gauge(&mut registry, "inventory_devices", "Devices in the inventory in force");
        let users = gauge(&mut registry, "inventory_users", "Users in the inventory in force");
        let profiles = gauge(&mut registry, "inventory_profiles", "Phone security profiles in the inventory in force");

        let grant_family = Family::<Labels2, Counter>::default();
        // An unknown grant type is never issued: that series would only ever read 0.
        let grants = GrantType::ALL.map(|g| {
            ["issued", "refused"].map(|o| match (g, o) {
                (GrantType::Other, "issued") => Counter::default(),
                _ => grant_family.get_or_create_owned(&[("grant_type", g.as_str()), ("outcome", o)]),
            })
        });
        registry.register(
            "token_grants",
            "Token endpoint requests, by grant type and outcome (issued: tokens returned)",
            grant_family,
        );
        let refreshes =
            counter(&mut registry, "token_refreshes", "Refresh tokens rotated (refresh_token grants issued)");
        let revocations = counter(
            &mut registry,
            "token_revocations",
            "Subject revocations taken in since start (/oauth/revoke and sipcfg token revoke)",
        );
        let codes_redeemed =
            counter(&mut registry, "activation_codes_redeemed", "Activation codes redeemed for tokens (onboardings)");

        let certificate_expiry = Family::<Labels1, Gauge>::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "Earliest notAfter of the certificates in force, by role (server chain, edge client CA, \
             Phone-Edge-Trust), unix time",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let ready = gauge(&mut registry, "ready", "1 when /readyz answers 200, else 0");
        let draining = gauge(&mut registry, "draining", "1 once shutdown began (open requests finishing), else 0");
        let files_loaded = gauge(
            &mut registry,
            "files_loaded",
            "1 when the deployment's files on disk loaded and serve; 0 when they do not load (a refused reload, or \
             a start from the last good deployment) and an older deployment serves",
        );
        let serving_last_good = gauge(
            &mut registry,
            "serving_last_good",
            "1 when the node started from the last good deployment kept in the state folder because its files did \
             not load, until they do",
        );
        let store_shared =
            gauge(&mut registry, "store_shared", "1 when the node follows a shared store ([store]), else 0");
        let store_up = gauge(
            &mut registry,
            "store_up",
            "1 when the shared store was reachable at the last look (always 1 without one); 0: downloads go on from \
             memory, token grants answer 503",
        );
        let store_applied = gauge(
            &mut registry,
            "store_applied_change",
            "The shared store's last change number in force on this node (compare nodes: one behind is lagging)",
        );
        let store_lag = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "store_change_lag",
            "From a change's commit in the shared store to its being in force on this node (notification, read, \
             apply)",
            Unit::Seconds,
            store_lag.clone(),
        );
        let store_unreachable =
            counter(&mut registry, "store_unreachable", "Times the shared store became unreachable for this node");
        let start: Gauge = Gauge::default();
        registry.register_with_unit("start_time", "When the process started, unix time", Unit::Seconds, start.clone());
        start.set(crate::util::time::unix_now() as i64);
        let build = Family::<Labels1, Gauge>::default();
        build.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))]).set(1);
        registry.register("build_info", "Always 1; the version label names the running build", build);
        reload_last_success.set(crate::util::time::unix_now() as i64);

        Metrics {
            registry,
            scrape: Mutex::new(()),
            requests,
            latencies,
            refusals,
            handshakes,
            handshake_failures,
            connections,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_bytes,
            cache_entries,
            render_seconds,
            reloads,
            reload_last_success,
            generation,
            devices,
            users,
            profiles,
            grants,
            refreshes,
            revocations,
            codes_redeemed,
            certificate_expiry,
            ready,
            draining,
            files_loaded,
            serving_last_good,
            store_shared,
            store_up,
            store_applied,
            store_lag,
            store_unreachable,
            audit,
            in_flight,
        }
    }

    /// Reports the audit log's counters from now on (`serve` opens the audit log before the metrics exist).
    pub fn attach_audit(&self, stats: Arc<AuditStats>) {
        let _ = self.audit.set(stats);
    }

    /// Reports the bound on work in flight from now on.
    pub fn attach_in_flight(&self, in_flight: Arc<InFlight>) {
        let _ = self.in_flight.set(in_flight);
    }

    /// One answered request: its listener, what it asked for, its status and the reason of its access line
    /// (empty when served).
    pub fn request(&self, channel: Channel, kind: FileKind, status: u16, reason: &'static str) {
        self.requests.add(channel, kind, status);
        if !reason.is_empty() {
            self.refusals.get_or_create(&[("reason", reason)]).inc();
        }
    }

    /// How long an answered request took, from its head to its answer.
    pub fn request_took(&self, channel: Channel, kind: FileKind, took: Duration) {
        self.latencies.observe(channel, kind, took);
    }

    /// A refusal that is not an answered request (a connection that timed out sending its head).
    pub fn refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&[("reason", reason)]).inc();
    }

    /// Requests counted so far for one label set (tests, diagnostics).
    pub fn requests(&self, channel: Channel, kind: FileKind, status: u16) -> u64 {
        self.requests.get(channel, kind, status)
    }

    pub fn handshake(&self, channel: Channel, outcome: Result<(), HandshakeFailure>) {
        let l = listener_slot(channel);
        match outcome {
            Ok(()) => self.handshakes[l].inc(),
            Err(HandshakeFailure::Error) => self.handshake_failures[l][0].inc(),
            Err(HandshakeFailure::Timeout) => self.handshake_failures[l][1].inc(),
        };
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection(&self, channel: Channel) -> ConnectionGuard {
        let gauge = self.connections[listener_slot(channel)].clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    pub fn reload(&self, success: bool) {
        if success {
            self.reloads[0].inc();
            self.reload_last_success.set(crate::util::time::unix_now() as i64);
        } else {
            self.reloads[1].inc();
        }
    }

    pub fn grant(&self, grant: GrantType, issued: bool) {
        self.grants[grant.slot()][usize::from(!issued)].inc();
        if issued {
            match grant {
                GrantType::ActivationCode => self.codes_redeemed.inc(),
                GrantType::RefreshToken => self.refreshes.inc(),
                GrantType::Other => 0,
            };
        }
    }

    /// A change of the shared store came in force here `secs` after its commit.
    pub fn store_lag(&self, secs: f64) {
        self.store_lag.observe(secs);
    }

    /// The shared store became unreachable.
    pub fn store_unreachable(&self) {
        self.store_unreachable.inc();
    }

    /// The text exposition of every metric, with the state gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        // One scrape at a time: the certificate family is cleared and refilled.
        let _one = self.scrape.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.cache_entries.set(gauge(snapshot.cache_entries));
        self.cache_bytes.set(gauge(snapshot.cache_bytes));
        self.devices.set(gauge(snapshot.devices as u64));
        self.users.set(gauge(snapshot.users as u64));
        self.profiles.set(gauge(snapshot.profiles as u64));
        self.generation.set(gauge(snapshot.generation));
        // Counted by the token service as it takes revocations in; the counter only follows.
        let counted = self.revocations.get();
        if snapshot.revocations > counted {
            self.revocations.inc_by(snapshot.revocations - counted);
        }
        self.certificate_expiry.clear();
        for &(role, not_after) in &snapshot.certificate_expiry {
            self.certificate_expiry.get_or_create(&[("certificate", role)]).set(not_after);
        }
        self.ready.set(i64::from(snapshot.ready));
        self.draining.set(i64::from(snapshot.draining));
        self.files_loaded.set(i64::from(snapshot.files_loaded));
        self.serving_last_good.set(i64::from(snapshot.serving_last_good));
        self.store_shared.set(i64::from(snapshot.store_shared));
        self.store_up.set(i64::from(snapshot.store_up));
        self.store_applied.set(gauge(snapshot.store_applied));
        let mut text = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        // The standard process metrics, unprefixed as every exporter names them (format 0.0.4 has no end
        // marker, so they go last).
        text.push_str(&crate::ops::process::exposition());
        text
    }
}

/// Decrements the open-connections gauge of its listener when dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl CacheObserver for Metrics {
    fn hit(&self) {
        self.cache_hits.inc();
    }

    fn rendered(&self, elapsed: Duration) {
        self.cache_misses.inc();
        self.render_seconds.observe(elapsed.as_secs_f64());
    }

    fn evicted(&self) {
        self.cache_evictions.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_own_slot_and_encode_with_their_labels() {
        let m = Metrics::new();
        m.request(Channel::Https, FileKind::DeviceConfig, 200, "");
        m.request(Channel::Https, FileKind::DeviceConfig, 200, "");
        m.request(Channel::Legacy, FileKind::Common, 404, "no-common-file");
        m.request(Channel::Edge, FileKind::Other, 418, "teapot");
        assert_eq!(m.requests(Channel::Https, FileKind::DeviceConfig, 200), 2);
        assert_eq!(m.requests(Channel::Legacy, FileKind::DeviceConfig, 200), 0);
        m.handshake(Channel::Https, Err(HandshakeFailure::Timeout));
        let _open = m.connection(Channel::Edge);
        m.grant(GrantType::RefreshToken, true);
        let in_flight = Arc::new(InFlight::new(8));
        m.attach_in_flight(in_flight.clone());
        let _request = in_flight.request();
        drop(in_flight.handshake());
        let text = m.encode(&Snapshot {
            devices: 3,
            certificate_expiry: vec![("server", 1_900_000_000)],
            ready: true,
            ..Snapshot::default()
        });
        for line in [
            "sipcfg_http_requests_total{listener=\"https\",kind=\"device-config\",code=\"200\"} 2",
            "sipcfg_http_requests_total{listener=\"http\",kind=\"common\",code=\"404\"} 1",
            "sipcfg_http_requests_total{listener=\"edge\",kind=\"other\",code=\"other\"} 1",
            "sipcfg_refusals_total{reason=\"no-common-file\"} 1",
            "sipcfg_tls_handshake_failures_total{listener=\"https\",reason=\"timeout\"} 1",
            "sipcfg_open_connections{listener=\"edge\"} 1",
            "sipcfg_token_grants_total{grant_type=\"refresh_token\",outcome=\"issued\"} 1",
            "sipcfg_token_refreshes_total 1",
            "sipcfg_inventory_devices 3",
            "sipcfg_certificate_expiry_timestamp_seconds{certificate=\"server\"} 1900000000",
            "sipcfg_ready 1",
            "sipcfg_in_flight 1",
            "sipcfg_in_flight_handshakes 0",
            "sipcfg_in_flight_limit 8",
            "sipcfg_in_flight_handshake_limit 6",
            "sipcfg_shed_total{reason=\"handshakes-at-bound\"} 0",
            "sipcfg_shed_total{reason=\"in-flight-at-bound\"} 0",
            "# TYPE sipcfg_render_duration_seconds histogram",
            "# TYPE sipcfg_cache_size_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("kind=\"device-config\",code=\"404\""), "zero series are left out");
        drop(_open);
        assert!(m.encode(&Snapshot::default()).contains("sipcfg_open_connections{listener=\"edge\"} 0"));
    }
}
