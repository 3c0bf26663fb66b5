//! The proof of issue 14 point 7, with real parts: a PostgreSQL of its own, three `sipcfg serve` nodes from
//! one configuration, HAProxy in `mode tcp` in front, and simulated phones (tests/common/phone.rs) that
//! onboard with activation codes, refresh and download while a node is killed, while PostgreSQL is
//! stopped, and while a revocation and a device edit made on one node reach the others. A last variant has
//! no balancer: the phones are given two node addresses, as DHCP option 150 gives them, and fail over by
//! themselves.
//!
//! The measured figures are printed on standard error, each line starting with `cluster-measure:`
//! (`cargo test --test cluster -- --nocapture | grep cluster-measure`).
//!
//! The tests take turns (one lock): they measure delays, and two of them at once on a small machine would
//! measure each other.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::pg::Postgres;
use common::phone::{Counters, Onboard, Phone, min_median_max, within};
use common::{Client, ServeProcess, TempDeployment};
use http::StatusCode;
use sipcfg::auth::service::TokenService;
use sipcfg::auth::store::AuthStore;
use sipcfg::config::Config;
use sipcfg::provision::filename::DeviceName;
use sipcfg::store::kek::Kek;
use sipcfg::store::postgres::PgStore;

/// The database of the shared store in the test's PostgreSQL.
const DB: &str = "cluster";

/// `[store] resync_secs`: far longer than any delay the tests allow, so that what they measure is the
/// change notifications (LISTEN/NOTIFY) and the resynchronisation after a reconnect, not the periodic read
/// of the change log that would otherwise bring every change in within its period anyway.
const RESYNC_SECS: u64 = 60;

/// One test at a time (see the module's doc). An async lock: it is held across awaits, and each test has
/// a runtime of its own (tokio's lock is not tied to one); a test that panics releases it.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// The name of the `i`th device the tests add to the example's inventory (a Cisco 8851 on the OAuth
/// profile).
fn device(i: usize) -> String {
    format!("SEP00CC{i:08X}")
}

/// A PostgreSQL, a deployment moved into it (the example's, plus `devices` OAuth phones) and its nodes.
struct Cluster {
    pg: Postgres,
    d: TempDeployment,
    /// `None` once killed.
    nodes: Vec<Option<ServeProcess>>,
}

impl Cluster {
    /// Starts PostgreSQL, runs `store init`, imports `devices` phones with `sipcfg import`, then starts
    /// `nodes` nodes of the same configuration.
    async fn start(nodes: usize, devices: usize) -> Cluster {
        let started = Instant::now();
        let pg = Postgres::start();
        pg.psql(&format!("CREATE DATABASE {DB} OWNER sipcfg"));
        let d = TempDeployment::new();
        let url = format!("{}/{DB}", pg.url().rsplit_once('/').unwrap().0);
        d.append(
            "example/sipcfg.toml",
            &format!(
                "\n[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nkey_file = \"store.key\"\nresync_secs = \
                 {RESYNC_SECS}\n",
                pg.password_file().display()
            ),
        );
        ok(&sipcfg(&d.path("example/sipcfg.toml"), &["store", "init"]));
        let mut csv =
            String::from("DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DIRECTORY NUMBER 1,LINE TEXT LABEL 1\n");
        for i in 0..devices {
            csv.push_str(&format!("{},Cisco 8851,Cisco 8851 - Encrypted OAuth,{},Phone {i}\n", device(i), 3000 + i));
        }
        std::fs::write(d.path("phones.csv"), csv).unwrap();
        ok(&sipcfg(&d.path("example/sipcfg.toml"), &["import", d.path("phones.csv").to_str().unwrap()]));
        // One configuration for every node. Each node is started through a name of its own for that file (a
        // symbolic link beside it, so every relative path in it means the same), only so that each has its
        // own standard error file (ServeProcess writes it beside the configuration).
        let mut starting = Vec::new();
        for n in 0..nodes {
            let link = d.path(&format!("example/node{n}.toml"));
            std::os::unix::fs::symlink("sipcfg.toml", &link).unwrap();
            starting.push(tokio::spawn(async move { ServeProcess::start(&link, "info").await }));
        }
        let mut started_nodes = Vec::new();
        for s in starting {
            started_nodes.push(Some(s.await.unwrap()));
        }
        eprintln!("cluster-setup: PostgreSQL, store init, import and {nodes} nodes in {:?}", started.elapsed());
        Cluster { pg, d, nodes: started_nodes }
    }

