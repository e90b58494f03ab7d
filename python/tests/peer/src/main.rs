//! A Rust process that keeps a `LogStore` open and answers one command a
//! line on stdin, so the Python tests can check that a Rust program and a
//! Python program sharing one store see each other's sessions.
//!
//! `sessionlog-peer STORE [--hashed]`: with `--hashed`, the store is
//! opened through `HashedIds`.
//!
//! Commands: `put ID HEX`, `get ID`, `del ID`, `list`. Replies, one line
//! each: `ok VERSION`, `found VERSION HEX`, `none`, `deleted BOOL`,
//! `ids ID,ID,...`, or `error MESSAGE`.

use std::io::{self, BufRead, Write};

use sessionlog::{HashedIds, LogStore, Session, SessionId, SessionStore};

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err("not hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn answer(store: &dyn SessionStore, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let mut id = || -> Result<SessionId, String> {
        SessionId::new(words.next().ok_or("missing id")?).map_err(|e| e.to_string())
    };
    match cmd {
        "put" => {
            let sid = id()?;
            let data = from_hex(line.split_whitespace().nth(2).unwrap_or(""))?;
            let mut s = Session::new(sid, data);
            store.save_session(&mut s).map_err(|e| e.to_string())?;
            Ok(format!("ok {}", s.version()))
        }
        "get" => match store.load_session(&id()?).map_err(|e| e.to_string())? {
            Some(s) => Ok(format!("found {} {}", s.version(), to_hex(&s.data))),
            None => Ok("none".into()),
        },
        "del" => {
            let gone = store.delete_session(&id()?).map_err(|e| e.to_string())?;
            Ok(format!("deleted {gone}"))
        }
        "list" => {
            let mut ids = Vec::new();
            for s in store.iter_sessions().map_err(|e| e.to_string())? {
                ids.push(s.map_err(|e| e.to_string())?.id.as_str().to_owned());
            }
            ids.sort();
            Ok(format!("ids {}", ids.join(",")))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, hashed) = match args.as_slice() {
        [path] => (path, false),
        [path, flag] if flag == "--hashed" => (path, true),
        _ => {
            eprintln!("usage: sessionlog-peer STORE [--hashed]");
            std::process::exit(2);
        }
    };
    let store: Box<dyn SessionStore> = match LogStore::open(path) {
        Ok(s) if hashed => Box::new(HashedIds::new(s)),
        Ok(s) => Box::new(s),
        Err(e) => {
            eprintln!("sessionlog-peer: {e}");
            std::process::exit(1);
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = answer(store.as_ref(), &line).unwrap_or_else(|e| format!("error {e}"));
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
