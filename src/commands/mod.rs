//! One module per operation a service or an operator runs against a
//! repository, as the binary's commands name them: [`snapshot`] takes one,
//! [`replicate`] ships every commit as it happens, [`restore`] brings a
//! point back, [`forget`] applies retention and [`prune`] deletes what no
//! snapshot needs, [`verify`] checks, [`stats`] counts, [`status`] says how
//! current the backups are, [`repair`] rebuilds the index or the snapshot
//! list from what is stored, and [`reset`] moves a database's replication
//! state aside. Each reaches stored objects only through
//! [`crate::repo::Repository`]; the concepts they share (restore points,
//! retention policies, file chunking, the operations log) are modules of
//! their own beside this one. The crate root re-exports each, so
//! `lifeboat::snapshot` and `lifeboat::commands::snapshot` are one module.

pub mod drill;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod replicate;
pub mod reset;
pub mod restore;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod verify;
