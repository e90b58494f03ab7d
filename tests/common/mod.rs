//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[macro_use]
pub mod conformance;
pub mod child;
pub mod servers;
