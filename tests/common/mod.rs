//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[macro_use]
pub mod conformance;
pub mod child;
pub mod disk;
pub mod servers;
pub mod web_backends;

use sessionlog::SessionId;

/// A session id from a string the test knows to be valid.
pub fn id(s: &str) -> SessionId {
    SessionId::new(s).expect("valid id")
}
