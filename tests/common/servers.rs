//! Test locations on the database servers: one private table or key prefix
//! per test (random suffix), dropped again when the location is dropped.
//! Every server URL comes from `postgres_url`, `mysql_url` or `redis_url`,
//! the first of which checks that the servers of the enabled features
//! answer (tests/common/server_check.rs: when one does not, the process
//! says how to start them, once, and every server test fails with one line
//! pointing to that). A server that answers but refuses the test (no `test`
//! database, say) fails that test with how to start the servers.

#![cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessionlog::ClockOffset;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
use super::conformance::{Backend, Config};

/// The server URL from `var`, or `default`.
pub fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// The test PostgreSQL's URL, after the servers' check.
pub fn postgres_url() -> String {
    require_servers("PostgreSQL");
    raw_postgres_url()
}

/// The test MariaDB's URL, after the servers' check.
pub fn mysql_url() -> String {
    require_servers("MariaDB/MySQL");
    raw_mysql_url()
}

/// The test Redis's URL, after the servers' check.
pub fn redis_url() -> String {
    require_servers("Redis");
    raw_redis_url()
}

fn raw_postgres_url() -> String {
    url(
        "SESSIONLOG_POSTGRES_URL",
        "postgres://postgres@127.0.0.1/test",
    )
}

fn raw_mysql_url() -> String {
    url("SESSIONLOG_MYSQL_URL", "mysql://root@127.0.0.1/test")
}

fn raw_redis_url() -> String {
    url("SESSIONLOG_REDIS_URL", "redis://127.0.0.1/")
}

/// Once per process, every server of the enabled features is checked;
/// when one is down the process says how to start them, and a test that
/// asks for that one (`name`) fails.
fn require_servers(name: &str) {
    use super::server_check::{Server, require};
    require(name, || {
        let mut needed = Vec::new();
        if cfg!(feature = "postgres") {
            needed.push(Server {
                name: "PostgreSQL",
                var: "SESSIONLOG_POSTGRES_URL",
                url: raw_postgres_url(),
                default_port: 5432,
            });
        }
        if cfg!(feature = "mysql") {
            needed.push(Server {
                name: "MariaDB/MySQL",
                var: "SESSIONLOG_MYSQL_URL",
                url: raw_mysql_url(),
                default_port: 3306,
            });
        }
        if cfg!(feature = "redis") {
            needed.push(Server {
                name: "Redis",
                var: "SESSIONLOG_REDIS_URL",
                url: raw_redis_url(),
                default_port: 6379,
            });
        }
        needed
    });
}

/// Fails the test: the server is needed and did not answer.
pub fn unreachable(what: &str, var: &str, err: &dyn std::fmt::Display) -> ! {
    panic!(
        "{what} is needed by these tests (feature on) but failed: {err}\n\
         Start the servers with `bash .ci/servers.sh` (see SERVERS.md), or point {var} at a \
         running server, or build without the feature."
    )
}

/// A name no other test run uses: `<stem>_<pid>_<time>_<n>`.
pub fn unique(stem: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{stem}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The shared clock offset of one location: set on first open so that the
/// server's clock reads the test clock's time, then moved by `advance`.
pub struct Clock {
    offset: ClockOffset,
    set: AtomicBool,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            offset: ClockOffset::new(),
            set: AtomicBool::new(false),
        }
    }

    pub fn for_open(&self, cfg: &Config) -> ClockOffset {
        if !self.set.swap(true, Ordering::SeqCst) {
            use sessionlog::Clock as _;
            self.offset.set_to(cfg.clock.now());
        }
        self.offset.clone()
    }

    pub fn advance(&self, cfg: &Config, d: Duration) {
        cfg.clock.advance(d);
        self.offset.advance(d);
    }

    /// Sets the offset again so that the server's clock reads the test
    /// clock's time now.
    pub fn hold(&self, cfg: &Config) {
        use sessionlog::Clock as _;
        self.offset.set_to(cfg.clock.now());
    }
}

