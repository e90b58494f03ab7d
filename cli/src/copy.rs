//! `copy FROM TO`: every live session of one store into another, any two
//! backends, with `sessionlog::copy_sessions`.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::ProgressBar;
use sessionlog::{CopyOptions, DirStore, SessionStore, copy_sessions};

use crate::{Failure, Outcome, open_existing, store_options};

/// Which end of the copy a store is: the source must exist already.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    From,
    To,
}

/// The names inside a server that `--table` and `--key-prefix` choose.
pub struct Names<'a> {
    /// The table of a PostgreSQL or MySQL end.
    pub table: Option<&'a str>,
    /// The key prefix of a Redis end.
    pub key_prefix: Option<&'a str>,
    /// The key prefix of a tower-sessions Redis source (default none).
    pub tower_prefix: Option<&'a str>,
    /// `SCHEMA.TABLE` of a tower-sessions PostgreSQL source (default
    /// `tower_sessions.session`).
    pub tower_table: Option<&'a str>,
}

/// Copies from tower-sessions' published Redis or PostgreSQL store (the
/// URL's scheme without `tower-sessions-`) into `to`.
fn copy_from_tower(
    backend: &str,
    rest: &str,
    names: &Names<'_>,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<sessionlog::CopyReport, Failure> {
    let url = format!("{backend}://{rest}");
    match backend {
        "redis" | "rediss" => tower_redis(&url, names.tower_prefix.unwrap_or(""), to, options),
        "postgres" | "postgresql" => {
            let (schema, table) = names
                .tower_table
                .unwrap_or("tower_sessions.session")
                .split_once('.')
                .ok_or("--tower-table: SCHEMA.TABLE")?;
            tower_postgres(&url, schema, table, to, options)
        }
        other => Err(format!(
            "tower-sessions-{other}://: only tower-sessions-redis:// and \
             tower-sessions-postgres:// stores can be copied from"
        )
        .into()),
    }
}

