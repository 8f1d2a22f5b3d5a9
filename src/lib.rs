//! Lifeboat: backups of a self-hosted service's state. See docs/ARCHITECTURE.md
//! for the map of modules.

pub mod codec;
pub mod crashpoint;
pub mod duration;
pub mod error;
pub mod files;
pub mod fsutil;
pub mod id;
pub mod oplog;
pub mod progress;
pub mod repo;
pub mod restore;
pub mod snapshot;
pub mod sqlite;
pub mod storage;
pub mod treehash;

pub use error::{Error, ErrorKind, Result};
pub mod config;
pub mod forget;
pub mod pitr;
pub mod prune;
pub mod repair;
pub mod replicate;
pub mod reset;
pub mod retention;
pub mod stats;
pub mod verify;
