//! `lifeboat demo`: the whole cycle on a scratch service, in under 30 seconds.
//! A writer commits numbered rows continuously while a snapshot is taken; the
//! state is destroyed and restored; the restored database must pass
//! integrity_check and hold exactly rows 1..=k for a k the writer had reached.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use lifeboat::repo::{Opened, RepoLocation, Repository};
use lifeboat::restore::{RestoreOptions, Target};
use lifeboat::snapshot::{SnapshotOptions, SourceKind, SourceSpec};
use lifeboat::{Error, Result};

use super::Ctx;
use super::output::bytes;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Runs against a scratch repository it removes afterwards, or against --repo (a new, empty
directory or S3 prefix, which it creates and keeps): the same cycle against your own store.")]
pub struct Args {
    /// Keep the scratch directory afterwards (its path is printed).
    #[arg(long)]
    keep: bool,
}

/// Tells the story as it happens, or collects it for `--json`.
struct Steps {
    /// Whether each step is printed as it is done (not with --json or -q).
    print: bool,
    done: Vec<String>,
}

impl Steps {
    fn step(&mut self, text: &str) {
        self.done.push(text.to_string());
        if self.print {
            println!("[{}] {text}", self.done.len());
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let started = Instant::now();
    let scratch = std::env::temp_dir().join(format!("lifeboat-demo-{}", lifeboat::fsutil::unique_suffix()));
    let mut steps = Steps {
        print: !ctx.json && !ctx.quiet,
        done: Vec::new(),
    };
    // --repo: the operator's own store (new and empty: the demo creates it
    // and leaves it there); else a scratch repository removed with the rest.
    let loc = match ctx.repo_flag() {
        Some(_) => ctx.repo_location()?,
        None => RepoLocation::local(scratch.join("repo")),
    };
    let result = run_in(&mut steps, &scratch, &loc);
    if ctx.repo_flag().is_some() && !ctx.json && !ctx.quiet {
        eprintln!("the demo's repository is kept at {}", loc.display());
    }
    if args.keep {
        eprintln!("scratch directory kept at {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result?;
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        super::output::print_json(&serde_json::json!({"passed": true, "seconds": secs, "steps": steps.done}));
    } else {
        println!("demo passed in {secs:.1}s");
    }
    Ok(0)
}

fn io<T>(p: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(p, e))
}

fn sql<T>(p: &Path, r: rusqlite::Result<T>) -> Result<T> {
    r.map_err(|e| Error::sqlite(p, e))
}

/// The scratch service: a WAL database, a config file and a tree of uploads.
struct Service {
    data: PathBuf,
    db: PathBuf,
    cfg: PathBuf,
    files: PathBuf,
}

impl Service {
    fn create(steps: &mut Steps, scratch: &Path) -> Result<Service> {
        let data = scratch.join("service");
        let db = data.join("state.db");
        let cfg = data.join("server.toml");
        let files = data.join("uploads");
        io(&files, std::fs::create_dir_all(files.join("avatars")))?;
        io(
            &cfg,
            std::fs::write(&cfg, "listen = \"127.0.0.1:8443\"\nlog_level = \"info\"\n"),
        )?;
        for i in 0..20 {
            let p = files.join("avatars").join(format!("user{i}.txt"));
            io(&p, std::fs::write(&p, format!("avatar of user {i}\n").repeat(200)))?;
        }
        io(
            &files,
            std::os::unix::fs::symlink("avatars/user0.txt", files.join("default-avatar")),
        )?;

        steps.step(&format!(
            "service in {}: a WAL database, server.toml, uploads/",
            data.display()
        ));
        {
            let c = sql(&db, rusqlite::Connection::open(&db))?;
            sql(
                &db,
                c.execute_batch(
                    "PRAGMA journal_mode=WAL; PRAGMA user_version=7;
             CREATE TABLE events(id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100000)
             INSERT INTO events SELECT i, printf('event %d %s', i, hex(randomblob(24))) FROM n;",
                ),
            )?;
        }
        Ok(Service { data, db, cfg, files })
    }

    /// What the demo backs up: the database, the config and the uploads.
    fn sources(&self) -> Vec<SourceSpec> {
        vec![
            SourceSpec {
                name: "state.db".into(),
                path: self.db.clone(),
                kind: SourceKind::Sqlite {
                    schema_query: "PRAGMA user_version".into(),
                },
            },
            SourceSpec {
                name: "server.toml".into(),
                path: self.cfg.clone(),
                kind: SourceKind::File,
            },
            SourceSpec {
                name: "uploads".into(),
                path: self.files.clone(),
                kind: SourceKind::Directory { exclude: vec![] },
            },
        ]
    }
}

/// The writer: one row per commit, counting what has committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicI64>,
    thread: std::thread::JoinHandle<rusqlite::Result<()>>,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(100000));
        let thread = {
            let (stop, committed, db) = (stop.clone(), committed.clone(), db.to_path_buf());
            std::thread::spawn(move || -> rusqlite::Result<()> {
                let c = rusqlite::Connection::open(&db)?;
                c.busy_timeout(Duration::from_secs(5))?;
                while !stop.load(Ordering::Relaxed) {
                    let next = committed.load(Ordering::Relaxed) + 1;
                    c.execute(
                        "INSERT INTO events(id, payload) VALUES (?1, printf('event %d', ?1))",
                        [next],
                    )?;
                    committed.store(next, Ordering::Relaxed);
                }
                Ok(())
            })
        };
        Writer {
            stop,
            committed,
            thread,
        }
    }

    fn committed(&self) -> i64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Stop the writer; the last row it committed.
    fn stop(self, db: &Path) -> Result<i64> {
        self.stop.store(true, Ordering::Relaxed);
        let writer_result = self.thread.join().expect("writer thread");
        sql(db, writer_result)?;
        Ok(self.committed.load(Ordering::Relaxed))
    }
}

