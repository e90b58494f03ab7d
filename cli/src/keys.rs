//! Encrypted stores: `--key-file` for the commands that read or write
//! session data, `rekey` and `keygen` (DESIGN.md §14.2).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sessionlog::{Encrypted, Keyring, LogStore};

use crate::{Failure, Outcome, open_existing};

/// The keyring of `--key-file`, if given.
pub fn load(key_file: Option<&Path>) -> Result<Option<Keyring>, Failure> {
    Ok(key_file.map(Keyring::from_file).transpose()?)
}

/// `store` seen through `keys`: records decrypt (plaintext ones, from
/// before the store was encrypted, read as they are), saves encrypt.
pub fn wrap<S>(store: S, keys: Keyring) -> Encrypted<S> {
    Encrypted::new(store, keys).accept_plaintext(true)
}

pub fn keygen(key_id: &str) -> Outcome {
    let line = zeroize::Zeroizing::new(Keyring::generate_line(key_id)?);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.as_str())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn rekey(path: &Path, key_file: &Path, retire_file: Option<&PathBuf>) -> Outcome {
    let mut keys = Keyring::from_file(key_file)?;
    if let Some(g) = retire_file {
        keys = keys.with_retired_keys(&Keyring::from_file(g)?)?;
    }
    let store: LogStore = open_existing(path)?;
    let enc = Encrypted::new(store, keys);
    let report = enc.rekey()?;
    // Superseded records under the old keys leave the file.
    enc.inner().compact()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rekey {}: {} sessions, {} re-encrypted under key {:?}, {} already under it, {} gone \
         meanwhile, {} left",
        path.display(),
        report.examined,
        report.rekeyed,
        enc.keyring().current_key_id(),
        report.current,
        report.gone,
        report.left
    )?;
    out.flush()?;
    match report.first_error {
        Some(e) if report.left > 0 => Err(format!(
            "{}: {} sessions are not under the current key: {e}",
            path.display(),
            report.left
        )
        .into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
