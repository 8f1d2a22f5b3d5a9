//! A small Rust service that embeds Lifeboat: it keeps its state in a
//! SQLite database, creates a repository beside it, takes a snapshot on
//! demand, replicates every commit from a background thread while it
//! writes, then restores its newest commit into a fresh file and checks
//! that nothing is missing. The repository creation, the snapshot and the
//! restore each leave an operations log record, as the `lifeboat` command
//! does. Exits 0 when the restored copy holds every row and the records
//! are there.
//!
//! ```sh
//! cargo run --example embed
//! ```

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lifeboat::progress::Silent;
use lifeboat::repo::manifest::SnapshotKind;
use lifeboat::repo::{RepoLocation, Repository};
use lifeboat::restore::{RestoreOptions, Selection, Target};
use lifeboat::snapshot::{SnapshotOptions, SourceKind, SourceSpec};

const ROWS: i64 = 500;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A crate that depends on Lifeboat builds SQLite without sqlite_dbpage
    // (scripts/check-dependent-build runs this file as such a crate), and
    // captures then read WAL pages from the log itself.
    let with = if lifeboat::sqlite::dbpage_compiled_in() {
        "with"
    } else {
        "without"
    };
    println!("SQLite {with} sqlite_dbpage");
    let home = tempfile::tempdir()?;
    let db = home.path().join("service.db");
    let service = open_service(&db)?;

    // The repository: a local directory here; `RepoLocation::parse` takes
    // an `s3://bucket/prefix` URL the same way.
    let location = RepoLocation::local(home.path().join("backups"));
    // `oplog::run` records each operation in the repository's operations
    // log (`lifeboat log` lists them), success or failure.
    lifeboat::oplog::run("init", &location, Repository::init)?;

    // A snapshot on demand (before a migration, say), under the writer lock.
    let sources = [SourceSpec {
        name: "service.db".into(),
        path: db.clone(),
        kind: SourceKind::Sqlite {
            schema_query: "PRAGMA user_version".into(),
        },
    }];
    let options = SnapshotOptions {
        kind: SnapshotKind::Full,
        tags: vec!["on-demand".into()],
        replication: None,
        time: None,
    };
    let (id, _) = lifeboat::oplog::run("snapshot", &location, |location| {
        let repo = Repository::open(location)?;
        lifeboat::snapshot::take(&repo.locked("embed")?, &sources, &options, &Silent)
    })?;
    println!("snapshot {}", id.short());

    // Every commit replicated from a background thread while the service
    // keeps writing.
    let stop = AtomicBool::new(false);
    let spec = lifeboat::replicate::DbSpec {
        name: "service.db".into(),
        path: db.clone(),
        schema_query: "PRAGMA user_version".into(),
    };
    let replicate_options = lifeboat::replicate::Options {
        sync_interval: Duration::from_millis(100),
        state_dir: home.path().join("replication-state"),
        ..Default::default()
    };
    // Each repository replicated to is opened once and shared by every
    // database the process replicates.
    let replicas = [lifeboat::replicate::Target::open(&location)?];
    std::thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
        let replicator = scope.spawn(|| lifeboat::replicate::run(spec, &replicas, replicate_options, &stop));
        std::thread::sleep(Duration::from_millis(300));
        for i in 1..=ROWS {
            service.execute("INSERT INTO orders(id, item) VALUES (?1, 'widget')", [i])?;
        }
        // Everything written is shipped within the sync interval.
        std::thread::sleep(Duration::from_millis(500));
        lifeboat::replicate::request_stop(&stop);
        replicator.join().expect("replicator thread")?;
        Ok(())
    })?;

    // Disaster drill: the newest point, as a plain SQLite file elsewhere.
    let restored = home.path().join("restored.db");
    let report = lifeboat::oplog::run("restore", &location, |location| {
        let repo = Repository::open(location)?.indexed()?;
        lifeboat::restore::restore(
            &repo,
            &Selection::newest(&repo, &[], None)?,
            &RestoreOptions {
                target: Target::File(restored.clone()),
                force: false,
                max_schema_version: None,
                keep: Vec::new(),
                skip_integrity_check: false,
            },
            &Silent,
        )
    })?;
    let point = report.point.as_ref().map(|p| p.txid).unwrap_or(0);
    let copy = rusqlite::Connection::open(&restored)?;
    let rows: i64 = copy.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
    println!("restored txid {point}: {rows} of {ROWS} orders");
    if rows != ROWS {
        return Err(format!("the restored copy holds {rows} rows, not {ROWS}").into());
    }

    // What an operator's `lifeboat log` shows for this service.
    let repo = Repository::open(&location)?;
    let records = lifeboat::oplog::list(&repo, None)?;
    let commands: Vec<&str> = records.iter().map(|(_, r)| r.command.as_str()).collect();
    println!("operations log: {}", commands.join(", "));
    if commands != ["init", "snapshot", "restore"] || records[1].1.bytes_written == 0 {
        return Err(format!("unexpected operations log: {records:?}").into());
    }
    Ok(())
}

/// The service's own database: WAL mode, as Lifeboat replicates it.
fn open_service(db: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(db)?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT NOT NULL);",
    )?;
    Ok(c)
}