#[cfg(all(feature = "tower-sessions", feature = "redis"))]
fn tower_redis(
    url: &str,
    prefix: &str,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<sessionlog::CopyReport, Failure> {
    Ok(sessionlog::web::tower_import::copy_from_tower_redis(
        url, prefix, to, options,
    )?)
}
#[cfg(not(all(feature = "tower-sessions", feature = "redis")))]
fn tower_redis(
    _: &str,
    _: &str,
    _: &dyn SessionStore,
    _: &mut CopyOptions<'_>,
) -> Result<sessionlog::CopyReport, Failure> {
    Err(without("tower-sessions,redis"))
}

#[cfg(all(feature = "tower-sessions", feature = "postgres"))]
fn tower_postgres(
    url: &str,
    schema: &str,
    table: &str,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<sessionlog::CopyReport, Failure> {
    Ok(sessionlog::web::tower_import::copy_from_tower_postgres(
        url, schema, table, to, options,
    )?)
}
#[cfg(not(all(feature = "tower-sessions", feature = "postgres")))]
fn tower_postgres(
    _: &str,
    _: &str,
    _: &str,
    _: &dyn SessionStore,
    _: &mut CopyOptions<'_>,
) -> Result<sessionlog::CopyReport, Failure> {
    Err(without("tower-sessions,postgres"))
}

pub fn copy(from: &str, to: &str, names: &Names<'_>, overwrite: bool) -> Outcome {
    let either = |schemes: &[&str]| {
        [from, to].iter().any(|s| {
            s.split_once("://")
                .is_some_and(|(x, _)| schemes.contains(&x))
        })
    };
    if names.table.is_some() && !either(&["postgres", "postgresql", "mysql"]) {
        return Err(
            "--table names the table of a postgres:// or mysql:// store; neither is one".into(),
        );
    }
    if names.key_prefix.is_some() && !either(&["redis", "rediss"]) {
        return Err("--key-prefix names the keys of a redis:// store; neither is one".into());
    }
    let tower = from.split_once("://").and_then(|(scheme, rest)| {
        let backend = scheme.strip_prefix("tower-sessions-")?;
        Some((backend, rest))
    });
    if tower.is_none() && (names.tower_prefix.is_some() || names.tower_table.is_some()) {
        return Err(
            "--tower-prefix and --tower-table name the source of a tower-sessions-redis:// \
                    or tower-sessions-postgres:// copy; FROM is neither"
                .into(),
        );
    }
    if to.starts_with("tower-sessions-") {
        return Err(
            "a tower-sessions-*:// store can only be copied from (the destination of a \
                    tower-sessions app is TowerStore over any sessionlog store)"
                .into(),
        );
    }
    let src = match tower {
        Some(_) => None,
        None => Some(open_spec(from, End::From, names)?),
    };
    let dst = open_spec(to, End::To, names)?;
    let bar = counter("copying");
    let mut options = CopyOptions::new()
        .overwrite(overwrite)
        .progress(|r| bar.set_position(r.copied + r.skipped + r.expired));
    let report = match (tower, &src) {
        (Some((backend, rest)), _) => copy_from_tower(backend, rest, names, &*dst, &mut options)?,
        (None, Some(src)) => copy_sessions(&**src, &*dst, &mut options)?,
        (None, None) => unreachable!("a source is opened unless it is a tower-sessions one"),
    };
    drop(options);
    bar.finish_and_clear();
    writeln!(
        io::stdout().lock(),
        "copied {} sessions; skipped {} (already live at the destination{}); {} expired",
        report.copied,
        report.skipped,
        if overwrite { "" } else { ", kept" },
        report.expired
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A running count on stderr when it is a terminal (the source's size is
/// not known up front for every backend), hidden otherwise.
fn counter(what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} {human_pos} sessions ({per_sec}) {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Opens a store named on the command line: `postgres://` or
/// `postgresql://`, `mysql://`, `redis://` or `rediss://` URLs (each
/// needing its feature), `dir:PATH` for a DirStore, anything else a
/// LogStore file. A destination is created (tables, directory, file) if
/// it does not exist.
fn open_spec(spec: &str, end: End, names: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    let scheme = spec.split_once("://").map(|(s, _)| s);
    let store: Box<dyn SessionStore> = match scheme {
        Some("postgres" | "postgresql") => open_postgres(spec, names)?,
        Some("mysql") => open_mysql(spec, names)?,
        Some("redis" | "rediss") => open_redis(spec, names)?,
        _ => {
            if let Some(dir) = spec.strip_prefix("dir:") {
                if end == End::From && !Path::new(dir).is_dir() {
                    return Err(format!("{dir}: no such directory store").into());
                }
                Box::new(DirStore::open(dir)?)
            } else if end == End::From {
                Box::new(open_existing(Path::new(spec))?)
            } else {
                Box::new(store_options().open(spec)?)
            }
        }
    };
    if end == End::To {
        store.setup()?;
    }
    Ok(store)
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, names: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    let mut options = sessionlog::PostgresStore::options(url);
    if let Some(table) = names.table {
        options = options.table(table);
    }
    Ok(Box::new(options.open()?))
}
#[cfg(not(feature = "postgres"))]
fn open_postgres(_: &str, _: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    Err(without("postgres"))
}

#[cfg(feature = "mysql")]
fn open_mysql(url: &str, names: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    let mut options = sessionlog::MySqlStore::options(url);
    if let Some(table) = names.table {
        options = options.table(table);
    }
    Ok(Box::new(options.open()?))
}
#[cfg(not(feature = "mysql"))]
fn open_mysql(_: &str, _: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    Err(without("mysql"))
}

#[cfg(feature = "redis")]
fn open_redis(url: &str, names: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    let mut options = sessionlog::RedisStore::options(url);
    if let Some(prefix) = names.key_prefix {
        options = options.key_prefix(prefix);
    }
    Ok(Box::new(options.open()?))
}
#[cfg(not(feature = "redis"))]
fn open_redis(_: &str, _: &Names<'_>) -> Result<Box<dyn SessionStore>, Failure> {
    Err(without("redis"))
}

/// The error for a URL whose backend this binary was built without.
#[cfg(not(all(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "tower-sessions"
)))]
fn without(feature: &str) -> Failure {
    format!(
        "this sessionlog was built without the `{feature}` feature \
         (cargo install sessionlog-cli --features {feature})"
    )
    .into()
}
