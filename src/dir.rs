//! `DirStore`: one file per session in a directory. (Work in progress.)
#![allow(missing_docs)]

pub struct DirStore;
pub struct DirOptions;
