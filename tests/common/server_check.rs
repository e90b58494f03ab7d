//! One check of the database servers per test process, made by the first
//! test that asks for a server's URL, before it touches a server: when a
//! server the tests need does not accept a connection, the process writes
//! which one and how to start the servers, once, and every test of that
//! server then fails with one short line pointing to it. `cargo test
//! --all-features` without the servers so fails (never passes) with one
//! explanation rather than a connection error in every server test.
//!
//! A failing test panics rather than ending the process: other tests of
//! the binary may have started processes (the example apps) and made
//! tables, which only their destructors stop and drop.
//!
//! Shared by the library's tests (tests/common/servers.rs) and the
//! command's (cli/tests/common/server_check.rs is a link to this file).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// A server some test of this process needs.
pub struct Server {
    /// Its name for people: "PostgreSQL".
    pub name: &'static str,
    /// The variable that overrides its URL.
    pub var: &'static str,
    /// Its URL (`scheme://[user[:password]@]host[:port]/...`).
    pub url: String,
    /// Its port when the URL names none.
    pub default_port: u16,
}

/// Checks, once per process, that each of `servers()` accepts a TCP
/// connection. When one does not, the first call writes what failed and
/// how to start the servers on stderr (past libtest's capture, which holds
/// only the `print!` family, so that it shows once, at once); then this
/// call and every later one for a server that is down (`name`) fail the
/// calling test with one line. Does nothing in a destructor run by a
/// panic (a second panic would abort).
pub fn require(name: &str, servers: impl FnOnce() -> Vec<Server>) {
    static DOWN: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    if std::thread::panicking() {
        return;
    }
    let down = DOWN.get_or_init(|| {
        let down: Vec<(&'static str, String)> = servers()
            .iter()
            .filter_map(|s| {
                connect(&s.url, s.default_port)
                    .err()
                    .map(|why| (s.name, format!("{} ({}): {why}", s.name, s.var)))
            })
            .collect();
        if down.is_empty() {
            return down;
        }
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n\
             error: the database servers these tests need are not all running:\n  \
             {}\n\
             Start them with `bash .ci/servers.sh` (as root it installs any that is missing; \
             SERVERS.md says how to run them by hand), or point the variable at a running \
             server. Plain `cargo test` (no server features) runs every test that needs no \
             server. Every test of this binary ({binary}) that needs one of them fails.\n",
            down.iter()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        down
    });
    if let Some((_, why)) = down.iter().find(|(n, _)| *n == name) {
        panic!("not running: {why}; see `error: the database servers` above");
    }
}

/// A TCP connection to `url`'s host and port (within 5 s an address), or
/// why none was made. Names the address, never the URL (which may hold a
/// password).
fn connect(url: &str, default_port: u16) -> Result<(), String> {
    // A URL of another form (PostgreSQL's `host=... dbname=...`, a Unix
    // socket: no host) is left to the tests' own connections.
    let Some((_, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.is_empty() || hostport.starts_with(':') {
        return Ok(());
    }
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    let addrs: Vec<_> = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: cannot resolve: {e}"))?
        .collect();
    let mut last = format!("{hostport}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}