#[cfg(feature = "postgres")]
#[allow(unused_imports)]
pub use self::postgres::{Postgres, pg_batch, pg_query_i64};
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sessionlog::PostgresStore;

    pub struct Postgres {
        pub table: String,
        clock: Clock,
    }

    impl Backend for Postgres {
        type Store = PostgresStore;
        const PERSISTENT: bool = true;
        fn new_location() -> Self {
            Postgres {
                table: unique("sl_test"),
                clock: Clock::new(),
            }
        }
        fn open(&self, cfg: &Config) -> PostgresStore {
            let mut b = PostgresStore::options(&postgres_url())
                .table(&self.table)
                .pool_size(8)
                .max_session_size(cfg.max_session_size)
                .clock_offset(self.clock.for_open(cfg));
            if let Some(idle) = cfg.max_idle {
                b = b.max_idle(idle);
            }
            if let Some(n) = cfg.max_sessions_per_owner {
                b = b.max_sessions_per_owner(n);
            }
            b.open()
                .unwrap_or_else(|e| unreachable("PostgreSQL", "SESSIONLOG_POSTGRES_URL", &e))
        }
        fn advance(&self, cfg: &Config, d: Duration) {
            self.clock.advance(cfg, d);
        }
        fn hold_clock(&self, cfg: &Config) {
            self.clock.hold(cfg);
        }
    }

    impl Drop for Postgres {
        fn drop(&mut self) {
            let _ = pg_batch(&format!("DROP TABLE IF EXISTS {}", self.table));
        }
    }

    /// The first column of the first row of `sql` (an integer), on the
    /// test server with a client of its own, within 10 s.
    pub fn pg_query_i64(sql: &str) -> Result<i64, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let (client, conn) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let row = client
                    .query_one(sql, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                row.try_get::<_, i64>(0).map_err(|e| e.to_string())
            })
            .await
            .map_err(|_| "timed out".to_owned())?
        })
    }

    /// Runs `sql` on the test server with a client of its own (the store
    /// offers no DDL), within 10 s.
    pub fn pg_batch(sql: &str) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let (client, conn) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                client.batch_execute(sql).await.map_err(|e| e.to_string())
            })
            .await
            .map_err(|_| "timed out".to_owned())?
        })
    }
}

#[cfg(feature = "mysql")]
pub use self::mysql::MySql;
#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use ::mysql::prelude::Queryable;
    use sessionlog::MySqlStore;

    pub struct MySql {
        pub table: String,
        clock: Clock,
    }

    impl Backend for MySql {
        type Store = MySqlStore;
        const PERSISTENT: bool = true;
        fn new_location() -> Self {
            MySql {
                table: unique("sl_test"),
                clock: Clock::new(),
            }
        }
        fn open(&self, cfg: &Config) -> MySqlStore {
            let mut b = MySqlStore::options(&mysql_url())
                .table(&self.table)
                .pool_size(8)
                .max_session_size(cfg.max_session_size)
                .clock_offset(self.clock.for_open(cfg));
            if let Some(idle) = cfg.max_idle {
                b = b.max_idle(idle);
            }
            if let Some(n) = cfg.max_sessions_per_owner {
                b = b.max_sessions_per_owner(n);
            }
            b.open()
                .unwrap_or_else(|e| unreachable("MariaDB/MySQL", "SESSIONLOG_MYSQL_URL", &e))
        }
        fn advance(&self, cfg: &Config, d: Duration) {
            self.clock.advance(cfg, d);
        }
        fn hold_clock(&self, cfg: &Config) {
            self.clock.hold(cfg);
        }
    }

    impl Drop for MySql {
        fn drop(&mut self) {
            if let Ok(mut c) =
                ::mysql::Conn::new(::mysql::Opts::from_url(&mysql_url()).expect("url"))
            {
                let _ = c.query_drop(format!("DROP TABLE IF EXISTS {}", self.table));
            }
        }
    }
}

#[cfg(feature = "redis")]
pub use self::redis::Redis;
#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use sessionlog::RedisStore;

    pub struct Redis {
        pub prefix: String,
        clock: Clock,
    }

    impl Backend for Redis {
        type Store = RedisStore;
        const PERSISTENT: bool = true;
        fn new_location() -> Self {
            Redis {
                prefix: unique("sl_test"),
                clock: Clock::new(),
            }
        }
        fn open(&self, cfg: &Config) -> RedisStore {
            let mut b = RedisStore::options(&redis_url())
                .key_prefix(&self.prefix)
                .pool_size(8)
                .max_session_size(cfg.max_session_size)
                .clock_offset(self.clock.for_open(cfg));
            if let Some(idle) = cfg.max_idle {
                b = b.max_idle(idle);
            }
            if let Some(n) = cfg.max_sessions_per_owner {
                b = b.max_sessions_per_owner(n);
            }
            b.open()
                .unwrap_or_else(|e| unreachable("Redis", "SESSIONLOG_REDIS_URL", &e))
        }
        fn advance(&self, cfg: &Config, d: Duration) {
            self.clock.advance(cfg, d);
        }
        fn hold_clock(&self, cfg: &Config) {
            self.clock.hold(cfg);
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let Ok(client) = ::redis::Client::open(redis_url()) else {
                return;
            };
            let Ok(mut c) = client.get_connection() else {
                return;
            };
            let pattern = format!("{{{}}}:*", self.prefix);
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut c)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: ::redis::RedisResult<()> = ::redis::cmd("DEL").arg(&keys).query(&mut c);
            }
        }
    }
}

