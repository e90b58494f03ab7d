//! The sessionlog examples, each a program of this crate (run from the
//! repository's root):
//!
//! - `cargo run -p sessionlog-examples --example quickstart`
//! - `cargo run -p sessionlog-examples --release --example owner_index -- [SESSIONS]`
//! - `cargo run -p sessionlog-examples --example axum_app --features tower-sessions -- --store sessions.db`
//! - `cargo run -p sessionlog-examples --example actix_app --features actix-session -- --store sessions.db --key-file cookie.key`
//!
//! The library itself holds nothing: a package needs one beside its
//! examples. The README's "Examples" section says what each one does.