    fn config(&self) -> PathBuf {
        self.d.path("example/sipcfg.toml")
    }

    fn node(&self, n: usize) -> &ServeProcess {
        self.nodes[n].as_ref().expect("a running node")
    }

    fn addr(&self, n: usize) -> SocketAddr {
        self.node(n).addr
    }

    /// SIGKILL, as a crash: no shutdown, connections cut.
    fn kill(&mut self, n: usize) -> ServeProcess {
        let mut node = self.nodes[n].take().expect("a running node");
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        node
    }

    /// Runs `sql` in the shared store's database.
    fn sql(&self, sql: &str) -> String {
        self.pg.psql_in(DB, sql)
    }

    /// The families that have more than one live refresh token (must be none).
    fn families_with_two_live_tokens(&self) -> String {
        self.sql("SELECT family FROM refresh_tokens WHERE state = 'active' GROUP BY family HAVING count(*) > 1")
    }

    /// The acknowledged refresh tokens of `phones` that the store no longer holds as active or rotated (a
    /// token a phone received in a 200 answer is either the live one of its family, or was rotated by the
    /// phone's own refresh): must be none.
    fn lost_tokens(&self, phones: &[Phone]) -> String {
        let values: Vec<String> = phones
            .iter()
            .flat_map(|p| p.acknowledged.iter().enumerate().map(move |(i, t)| format!("('{}', {i}, '{t}')", p.device)))
            .collect();
        self.sql(&format!(
            "SELECT a.device, a.n, coalesce(r.state, 'missing') FROM (VALUES {}) AS a (device, n, token)
             LEFT JOIN refresh_tokens r ON r.digest = sha256(convert_to(a.token, 'UTF8'))
             WHERE r.state IS NULL OR r.state NOT IN ('active', 'rotated')
             ORDER BY 1, 2",
            values.join(",")
        ))
    }
}

