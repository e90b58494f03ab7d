//! sessionlog's server-backed stores (`PostgresStore`, `MySqlStore`,
//! `RedisStore`) on the local servers, through the same `SessionStore`
//! adapter as `LogStore`: what moving from a file to a server costs.
//!
//! Each run uses its own table or key prefix and removes it afterwards.
//! Durability is each server's default, whatever the phase: PostgreSQL and
//! MariaDB flush their log at every commit, Redis here keeps nothing on
//! disk. URLs: `SESSIONLOG_POSTGRES_URL`, `SESSIONLOG_MYSQL_URL`,
//! `SESSIONLOG_REDIS_URL` (defaults: the local servers).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sessionlog::{MySqlStore, PostgresStore, RedisStore, SessionStore};

use super::sessionlog::StoreEngine;
use super::{Engine, Mode, Result};

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// A table or key prefix no other run uses.
fn unique(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{base}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Wraps a store and runs `cleanup` when the engine is dropped.
struct Cleaned<S: SessionStore> {
    inner: StoreEngine<S>,
    cleanup: Box<dyn Fn() + Send + Sync>,
}

impl<S: SessionStore> Drop for Cleaned<S> {
    fn drop(&mut self) {
        (self.cleanup)();
    }
}

impl<S: SessionStore> Engine for Cleaned<S> {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        self.inner.save(id, data)
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        self.inner.load(id)
    }
    fn touch(&self, id: &str) -> Result<bool> {
        self.inner.touch(id)
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.inner.delete(id)
    }
    fn cleanup(&self) -> Result<()> {
        (self.cleanup)();
        Ok(())
    }
}

fn drop_table(program: &'static str, args: Vec<String>) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || {
        // Best effort: a leftover table in the test database is harmless.
        let _ = Command::new(program).args(&args).output();
    })
}

pub fn open_postgres(_dir: &Path, _mode: Mode) -> Result<Box<dyn Engine>> {
    let table = unique("peers");
    let store = PostgresStore::options(&url(
        "SESSIONLOG_POSTGRES_URL",
        "postgres://postgres@127.0.0.1/test",
    ))
    .table(&table)
    .pool_size(4)
    .open()?;
    store.setup()?;
    let sql = format!("DROP TABLE IF EXISTS {table}");
    Ok(Box::new(Cleaned {
        inner: StoreEngine::new(store),
        cleanup: drop_table(
            "psql",
            vec![
                "-h".into(),
                "127.0.0.1".into(),
                "-U".into(),
                "postgres".into(),
                "-d".into(),
                "test".into(),
                "-c".into(),
                sql,
            ],
        ),
    }))
}

pub fn open_mysql(_dir: &Path, _mode: Mode) -> Result<Box<dyn Engine>> {
    let table = unique("peers");
    let store = MySqlStore::options(&url("SESSIONLOG_MYSQL_URL", "mysql://root@127.0.0.1/test"))
        .table(&table)
        .pool_size(4)
        .open()?;
    store.setup()?;
    let sql = format!("DROP TABLE IF EXISTS {table}");
    Ok(Box::new(Cleaned {
        inner: StoreEngine::new(store),
        cleanup: drop_table(
            "mariadb",
            vec![
                "-uroot".into(),
                "-h127.0.0.1".into(),
                "test".into(),
                "-e".into(),
                sql,
            ],
        ),
    }))
}

pub fn open_redis(_dir: &Path, _mode: Mode) -> Result<Box<dyn Engine>> {
    let prefix = unique("peers");
    let store = RedisStore::options(&url("SESSIONLOG_REDIS_URL", "redis://127.0.0.1/"))
        .key_prefix(&prefix)
        .pool_size(4)
        .open()?;
    store.setup()?;
    let cleanup_store = RedisStore::options(&url("SESSIONLOG_REDIS_URL", "redis://127.0.0.1/"))
        .key_prefix(&prefix)
        .pool_size(1)
        .open()?;
    Ok(Box::new(Cleaned {
        inner: StoreEngine::new(store),
        cleanup: Box::new(move || {
            // Every session is idle for at least zero seconds: removes all.
            let _ = cleanup_store.delete_old_sessions(Duration::ZERO);
        }),
    }))
}
