//! Shared helpers for the integration tests: a scratch environment that runs
//! the real `lifeboat` binary with every path (repository, HOME, XDG dirs,
//! working directory) inside a temporary directory; SQLite fixtures; tree
//! descriptions for "byte-identical" and "untouched" comparisons; and child
//! processes made by re-executing the test binary itself.

#![allow(dead_code, unused_imports)]

pub mod faultproxy;
pub mod s3;

mod children;
mod crash;
mod env;
mod replication;
mod sqlite;
mod tree;

pub use children::*;
pub use crash::*;
pub use env::*;
pub use replication::*;
pub use sqlite::*;
pub use tree::*;