fn sipcfg(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("SIPCFG_STORE_URL")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn code_for(config: &Path, device: &str) -> String {
    let out = sipcfg(config, &["activation-code", "create", "--device", device]);
    ok(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Activation codes in bulk, made by the token service of the shared store as `sipcfg activation-code
/// create` makes them (`TokenService::create_activation_code`), without its 300 ms of process start each:
/// the storms need a few hundred. The other tests use the command itself.
struct CodeMaker {
    service: TokenService,
}

impl CodeMaker {
    async fn open(config: &Path) -> CodeMaker {
        let config = Config::load(config).unwrap();
        let store = config.store.clone().expect("a [store]");
        let kek = Kek::load(&store.key_file).unwrap();
        let store: Arc<dyn AuthStore> = Arc::new(PgStore::open(&store, Some(kek)).unwrap());
        let service = TokenService::open(store, &config.auth, 30, now()).await.unwrap();
        CodeMaker { service }
    }

    async fn code(&self, device: &str) -> String {
        let name = DeviceName::parse_canonical(device).unwrap();
        self.service.create_activation_code(&name, now(), 86_400).await.unwrap().1
    }
}

fn now() -> i64 {
    sipcfg::util::time::unix_now() as i64
}

/// What a storm did, for the report.
#[derive(Debug, Default)]
struct StormFigures {
    phones: usize,
    cycles: usize,
    refreshes: usize,
    requests: usize,
    answered_at_kill: usize,
    retries_before_kill: usize,
    retries_after_kill: usize,
    transport_errors: usize,
    server_errors: usize,
    failovers: usize,
    /// Most attempts one request needed.
    most_attempts: usize,
    /// Refresh tokens presented again within the reuse grace window (their answer was lost), per the nodes'
    /// logs: each got a new token and its family lived on.
    grace_retries: usize,
    /// Onboardings whose answer was lost with the killed node (the code spent, the phone given a new one).
    lost_onboardings: usize,
    took: Duration,
}

/// One phone's life in a storm: `cycles` times, onboard with a new activation code, download, then
/// `refreshes` times refresh and download. A download must serve the phone's own file (its label).
async fn phone_life(
    mut phone: Phone,
    label: String,
    codes: Vec<String>,
    maker: Arc<CodeMaker>,
    refreshes: usize,
) -> Result<(Phone, usize), String> {
    let mut lost = 0;
    for first in codes {
        let mut code = first;
        loop {
            match phone.onboard(&code).await {
                Ok(()) => break,
                // The node died after spending the code and before answering: activation codes are single
                // use and have no reuse grace, so the phone needs a new one (an administrator's act).
                Err(Onboard::AnswerLost) if lost < 2 => {
                    lost += 1;
                    code = maker.code(&phone.device).await;
                }
                Err(Onboard::AnswerLost) => return Err(format!("onboarding lost twice\n{}", phone.story())),
                Err(Onboard::Failed(e)) => return Err(e),
            }
        }
        let file = phone.download().await?;
        if !file.contains(&label) {
            return Err(format!("{} served a file without {label:?}:\n{file}", phone.device));
        }
        for _ in 0..refreshes {
            phone.refresh().await?;
            phone.download().await?;
        }
    }
    Ok((phone, lost))
}

/// Runs `phones` (phone `i` is device `i`) through `cycles` onboard/download/(refresh/download)×`refreshes`
/// cycles at once, and SIGKILLs node `victim` once a third of their requests were answered. Panics with the
/// stories of the phones that did not get through. `before_kill` runs just before the kill.
async fn storm(
    c: &mut Cluster,
    phones: Vec<Phone>,
    cycles: usize,
    refreshes: usize,
    counters: &Arc<Counters>,
    victim: usize,
    before_kill: impl FnOnce(),
) -> (Vec<Phone>, StormFigures) {
    let maker = Arc::new(CodeMaker::open(&c.config()).await);
    let made = Instant::now();
    let mut codes = Vec::new();
    for p in &phones {
        let mut mine = Vec::new();
        for _ in 0..cycles {
            mine.push(maker.code(&p.device).await);
        }
        codes.push(mine);
    }
    eprintln!("cluster-setup: {} activation codes in {:?}", phones.len() * cycles, made.elapsed());
    let mut figures = StormFigures {
        phones: phones.len(),
        cycles,
        refreshes,
        requests: phones.len() * cycles * (2 + 2 * refreshes),
        ..StormFigures::default()
    };
    let started = Instant::now();
    let tasks: Vec<_> = phones
        .into_iter()
        .zip(codes)
        .enumerate()
        .map(|(i, (phone, codes))| {
            tokio::spawn(phone_life(phone, format!(">Phone {i}<"), codes, maker.clone(), refreshes))
        })
        .collect();
    let third = figures.requests / 3;
    let reached = within(Duration::from_secs(60), Duration::from_millis(2), || async {
        Counters::get(&counters.answered) >= third
    })
    .await;
    assert!(reached.is_some(), "the storm did not get a third through in 60 s");
    before_kill();
    figures.answered_at_kill = Counters::get(&counters.answered);
    figures.retries_before_kill = Counters::get(&counters.retries);
    let killed = c.kill(victim);
    let killed_at = started.elapsed();
    let mut phones = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok((phone, lost)) => {
                figures.lost_onboardings += lost;
                phones.push(phone);
            }
            Err(e) => failures.push(e),
        }
    }
    figures.took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} phone(s) did not get through the kill of node {victim} at {killed_at:?}:\n{}\n--- the killed node's log (tail) \
         ---\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&killed.log(), 30)
    );
    figures.retries_after_kill = Counters::get(&counters.retries) - figures.retries_before_kill;
    figures.transport_errors = Counters::get(&counters.transport_errors);
    figures.server_errors = Counters::get(&counters.server_errors);
    figures.failovers = Counters::get(&counters.failovers);
    figures.most_attempts = Counters::get(&counters.most_attempts);
    let logs = std::iter::once(killed.log()).chain(c.nodes.iter().flatten().map(ServeProcess::log));
    figures.grace_retries = logs.map(|log| log.matches("presented again within the reuse grace window").count()).sum();
    // The kill was mid-storm: a good part of the requests came after it.
    assert!(
        figures.requests - figures.answered_at_kill >= figures.requests / 3,
        "the storm was almost over when node {victim} was killed: {figures:?}"
    );
    (phones, figures)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// After a storm: no family has two live refresh tokens, no acknowledged refresh token was lost, and each