/// The writer's count read on both sides of the second capture.
struct Window {
    before: i64,
    after: i64,
}

fn run_in(steps: &mut Steps, scratch: &Path, loc: &RepoLocation) -> Result<()> {
    let service = Service::create(steps, scratch)?;
    let writer = Writer::start(&service.db);
    std::thread::sleep(Duration::from_millis(300));
    steps.step(&format!("writer running: {} rows committed so far", writer.committed()));

    let (repo, id2, window) = snapshot_twice(steps, loc, &service, &writer)?;
    let final_rows = writer.stop(&service.db)?;
    steps.step(&format!(
        "writer stopped at row {final_rows}; disaster: the whole service directory is deleted"
    ));
    let data = &service.data;
    io(data, std::fs::remove_dir_all(data))?;

    restore_service(steps, &repo, &id2, &service)?;
    check_restored(steps, &service, &window, final_rows)?;
    verify_all(steps, &repo)?;
    point_in_time(steps, scratch, &service.db, loc)
}

/// A snapshot under load, then a second one storing only changed pages;
/// the repository, the second snapshot's id, and the writer's counts
/// around it.
fn snapshot_twice(
    steps: &mut Steps,
    loc: &RepoLocation,
    service: &Service,
    writer: &Writer,
) -> Result<(Repository<Opened>, lifeboat::id::Id, Window)> {
    let repo = Repository::init(loc)?;
    let specs = service.sources();
    // Step lines tell the story; byte-level progress would only interleave.
    let progress = lifeboat::progress::Silent;
    let opts = SnapshotOptions {
        kind: lifeboat::repo::manifest::SnapshotKind::Full,
        tags: vec!["demo".into()],
        replication: None,
        time: None,
    };
    let before = writer.committed();
    let (id1, m1) = lifeboat::snapshot::take(&repo.locked("demo")?, &specs, &opts, &progress)?;
    steps.step(&format!(
        "snapshot {} taken under load (the writer at row {before} as it began): {} read, {} stored",
        id1.short(),
        bytes(m1.summary.logical_bytes),
        bytes(m1.summary.added_stored_bytes)
    ));
    std::thread::sleep(Duration::from_millis(300));
    // The writer's count read on both sides of the capture: the snapshot
    // holds the database as of one instant between them.
    let before_second = writer.committed();
    let (id2, m2) = lifeboat::snapshot::take(&repo.locked("demo")?, &specs, &opts, &progress)?;
    let after_second = writer.committed();
    steps.step(&format!(
        "second snapshot {} while the writer went from row {before_second} to {after_second}: only changed pages stored ({} new of {})",
        id2.short(),
        bytes(m2.summary.added_stored_bytes),
        bytes(m2.summary.logical_bytes)
    ));
    let window = Window {
        before: before_second,
        after: after_second,
    };
    Ok((repo, id2, window))
}

/// Restore snapshot `id2` over the deleted service, in place.
fn restore_service(
    steps: &mut Steps,
    repo: &Repository<Opened>,
    id2: &lifeboat::id::Id,
    service: &Service,
) -> Result<()> {
    let progress = lifeboat::progress::Silent;
    let snap = repo.find_snapshot(&id2.hex())?;
    let report = lifeboat::restore::restore_snapshot(
        &repo.indexed()?,
        &snap,
        &RestoreOptions {
            target: Target::Original,
            force: false,
            max_schema_version: None,
            keep: Vec::new(),
            skip_integrity_check: false,
        },
        &progress,
    )?;
    steps.step(&format!(
        "restored {} sources into {} (hashes and integrity_check passed)",
        report.restored.len(),
        service.data.display()
    ));
    Ok(())
}

