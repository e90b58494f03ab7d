//! `Keyring`: the keys an [`Encrypted`](crate::Encrypted) store encrypts
//! with (the current one) and decrypts with (it and the retired ones), and
//! the key file format (DESIGN.md §14.2).

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::envelope::{MAX_KEY_ID_LEN, valid_key_id};
use crate::error::{Error, Result};
use crate::trust;

/// One named key (zeroed when dropped). The AES keys derived from it
/// (`envelope::subkey`) live in ring's key objects, which are not.
#[derive(Clone)]
pub(crate) struct Key {
    pub id: String,
    pub key: Zeroizing<[u8; 32]>,
}

/// The keys of an [`Encrypted`](crate::Encrypted) store: one current key,
/// which encrypts every save, and any number of retired keys, which only
/// decrypt records written before a rotation. Each key is 256 bits and
/// named by a key id (1 to 32 characters of `A-Z a-z 0-9 . _ -`) that
/// every record names, so that a record under a key the keyring lacks is
/// reported by that key id.
///
/// `Debug` shows the key ids, never a key.
///
/// ```
/// use sessionlog::Keyring;
/// # fn main() -> sessionlog::Result<()> {
/// let keys = Keyring::new("2026-12", [7; 32])?.with_retired("2026-06", [9; 32])?;
/// assert_eq!(keys.current_key_id(), "2026-12");
/// assert_eq!(format!("{keys:?}"), r#"Keyring { current: "2026-12", retired: ["2026-06"] }"#);
/// # Ok(()) }
/// ```
///
/// # Key files and variables
///
/// [`Keyring::from_file`] and [`Keyring::from_env`] read one key a line
/// as `KEY_ID:BASE64`, the base64 (standard alphabet, padding optional)
/// of the 32 key bytes; the first line is the current key, the others are
/// retired. Blank lines and lines starting with `#` are skipped; in a
/// variable, entries may also be separated by spaces or commas.
/// `sessionlog keygen KEY_ID` prints a new line.
#[derive(Clone)]
pub struct Keyring {
    /// The current key first.
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.keys[0].id)
            .field(
                "retired",
                &self.keys[1..].iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn bad(source: &str, reason: impl Into<String>) -> Error {
    Error::BadKeys {
        source_name: source.to_owned(),
        reason: reason.into(),
    }
}

fn check_key_id(source: &str, key_id: &str) -> Result<()> {
    if valid_key_id(key_id) {
        Ok(())
    } else {
        Err(bad(
            source,
            format!(
                "key id {key_id:?} is not 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 . _ -"
            ),
        ))
    }
}

impl Keyring {
    /// A keyring whose current key is `key`, named `key_id`.
    /// [`Error::BadKeys`] if the key id is malformed.
    pub fn new(key_id: &str, key: [u8; 32]) -> Result<Keyring> {
        let key = Zeroizing::new(key);
        check_key_id("Keyring::new", key_id)?;
        Ok(Keyring {
            keys: vec![Key {
                id: key_id.to_owned(),
                key,
            }],
        })
    }

    /// Adds a retired key: it decrypts records written under it, and never
    /// encrypts. [`Error::BadKeys`] if the key id is malformed or already
    /// in the keyring.
    pub fn with_retired(self, key_id: &str, key: [u8; 32]) -> Result<Keyring> {
        let key = Zeroizing::new(key);
        self.with_key("Keyring::with_retired", key_id, &key)
    }

    /// Adds every key of `other` (its current one too) as retired keys.
    /// [`Error::BadKeys`] if a key id is in both.
    pub fn with_retired_keys(mut self, other: &Keyring) -> Result<Keyring> {
        for k in &other.keys {
            if self.find(&k.id).is_some() {
                return Err(bad(
                    "Keyring::with_retired_keys",
                    format!("key id {:?} is in both keyrings", k.id),
                ));
            }
            self.keys.push(k.clone());
        }
        Ok(self)
    }

    fn with_key(mut self, source: &str, key_id: &str, key: &[u8; 32]) -> Result<Keyring> {
        check_key_id(source, key_id)?;
        if self.find(key_id).is_some() {
            return Err(bad(source, format!("key id {key_id:?} appears twice")));
        }
        self.keys.push(Key {
            id: key_id.to_owned(),
            key: Zeroizing::new(*key),
        });
        Ok(self)
    }

    /// The id of the key every save encrypts with.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The ids of every key, the current one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    pub(crate) fn current(&self) -> &Key {
        &self.keys[0]
    }

    fn find(&self, key_id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == key_id)
    }

    /// The position of the key named `key_id` (0: the current key).
    pub(crate) fn position(&self, key_id: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.id == key_id)
    }

    /// The key at `position`.
    pub(crate) fn at(&self, position: usize) -> Option<&Key> {
        self.keys.get(position)
    }

    /// Reads a key file (see [the type's documentation](Keyring)). The
    /// file must be what the store's own files must be: a regular file,
    /// not a symbolic link, with one link, owned by this user (or, for
    /// root, by anyone), that no other user can read or write (mode 0600
    /// or stricter); [`Error::Unsafe`] otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Keyring> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let path = path.as_ref();
        // O_NONBLOCK: a FIFO in the key file's place is refused below
        // rather than waited on (reads of a regular file ignore it).
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    trust::refusal(path, "a symbolic link where a key file was expected")
                } else {
                    Error::io(path, "open key file", e)
                }
            })?;
        let owner = if trust::euid() == 0 {
            file.metadata()
                .map_err(|e| Error::io(path, "stat key file", e))?
                .uid()
        } else {
            trust::euid()
        };
        trust::check_file(path, &file, owner)?;
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text)
            .map_err(|e| Error::io(path, "read key file", e))?;
        Keyring::parse(&path.display().to_string(), &text, false)
    }

    /// Reads the keys from the environment variable `name` (see [the
    /// type's documentation](Keyring)). [`Error::BadKeys`] if it is unset.
    pub fn from_env(name: &str) -> Result<Keyring> {
        let source = format!("environment variable {name}");
        let value =
            Zeroizing::new(std::env::var(name).map_err(|_| bad(&source, "not set, or not UTF-8"))?);
        Keyring::parse(&source, &value, true)
    }

    /// Reads the keys from `entries`, each one `KEY_ID:BASE64` as a line
    /// of a key file, the first the current key (the Python binding's
    /// `encryption_keys=[...]`). `source` names them in errors.
    /// [`Error::BadKeys`] if there is none, or an entry is malformed or
    /// holds a line break.
    pub fn from_entries<'a>(
        source: &str,
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Keyring> {
        let mut text = Zeroizing::new(String::new());
        for (n, entry) in entries.into_iter().enumerate() {
            if entry.contains(['\n', '\r']) {
                return Err(bad(
                    &format!("{source}, line {}", n + 1),
                    "an entry holds a line break",
                ));
            }
            text.push_str(entry);
            text.push('\n');
        }
        Keyring::parse(source, &text, false)
    }

    /// Parses the key file format; `lenient`: entries may also be
    /// separated by spaces and commas (a variable has one line).
    fn parse(source: &str, text: &str, lenient: bool) -> Result<Keyring> {
        let mut ring: Option<Keyring> = None;
        let entries = text.lines().enumerate().flat_map(|(n, line)| {
            let line = line.trim();
            let parts: Vec<&str> = if line.is_empty() || line.starts_with('#') {
                Vec::new()
            } else if lenient {
                line.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .collect()
            } else {
                vec![line]
            };
            parts.into_iter().map(move |p| (n + 1, p))
        });
        for (line_no, entry) in entries {
            let at = format!("{source}, line {line_no}");
            let (key_id, b64) = entry
                .split_once(':')
                .ok_or_else(|| bad(&at, "expected KEY_ID:BASE64_KEY"))?;
            check_key_id(&at, key_id)?;
            let raw = Zeroizing::new(
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b64.trim_end_matches('='))
                    .map_err(|_| bad(&at, format!("the key of {key_id:?} is not base64")))?,
            );
            let key: Zeroizing<[u8; 32]> =
                Zeroizing::new(raw.as_slice().try_into().map_err(|_| {
                    bad(
                        &at,
                        format!(
                            "the key of {key_id:?} is {} bytes; keys are 32 bytes (256 bits)",
                            raw.len()
                        ),
                    )
                })?);
            ring = Some(match ring {
                None => Keyring::new(key_id, *key).map_err(|_| bad(&at, "bad key id"))?,
                Some(r) => r.with_key(&at, key_id, &key)?,
            });
        }
        ring.ok_or_else(|| bad(source, "no key: expected lines of KEY_ID:BASE64_KEY"))
    }

    /// A new random 256-bit key as a key file line, `KEY_ID:BASE64`.
    pub fn generate_line(key_id: &str) -> Result<String> {
        check_key_id("Keyring::generate_line", key_id)?;
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).map_err(Error::random)?;
        Ok(format!(
            "{key_id}:{}",
            base64::engine::general_purpose::STANDARD.encode(&key[..])
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let a = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode([2u8; 32]);
        let text = format!("# keys\n\nnew:{a}\nold:{b}\n");
        let ring = Keyring::parse("f", &text, false).expect("parses");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["new", "old"]);
        let ring = Keyring::parse("v", &format!("new:{a}, old:{b}"), true).expect("parses");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["new", "old"]);
    }

    #[test]
    fn entries_parse_as_lines() {
        let a = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let b = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let (ea, eb) = (format!("new:{a}"), format!("old:{b}"));
        let ring = Keyring::from_entries("keys", [ea.as_str(), eb.as_str()]).expect("parses");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["new", "old"]);
        let joined = format!("{ea}\n{eb}");
        let err = Keyring::from_entries("keys", [joined.as_str()]).expect_err("line break");
        assert!(matches!(err, Error::BadKeys { .. }), "{err}");
        assert!(!err.to_string().contains(&a), "{err} shows the key");
        let err = Keyring::from_entries("keys", []).expect_err("empty");
        assert!(err.to_string().contains("no key"), "{err}");
    }

    #[test]
    fn bad_key_files_are_named_without_the_key() {
        let short = base64::engine::general_purpose::STANDARD.encode([3u8; 16]);
        let cases = [
            (String::new(), "no key"),
            ("k1".to_owned(), "KEY_ID:BASE64_KEY"),
            (format!("bad id:{short}"), "key id"),
            (format!("k1:{short}"), "16 bytes"),
            ("k1:!!!".to_owned(), "not base64"),
            (
                format!(
                    "k1:{}\nk1:{}",
                    base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
                    base64::engine::general_purpose::STANDARD.encode([1u8; 32])
                ),
                "twice",
            ),
        ];
        for (text, want) in cases {
            let err = Keyring::parse("keys.txt", &text, false).expect_err(&text);
            let msg = err.to_string();
            assert!(matches!(err, Error::BadKeys { .. }), "{msg}");
            assert!(msg.contains(want), "{msg} lacks {want}");
            assert!(!msg.contains(&short), "{msg} shows the key");
        }
    }
}