/// phone's last one still refreshes (through `addrs`), and the new access token still downloads.
async fn after_the_storm(c: &Cluster, phones: &mut [Phone]) {
    let two = c.families_with_two_live_tokens();
    assert!(two.trim().is_empty(), "families with two live refresh tokens: {two}");
    let lost = c.lost_tokens(phones);
    assert!(lost.trim().is_empty(), "acknowledged refresh tokens lost (device|index|state):\n{lost}");
    for p in phones.iter_mut() {
        p.refresh().await.unwrap_or_else(|e| panic!("after the storm: {e}"));
        p.download().await.unwrap_or_else(|e| panic!("after the storm: {e}"));
    }
    let two = c.families_with_two_live_tokens();
    assert!(two.trim().is_empty(), "families with two live refresh tokens: {two}");
    let lost = c.lost_tokens(phones);
    assert!(lost.trim().is_empty(), "acknowledged refresh tokens lost (device|index|state):\n{lost}");
}

fn report_storm(name: &str, f: &StormFigures) {
    eprintln!(
        "cluster-measure: {name}: {} phones x {} cycles (onboard, download, {} x refresh+download) = {} requests in \
         {:.1} s; node killed after {} answers; retries before the kill {}, after it {} (transport errors {}, 5xx \
         {}, fail-overs to the next address {}; at most {} attempts for one request); refreshes retried within the \
         reuse grace window {}; onboardings whose answer died with the node: {}",
        f.phones,
        f.cycles,
        f.refreshes,
        f.requests,
        f.took.as_secs_f64(),
        f.answered_at_kill,
        f.retries_before_kill,
        f.retries_after_kill,
        f.transport_errors,
        f.server_errors,
        f.failovers,
        f.most_attempts,
        f.grace_retries,
        f.lost_onboardings,
    );
}

/// HAProxy's count of sessions sent to backend `index` (`show stat`, field `stot`).
fn sessions(haproxy: &Haproxy, index: usize) -> u64 {
    let name = format!("b{index}");
    haproxy
        .admin("show stat")
        .lines()
        .map(|line| line.split(',').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.len() > 7 && f[0] == "sipcfg" && f[1] == name)
        .and_then(|f| f[7].parse().ok())
        .unwrap_or(0)
}