/// The restored database holds rows 1..=k for a k the writer reached while
/// the second snapshot was taken, and the files are as they were.
fn check_restored(steps: &mut Steps, service: &Service, window: &Window, final_rows: i64) -> Result<()> {
    let Service { data, db, cfg, files } = service;
    let (before_second, after_second) = (window.before, window.after);
    let c = sql(db, rusqlite::Connection::open(db))?;
    let ok: String = sql(db, c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))?;
    let (n, max): (i64, i64) = sql(
        db,
        c.query_row("SELECT count(*), max(id) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        }),
    )?;
    // A commit may have returned while its count was not yet stored: one
    // more than the count read after the capture is still inside it.
    if ok != "ok" || n != max || n < before_second || n > after_second + 1 {
        return Err(Error::bad_data(
            db.display(),
            format!("demo check failed: integrity {ok}, {n} rows, max id {max}"),
        ));
    }
    steps.step(&format!(
        "restored database: integrity_check ok, rows 1..={n} exactly: the state at one instant of the second snapshot (the writer was between rows {before_second} and {after_second}; the {} committed after it are not in that snapshot)",
        final_rows - n
    ));
    let restored_cfg = io(cfg, std::fs::read_to_string(cfg))?;
    let link = io(files, std::fs::read_link(files.join("default-avatar")))?;
    if !restored_cfg.contains("8443") || link != Path::new("avatars/user0.txt") {
        return Err(Error::bad_data(
            data.display(),
            "demo check failed: files differ after restore",
        ));
    }
    steps.step("server.toml and uploads/ (20 files and a symlink) restored byte for byte");
    Ok(())
}

/// verify --read-data over everything the demo stored.
fn verify_all(steps: &mut Steps, repo: &Repository<Opened>) -> Result<()> {
    let v = lifeboat::verify::verify(repo, lifeboat::verify::DataCheck::All, &lifeboat::progress::Silent)?;
    if !v.problems.is_empty() {
        return Err(Error::bad_data(
            repo.location(),
            "demo check failed: verify found damage",
        ));
    }
    steps.step(&format!(
        "verify --read-data: {} snapshots, {} packs, every byte checked",
        v.snapshots, v.packs
    ));
    Ok(())
}

/// Replicate while the service writes, then restore the database as it was
/// at a moment between two bursts of commits.
fn point_in_time(steps: &mut Steps, scratch: &Path, db: &Path, loc: &RepoLocation) -> Result<()> {
    let stop = AtomicBool::new(false);
    let opts = lifeboat::replicate::Options {
        sync_interval: Duration::from_millis(250),
        state_dir: scratch.join("replicate-state"),
        ..Default::default()
    };
    let spec = lifeboat::replicate::DbSpec {
        name: "state.db".into(),
        path: db.to_path_buf(),
        schema_query: "PRAGMA user_version".into(),
    };
    let replicas = [lifeboat::replicate::Target::open(loc)?];
    let (at, rows_at, rows_end) = std::thread::scope(|scope| -> Result<(jiff::Timestamp, i64, i64)> {
        let replicator = scope.spawn(|| lifeboat::replicate::run(spec, &replicas, opts, &stop));
        let burst = |c: &rusqlite::Connection, until: Instant| -> Result<i64> {
            loop {
                sql(
                    db,
                    c.execute(
                        "INSERT INTO events(payload) VALUES (printf('after restore %d', random()))",
                        [],
                    ),
                )?;
                if Instant::now() >= until {
                    return sql(db, c.query_row("SELECT max(id) FROM events", [], |r| r.get(0)));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        let c = sql(db, rusqlite::Connection::open(db))?;
        std::thread::sleep(Duration::from_millis(500));
        let rows_at = burst(&c, Instant::now() + Duration::from_secs(1))?;
        // A quiet moment between two bursts: the target time.
        std::thread::sleep(Duration::from_millis(200));
        let at = jiff::Timestamp::now();
        std::thread::sleep(Duration::from_millis(200));
        let rows_end = burst(&c, Instant::now() + Duration::from_secs(1))?;
        std::thread::sleep(Duration::from_millis(600));
        lifeboat::replicate::request_stop(&stop);
        replicator.join().expect("replicator thread")?;
        Ok((at, rows_at, rows_end))
    })?;
    steps.step(&format!(
        "replicated every commit while the service wrote two bursts ({rows_at}, then {rows_end} rows)"
    ));
    let out = scratch.join("state-at.db");
    // The replicator added packs since `repo` loaded its index.
    let repo = &Repository::open(&replicas[0].location)?.indexed()?;
    let selection = lifeboat::restore::Selection::newest(repo, &[], Some(at))?;
    let report = lifeboat::restore::restore(
        repo,
        &selection,
        &RestoreOptions {
            target: Target::File(out.clone()),
            force: false,
            max_schema_version: None,
            keep: Vec::new(),
            skip_integrity_check: false,
        },
        &lifeboat::progress::Silent,
    )?;
    let c = sql(&out, rusqlite::Connection::open(&out))?;
    let ok: String = sql(&out, c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))?;
    let max: i64 = sql(&out, c.query_row("SELECT max(id) FROM events", [], |r| r.get(0)))?;
    let txid = report.point.map(|p| p.txid).unwrap_or(0);
    if ok != "ok" || max != rows_at {
        return Err(Error::bad_data(
            out.display(),
            format!("demo check failed: as of {at} expected {rows_at} rows, got {max} ({ok})"),
        ));
    }
    steps.step(&format!(
        "restore --at {at}: exactly the {rows_at} rows committed by then (txid {txid}, integrity_check ok)"
    ));
    Ok(())
}