/// A location that a child process can reopen by name.
pub trait Named: Backend {
    /// The table name or key prefix.
    fn name(&self) -> &str;
    /// Opens the store at `name` with default options (setup not called).
    fn open_named(name: &str) -> Self::Store;
}

#[cfg(feature = "postgres")]
impl Named for Postgres {
    fn name(&self) -> &str {
        &self.table
    }
    fn open_named(name: &str) -> sessionlog::PostgresStore {
        sessionlog::PostgresStore::options(&postgres_url())
            .table(name)
            .open()
            .unwrap_or_else(|e| unreachable("PostgreSQL", "SESSIONLOG_POSTGRES_URL", &e))
    }
}

#[cfg(feature = "mysql")]
impl Named for MySql {
    fn name(&self) -> &str {
        &self.table
    }
    fn open_named(name: &str) -> sessionlog::MySqlStore {
        sessionlog::MySqlStore::options(&mysql_url())
            .table(name)
            .open()
            .unwrap_or_else(|e| unreachable("MariaDB/MySQL", "SESSIONLOG_MYSQL_URL", &e))
    }
}

#[cfg(feature = "redis")]
impl Named for Redis {
    fn name(&self) -> &str {
        &self.prefix
    }
    fn open_named(name: &str) -> sessionlog::RedisStore {
        sessionlog::RedisStore::options(&redis_url())
            .key_prefix(name)
            .open()
            .unwrap_or_else(|e| unreachable("Redis", "SESSIONLOG_REDIS_URL", &e))
    }
}

/// A TCP proxy on 127.0.0.1 in front of a real server that can be told to
/// stall: while stalled it accepts connections and reads what either side
/// sends, but forwards nothing, like a hung server or a black-holed route.
/// Dropping it closes every connection it carries.
pub struct Proxy {
    port: u16,
    shared: std::sync::Arc<ProxyShared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

pub struct ProxyShared {
    open: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
    stop: AtomicBool,
    conns: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl ProxyShared {
    /// Waits until data may pass; false when the proxy is stopping.
    fn pass(&self) -> bool {
        let mut open = self.open.lock().expect("gate");
        while !*open && !self.stop.load(Ordering::SeqCst) {
            open = self.changed.wait(open).expect("gate");
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

impl Proxy {
    /// A proxy to `upstream`, passing data from the start.
    pub fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(ProxyShared {
            open: std::sync::Mutex::new(true),
            changed: std::sync::Condvar::new(),
            stop: AtomicBool::new(false),
            conns: std::sync::Mutex::new(Vec::new()),
        });
        let sh = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                {
                    let mut conns = sh.conns.lock().expect("conns");
                    for s in [&client, &server] {
                        if let Ok(c) = s.try_clone() {
                            conns.push(c);
                        }
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let sh = Arc::clone(&sh);
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || !sh.pass() || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, nothing passes in either direction.
    pub fn stall(&self) {
        *self.shared.open.lock().expect("gate") = false;
    }

    /// Data passes again (held data first).
    pub fn resume(&self) {
        *self.shared.open.lock().expect("gate") = true;
        self.shared.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for c in self.shared.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// `url` (`scheme://[user@]host[:port]/rest`) split into the upstream
/// address and the same URL pointed at 127.0.0.1:`port` instead.
pub fn upstream_of(url: &str, default_port: u16) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let (_, rest) = url.split_once("://").expect("a URL");
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    hostport
        .to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("an address")
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
pub fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{user}127.0.0.1:{port}{tail}")
}

/// Runs `f` on a thread of its own and waits at most `limit` for it: an
/// outer bound that keeps a hanging call from hanging the test.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// Threads of this process now.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// A test CA and a server certificate it signed for `localhost` and
/// 127.0.0.1 (EC P-256, valid 2 days), made with the `openssl` command in
/// `dir`. Files: `ca.pem`, `server.pem`, `server.key`.
#[cfg(any(feature = "postgres-tls", feature = "mysql-tls", feature = "redis-tls"))]
pub fn make_certs(dir: &std::path::Path, ca_name: &str) {
    use std::process::Command;
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("the openssl command is needed for the TLS tests: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subj = format!("/CN={ca_name}");
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subj,
    ]);
    run(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&a);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// A free TCP port on 127.0.0.1 (bound and released: a server started on
/// it right after may still lose a race, which then fails its start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A server process this test started; killed and reaped on drop, so it
/// never outlives the test, even when the test fails.
pub struct ChildServer(pub std::process::Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it returns `Ok` or `limit` passes (then its last error).
pub fn poll<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