/// HAProxy in front of every node of `c`, once its health checks count them all up.
async fn balancer(c: &Cluster) -> Haproxy {
    let addrs: Vec<SocketAddr> = (0..c.nodes.len()).map(|n| c.addr(n)).collect();
    let haproxy = Haproxy::start_tcp(&addrs);
    let up = within(Duration::from_secs(10), Duration::from_millis(50), || async {
        (0..addrs.len()).all(|i| haproxy.backend_up(i))
    })
    .await;
    assert!(up.is_some(), "HAProxy does not count every node up:\n{}", haproxy.log());
    haproxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_storm_costs_no_phone_its_file_and_no_acknowledged_refresh_token() {
    const PHONES: usize = 60;
    const CYCLES: usize = 3;
    const REFRESHES: usize = 2;
    let _turn = turn().await;
    let mut c = Cluster::start(3, PHONES).await;
    let haproxy = balancer(&c).await;
    let counters = Arc::new(Counters::default());
    let phones: Vec<Phone> = (0..PHONES).map(|i| Phone::new(&device(i), &[haproxy.addr()], counters.clone())).collect();
    let mut served_by_victim = 0;
    let (mut phones, figures) = storm(&mut c, phones, CYCLES, REFRESHES, &counters, 2, || {
        served_by_victim = sessions(&haproxy, 2);
    })
    .await;
    // The killed node had its share of the storm before it died, and HAProxy saw it die.
    assert!(served_by_victim > 0, "node 2 served nothing before the kill:\n{}", haproxy.admin("show stat"));
    let down = within(Duration::from_secs(5), Duration::from_millis(50), || async { !haproxy.backend_up(2) }).await;
    assert!(down.is_some(), "HAProxy still counts the killed node up:\n{}", haproxy.log());
    report_storm("SIGKILL through HAProxy", &figures);
    eprintln!(
        "cluster-measure: SIGKILL through HAProxy: node 2 had served {served_by_victim} connections before the kill"
    );
    after_the_storm(&c, &mut phones).await;
}

/// Onboards `phone` with a code from `sipcfg activation-code create`, with its retries.
async fn onboard(c: &Cluster, phone: &mut Phone) {
    let code = code_for(&c.config(), &phone.device);
    match phone.onboard(&code).await {
        Ok(()) => {}
        Err(Onboard::AnswerLost) => panic!("an onboarding answer was lost with no node killed\n{}", phone.story()),
        Err(Onboard::Failed(e)) => panic!("{e}"),
    }
}

/// Whether node `n`'s `/readyz` says it is ready but degraded by the store.
async fn degraded(node: &ServeProcess) -> bool {
    degraded_at(node.admin).await
}

/// The same, by the node's admin address.
async fn degraded_at(admin: SocketAddr) -> bool {
    let r = Client::plain_to(admin).get("/readyz", None).await;
    r.status == StatusCode::OK && r.text().contains("degraded: store")
}

/// How long a node may take to say on `/readyz` that the store is down. Noticing costs waits of up to
/// `[store] connect_timeout_secs` (5 s by default) each: the notification listener's reconnection, then the
/// probe that marks the node degraded, about 10 s in all (15 s leaves room for a slow machine).
const DEGRADED_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_10_s_downloads_go_on_grants_answer_503_then_work_again_within_10_s() {
    const PHONES: usize = 6;
    let _turn = turn().await;
    let c = Cluster::start(3, PHONES).await;
    let haproxy = balancer(&c).await;
    let counters = Arc::new(Counters::default());
    let mut phones: Vec<Phone> =
        (0..PHONES).map(|i| Phone::new(&device(i), &[haproxy.addr()], counters.clone())).collect();
    for p in &mut phones {
        onboard(&c, p).await;
        p.download().await.unwrap();
    }

    // The outage: for 10 s, phones download (through HAProxy and from each node directly, one attempt
    // each, every 200 ms) while others ask for grants through HAProxy, one at a time.
    c.pg.stop();
    let stopped = Instant::now();
    let outage = Duration::from_secs(10);
    // From the stop on, each node's /readyz is polled every 100 ms until it says the store is down.
    let noticing: Vec<_> = (0..3)
        .map(|n| {
            let admin = c.node(n).admin;
            tokio::spawn(async move {
                within(DEGRADED_WITHIN, Duration::from_millis(100), || degraded_at(admin))
                    .await
                    .map(|_| stopped.elapsed())
            })
        })
        .collect();
    let mut targets = vec![haproxy.addr()];
    targets.extend((0..3).map(|n| c.addr(n)));
    let downloaders: Vec<(String, String)> =
        phones.iter().map(|p| (p.file(), format!("Bearer {}", p.access.as_deref().unwrap()))).collect();
    let downloading = tokio::spawn(async move {
        let (mut answered, mut slowest) = (0, Duration::ZERO);
        while stopped.elapsed() < outage {
            for (file, auth) in &downloaders {
                for addr in &targets {
                    let t = Instant::now();
                    let r = common::phone::once(*addr, "GET", file, &[("authorization", auth)], "")
                        .await
                        .unwrap_or_else(|e| panic!("download of {file} at {addr} during the outage: {e}"));
                    assert_eq!(r.status, StatusCode::OK, "{file} at {addr} during the outage: {}", r.text());
                    answered += 1;
                    slowest = slowest.max(t.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (answered, slowest)
    });
    // Each phone asks for a grant through HAProxy every 200 ms, one attempt each: 503 with Retry-After, and
    // its refresh token is not spent (the phones use theirs again afterwards).
    let granting: Vec<_> = phones
        .into_iter()
        .map(|mut p| {
            let haproxy = haproxy.addr();
            tokio::spawn(async move {
                let (mut refused, mut slowest) = (0, Duration::ZERO);
                while stopped.elapsed() < outage {
                    let t = Instant::now();
                    let r = p.refresh_once(haproxy).await.unwrap_or_else(|e| panic!("a grant during the outage: {e}"));
                    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "grant during the outage: {}", r.text());
                    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok()), "{:?}", r.headers);
                    refused += 1;
                    slowest = slowest.max(t.elapsed());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (p, refused, slowest)
            })
        })
        .collect();
    let (mut grants, mut slowest_grant) = (0, Duration::ZERO);
    let mut phones = Vec::new();
    for g in granting {
        let (p, refused, slowest) = g.await.unwrap();
        phones.push(p);
        grants += refused;
        slowest_grant = slowest_grant.max(slowest);
    }
    let (downloads, slowest_download) = downloading.await.unwrap();
    // A node that has not yet seen the store go down waits for a connection up to [store]
    // connect_timeout_secs (5 s by default) before it answers 503; after that, at once.
    assert!(slowest_grant < Duration::from_secs(7), "a grant took {slowest_grant:?} to be refused");
    // Every node says why it is degraded (PostgreSQL stays stopped until each did, or DEGRADED_WITHIN
    // passed), and its metric.
    let mut noticed = Vec::new();
    for (n, t) in noticing.into_iter().enumerate() {
        let Some(after) = t.await.unwrap() else {
            let readyz = Client::plain_to(c.node(n).admin).get("/readyz", None).await.text();
            panic!("node {n} /readyz {DEGRADED_WITHIN:?} after PostgreSQL stopped: {readyz}\n{}", c.node(n).log());
        };
        assert!(degraded(c.node(n)).await, "node {n} no longer degraded with PostgreSQL stopped");
        assert_eq!(c.node(n).metrics().await.get("sipcfg_store_up"), 0.0, "node {n}");
        noticed.push(after);
    }
    let stopped_for = stopped.elapsed();
    eprintln!(
        "cluster-measure: /readyz said 'degraded: store' after PostgreSQL stopped: node 0 after {:.1} s, node 1 {:.1} \
         s, node 2 {:.1} s",
        noticed[0].as_secs_f64(),
        noticed[1].as_secs_f64(),
        noticed[2].as_secs_f64(),
    );

    c.pg.start_again();
    let back = Instant::now();
    // Grants work again: through HAProxy (phone 0), and on each node directly (phones 1-3), each polled
    // every 50 ms with one attempt.
    let [p0, p1, p2, p3, ..] = &mut phones[..] else { unreachable!() };
    let (via_haproxy, d0, d1, d2) = tokio::join!(
        poll_grant(p0, haproxy.addr(), back),
        poll_grant(p1, c.addr(0), back),
        poll_grant(p2, c.addr(1), back),
        poll_grant(p3, c.addr(2), back),
    );
    let direct = [d0, d1, d2];
    eprintln!(
        "cluster-measure: PostgreSQL stopped {:.1} s: {downloads} downloads answered 200 (slowest {:.0} ms), \
         {grants} grants answered 503 with Retry-After (slowest {:.0} ms)",
        stopped_for.as_secs_f64(),
        slowest_download.as_secs_f64() * 1000.0,
        slowest_grant.as_secs_f64() * 1000.0,
    );
    eprintln!(
        "cluster-measure: grants work again after PostgreSQL's restart: through HAProxy after {:.0} ms; on node 0 \
         after {:.0} ms, node 1 {:.0} ms, node 2 {:.0} ms",
        via_haproxy.as_secs_f64() * 1000.0,
        direct[0].as_secs_f64() * 1000.0,
        direct[1].as_secs_f64() * 1000.0,
        direct[2].as_secs_f64() * 1000.0,
    );
    for (what, took) in std::iter::once(("HAProxy", via_haproxy)).chain(direct.iter().map(|d| ("a node", *d))) {
        assert!(took < Duration::from_secs(10), "grants through {what} came back after {took:?}");
    }
    // Nothing was lost: every phone refreshes and downloads, and the nodes say they are whole again.
    for p in &mut phones {
        p.refresh().await.unwrap();
        p.download().await.unwrap();
    }
    for n in 0..3 {
        let whole =
            within(Duration::from_secs(5), Duration::from_millis(50), || async { !degraded(c.node(n)).await }).await;
        assert!(whole.is_some(), "node {n} still degraded");
        assert_eq!(c.node(n).metrics().await.get("sipcfg_store_up"), 1.0, "node {n}");
    }
    assert_eq!(Counters::get(&counters.retries), 0, "a phone had to retry");
    let two = c.families_with_two_live_tokens();
    assert!(two.trim().is_empty(), "families with two live refresh tokens: {two}");
    let lost = c.lost_tokens(&phones);
    assert!(lost.trim().is_empty(), "acknowledged refresh tokens lost (device|index|state):\n{lost}");
}

/// Tries one refresh of `phone` at `addr` every 50 ms until one is answered 200; how long after `since`.
async fn poll_grant(phone: &mut Phone, addr: SocketAddr, since: Instant) -> Duration {
    loop {
        match phone.refresh_once(addr).await {
            Ok(r) if r.status == StatusCode::OK => return since.elapsed(),
            Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(r) => {
                panic!("a grant at {addr} after the restart answered {}: {}\n{}", r.status, r.text(), phone.story())
            }
            Err(e) => panic!("a grant at {addr} after the restart: {e}"),
        }
        assert!(since.elapsed() < Duration::from_secs(30), "grants at {addr} did not come back\n{}", phone.story());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the file of `phone` at `addr` every 10 ms until `done` holds for the answer; when it did (the
/// instant the answer arrived), or None after 5 s.
async fn until_served(phone: &Phone, addr: SocketAddr, done: impl Fn(&common::Resp) -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let r = phone.download_once(addr).await.unwrap_or_else(|e| panic!("{} at {addr}: {e}", phone.file()));
        if done(&r) {
            return Some(Instant::now());
        }
        assert!(
            r.status == StatusCode::OK,
            "{} at {addr} answered {} while polling: {}",
            phone.file(),
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Milliseconds since the Unix epoch now, on the clock PostgreSQL also reads (one machine).
fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_and_a_device_edit_made_on_one_node_are_in_force_on_the_others_within_2_s() {
    const ROUNDS: usize = 5;
    let _turn = turn().await;
    let c = Cluster::start(3, 2 * ROUNDS).await;
    let counters = Arc::new(Counters::default());
    // Per node: how long until a revocation made on another node was in force there; until an edit was
    // served there, from the start of the command that made it and from its commit in the store.
    let mut revoked: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut edited_from_command: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut edited_from_commit: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for round in 0..ROUNDS {
        let a = round % 3;
        let others: Vec<usize> = (0..3).filter(|&n| n != a).collect();
        // Two phones onboarded on node A, served by every node.
        let mut gone = Phone::new(&device(2 * round), &[c.addr(a)], counters.clone());
        let mut edited = Phone::new(&device(2 * round + 1), &[c.addr(a)], counters.clone());
        onboard(&c, &mut gone).await;
        onboard(&c, &mut edited).await;
        for n in 0..3 {
            for p in [&gone, &edited] {
                let r = p.download_once(c.addr(n)).await.unwrap();
                assert_eq!(r.status, StatusCode::OK, "{} at node {n}: {}", p.file(), r.text());
            }
        }

        // The revocation: POST /oauth/revoke on node A (RFC 7009) with the phone's refresh token; the other
        // nodes are polled from the moment it is sent.
        let refresh = gone.refresh.clone().unwrap();
        let body = format!("token={refresh}");
        let sent = Instant::now();
        let revoke = async {
            let r = common::phone::once(
                c.addr(a),
                "POST",
                "/oauth/revoke",
                &[("content-type", "application/x-www-form-urlencoded")],
                &body,
            )
            .await
            .unwrap();
            assert_eq!(r.status, StatusCode::OK, "revoke on node {a}: {}", r.text());
            Instant::now()
        };
        let unauthorized = |r: &common::Resp| r.status == StatusCode::UNAUTHORIZED;
        let (answered, b, c2) = tokio::join!(
            revoke,
            until_served(&gone, c.addr(others[0]), unauthorized),
            until_served(&gone, c.addr(others[1]), unauthorized),
        );
        // Node A refuses the token as soon as it answered the revocation.
        let r = gone.download_once(c.addr(a)).await.unwrap();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "node {a} right after its revocation answered");
        for (n, seen) in [(others[0], b), (others[1], c2)] {
            let seen =
                seen.unwrap_or_else(|| panic!("node {n}: the revocation made on node {a} not in force after 5 s"));
            revoked[n].push(seen - sent);
        }
        eprintln!(
            "cluster-measure: round {round}: revocation on node {a} (answered in {:.0} ms): in force on node {} after \
             {:.0} ms, node {} after {:.0} ms",
            (answered - sent).as_secs_f64() * 1000.0,
            others[0],
            revoked[others[0]].last().unwrap().as_secs_f64() * 1000.0,
            others[1],
            revoked[others[1]].last().unwrap().as_secs_f64() * 1000.0,
        );

        // The edit: a new line label for the other phone, `sipcfg import --update`; every node is polled
        // from the moment the command starts.
        let label = format!("Edited in round {round} at {}", unix_ms());
        let csv = c.d.path(&format!("edit-{round}.csv"));
        std::fs::write(
            &csv,
            format!(
                "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DIRECTORY NUMBER 1,LINE TEXT LABEL 1\n\
                 {},Cisco 8851,Cisco 8851 - Encrypted OAuth,{},{label}\n",
                edited.device,
                3000 + 2 * round + 1
            ),
        )
        .unwrap();
        let config = c.config();
        let started = Instant::now();
        let started_ms = unix_ms();
        let command = tokio::task::spawn_blocking(move || {
            let out = sipcfg(&config, &["import", "--update", csv.to_str().unwrap()]);
            (out, Instant::now())
        });
        let served = |r: &common::Resp| r.status == StatusCode::OK && r.text().contains(&label);
        let (e0, e1, e2) = tokio::join!(
            until_served(&edited, c.addr(0), served),
            until_served(&edited, c.addr(1), served),
            until_served(&edited, c.addr(2), served),
        );
        let (out, finished) = command.await.unwrap();
        let said = ok(&out);
        assert!(said.contains("1 updated"), "{said}");
        // When the edit was made: the change log's time of the device's last change (PostgreSQL's clock).
        let at_ms: i64 = c
            .sql(&format!("SELECT max(at_ms) FROM change_log WHERE kind = 'device' AND key = '{}'", edited.device))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("no change logged for {}: {e}", edited.device));
        let committed = started + Duration::from_millis((at_ms - started_ms).max(0) as u64);
        let mut line = format!(
            "cluster-measure: round {round}: edit by `sipcfg import --update` (command {:.0} ms, logged {} ms after \
             its start):",
            (finished - started).as_secs_f64() * 1000.0,
            at_ms - started_ms
        );
        for (n, seen) in [e0, e1, e2].into_iter().enumerate() {
            let seen = seen.unwrap_or_else(|| panic!("node {n}: the edit not served after 5 s"));
            edited_from_command[n].push(seen - started);
            edited_from_commit[n].push(seen.saturating_duration_since(committed));
            line.push_str(&format!(
                " node {n} after {:.0} ms ({:.0} ms from the commit);",
                (seen - started).as_secs_f64() * 1000.0,
                seen.saturating_duration_since(committed).as_secs_f64() * 1000.0
            ));
        }
        eprintln!("{line}");
    }
    let summary = |what: &str, per_node: &[Vec<Duration>]| {
        for (n, values) in per_node.iter().enumerate() {
            if values.is_empty() {
                continue;
            }
            let (min, median, max) = min_median_max(values);
            eprintln!(
                "cluster-measure: {what}, node {n} ({} samples): min {min:.0} ms, median {median:.0} ms, max {max:.0} ms",
                values.len()
            );
        }
    };
    summary("revocation on another node -> in force", &revoked);
    summary("device edit (import --update) -> served, from the command's start", &edited_from_command);
    summary("device edit (import --update) -> served, from its commit", &edited_from_commit);
    for (what, per_node) in
        [("revocation", &revoked), ("edit", &edited_from_command), ("edit (from commit)", &edited_from_commit)]
    {
        for (n, values) in per_node.iter().enumerate() {
            for v in values {
                assert!(*v < Duration::from_secs(2), "{what} took {v:?} to reach node {n}");
            }
        }
    }
    assert_eq!(Counters::get(&counters.retries), 0, "a phone had to retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_balancer_phones_given_two_nodes_fail_over_by_themselves() {
    const PHONES: usize = 40;
    const CYCLES: usize = 2;
    const REFRESHES: usize = 2;
    let _turn = turn().await;
    let mut c = Cluster::start(2, PHONES).await;
    let counters = Arc::new(Counters::default());
    // DHCP option 150 gives two addresses, in reversed order on half of the subnets.
    let (first, second) = (c.addr(0), c.addr(1));
    let phones: Vec<Phone> = (0..PHONES)
        .map(|i| {
            let order = if i % 2 == 0 { [first, second] } else { [second, first] };
            Phone::new(&device(i), &order, counters.clone())
        })
        .collect();
    let (mut phones, figures) = storm(&mut c, phones, CYCLES, REFRESHES, &counters, 0, || {}).await;
    report_storm("SIGKILL, two addresses per phone (option 150)", &figures);
    // The phones that had the killed node first went to the other one after a failed connection.
    assert!(figures.failovers > 0, "no phone failed over: {figures:?}");
    after_the_storm(&c, &mut phones).await;
}
