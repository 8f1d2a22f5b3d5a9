//! Deletion beside live writers: `snapshot`, `replicate` and
//! `forget --prune` running at the same time against one repository (on the
//! S3 server when `LIFEBOAT_TEST_BACKEND=s3`, where they share no lock, as
//! on separate hosts), after which every snapshot and every point of the WAL
//! window still restores exactly; and `forget --keep-wal` deleting old
//! segments while every point inside the window restores.
//!
//! Every `lifeboat` here runs with `LIFEBOAT_WRITER_VIEW_LIMIT=2s`, which
//! scales the protocol's 15-minute writer view down so that a prune grace
//! of 4 s is the safe minimum (src/repo/mod.rs, `writer_view_limit`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    ChildGuard, Content, Env, LogEvent, Out, content, create_db, create_replica_db, integrity, now_ns, open,
    parse_events, replica_rows, s,
};

/// Child process: writer A of these tests (inert unless re-executed).
#[test]
fn replica_writer_child() {
    common::replica_writer_child_main();
}

const VIEW_LIMIT_ENV: &str = "LIFEBOAT_WRITER_VIEW_LIMIT";
const VIEW_LIMIT: &str = "2s";
/// Twice the view limit: the shortest grace that is safe beside writers.
const GRACE: &str = "4s";
const SYNC: &str = "200ms";
const SNAPSHOT_INTERVAL: &str = "2s";
/// How late a commit's stamp may be (commits are stamped when the
/// replicator sees them). tests/replicate.rs allows 250 ms; here a
/// snapshotter, a pruner and the writer compete with the replicator for two
/// cores, and its poll was measured 257 ms late in 2 of 12 runs.
const LATENESS_NS: i64 = 500_000_000;
const SEC: i64 = 1_000_000_000;

type Row = (i64, i64, String);

// ------------------------------------------------------------ commands

/// The binary with `--repo`, the scaled-down view limit, and (to model
/// another host) its own `XDG_CACHE_HOME` when `cache` is given.
fn lifeboat(env: &Env, cache: Option<&Path>) -> Command {
    let mut c = env.command();
    c.env(VIEW_LIMIT_ENV, VIEW_LIMIT);
    if let Some(dir) = cache {
        c.env("XDG_CACHE_HOME", dir);
    }
    c.arg("--repo").arg(&env.repo_arg);
    c
}

fn run(env: &Env, cache: Option<&Path>, args: &[&str]) -> Out {
    let mut c = lifeboat(env, cache);
    c.args(args);
    common::run_command(c)
}

fn ok(env: &Env, args: &[&str]) -> Out {
    run(env, None, args).expect_code(0)
}

/// The `event` of a refusal printed with `--json`.
fn error_event(out: &Out) -> String {
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["error"]["event"].as_str().map(String::from))
        .unwrap_or_default()
}

fn describe(out: &Out) -> String {
    format!(
        "`{}` exited {}\nstdout:\n{}\nstderr:\n{}",
        out.what, out.code, out.stdout, out.stderr
    )
}

/// Exit-75 outcomes retried, by cause.
#[derive(Default)]
struct Retries {
    /// `repo.in_use`: another command held this host's writer lock.
    in_use: AtomicUsize,
    /// `repo.raced_prune`: the run outlived the writer view while a prune
    /// marked.
    raced_prune: AtomicUsize,
}

/// Run `args` (which include `--json`) until it exits 0, retrying exit 75
/// for a busy lock or a raced prune; any other outcome is an error.
fn run_retrying(env: &Env, cache: Option<&Path>, args: &[&str], retries: &Retries) -> Result<Out, String> {
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        let out = run(env, cache, args);
        if out.code == 0 {
            return Ok(out);
        }
        let ev = error_event(&out);
        match (out.code, ev.as_str()) {
            (75, "repo.in_use") => retries.in_use.fetch_add(1, Ordering::SeqCst),
            (75, "repo.raced_prune") => {
                eprintln!("retrying after repo.raced_prune: {}", out.what);
                retries.raced_prune.fetch_add(1, Ordering::SeqCst)
            }
            _ => return Err(describe(&out)),
        };
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("still refused after 60 s of retries: {}", describe(&out)));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(30 + (n * 37) % 90));
    }
}

// ------------------------------------------------------------ replicator

/// A running `lifeboat -vv replicate DB`, its stderr in a log file.
/// SIGKILLed when dropped.
struct Replicator {
    guard: ChildGuard,
    log: PathBuf,
}

impl Replicator {
    fn start(env: &Env, db: &Path, log: &Path) -> Replicator {
        let mut c = env.command();
        c.env(VIEW_LIMIT_ENV, VIEW_LIMIT)
            .arg("--repo")
            .arg(&env.repo_arg)
            // -vv: `replicate.sealed` shows where each fold began.
            .arg("-vv")
            .arg("replicate")
            .arg(db)
            .args(["--sync-interval", SYNC, "--snapshot-interval", SNAPSHOT_INTERVAL])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("create replicator log"));
        let mut r = Replicator {
            guard: ChildGuard {
                child: c.spawn().expect("spawn lifeboat replicate"),
            },
            log: log.to_path_buf(),
        };
        r.wait_up();
        r
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn events(&self) -> Vec<LogEvent> {
        parse_events(&self.text())
    }

    /// Until its first base is in the repository.
    fn wait_up(&mut self) {
        let start = Instant::now();
        while !self.events().iter().any(|e| e.name == "replicate.base") {
            assert!(
                self.guard.still_running(),
                "the replicator exited before its first base; log:\n{}",
                self.text()
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no first base after 60 s; log:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM (it ships what it read, then exits 0); its log.
    fn stop(mut self) -> String {
        common::signal(&self.guard.child, libc::SIGTERM);
        let code = common::wait_exit(&mut self.guard.child, 90);
        let log = self.text();
        assert_eq!(code, 0, "replicator exited {code} on SIGTERM; log:\n{log}");
        log
    }
}

fn count(evs: &[LogEvent], name: &str) -> usize {
    evs.iter().filter(|e| e.name == name).count()
}

/// Stretches in which the replicator was not looking at the log, so a
/// commit made inside one is stamped only at its end: a base being pinned,
/// a loss of continuity, and every fold (which runs on the thread that
/// reads the log, right after it sealed what it had read).
fn blind_windows(evs: &[LogEvent]) -> Vec<(i64, i64)> {
    let mut blind = Vec::new();
    let mut pinned = None;
    let mut sealed = None;
    for e in evs {
        let t = e.time_ns();
        match e.name.as_str() {
            "replicate.pinned" => pinned = Some(t),
            "replicate.sealed" => sealed = Some(t),
            "replicate.gap" => blind.push((t - 500_000_000, t)),
            "replicate.base" => blind.push((pinned.unwrap_or(t) - 500_000_000, t)),
            "replicate.folded"
            | "replicate.fold_failed"
            | "replicate.fold_skipped"
            | "replicate.fold_base_forgotten" => {
                let ms = e.get("ms").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                let from = sealed.unwrap_or(t).min(t - ms * 1_000_000);
                blind.push((from - 500_000_000, t));
            }
            _ => {}
        }
    }
    blind
}

/// When the replicator could first have seen a commit made at `ts`.
fn visible_at(blind: &[(i64, i64)], ts: i64) -> i64 {
    let mut t = ts;
    loop {
        match blind.iter().filter(|w| w.0 <= t && t < w.1).map(|w| w.1).max() {
            Some(end) => t = end,
            None => return t,
        }
    }
}

fn start_writer(db: &Path) -> ChildGuard {
    common::spawn_self(
        "replica_writer_child",
        &[(common::RW_DB, db), (common::RW_PAUSE_US, Path::new("2500"))],
    )
}

// ---------------------------------------------------------------- restores

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128)
        .expect("timestamp")
        .to_string()
}

fn parse_ns(t: &str) -> i64 {
    let ts: jiff::Timestamp = t.parse().unwrap_or_else(|e| panic!("time {t}: {e}"));
    ts.as_nanosecond() as i64
}

/// Where a point-in-time restore landed (its `--json` `point`).
#[derive(Debug, Clone)]
struct Point {
    txid: u64,
    base_txid: u64,
    commits_applied: u64,
    time_ns: i64,
}

fn point_of(out: &Out) -> Point {
    let v = out.json();
    let p = &v["point"];
    let num = |k: &str| {
        p[k].as_u64()
            .unwrap_or_else(|| panic!("restore --json has no point.{k}:\n{}", out.stdout))
    };
    Point {
        txid: num("txid"),
        base_txid: num("base_txid"),
        commits_applied: num("commits_applied"),
        time_ns: parse_ns(
            p["time"]
                .as_str()
                .unwrap_or_else(|| panic!("restore --json has no point.time:\n{}", out.stdout)),
        ),
    }
}

/// Restores into fresh files of a scratch directory.
struct Restorer<'a> {
    env: &'a Env,
    dir: PathBuf,
    n: usize,
}

impl<'a> Restorer<'a> {
    fn new(env: &'a Env, name: &str) -> Restorer<'a> {
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        Restorer { env, dir, n: 0 }
    }

    /// `--json restore ARGS... -o <fresh file>`: the output and the file,
    /// or the refusal's exit code and event (checked to leave no file).
    fn restore(&mut self, target: &[&str]) -> Result<(Out, PathBuf), (i32, String)> {
        self.n += 1;
        let file = self.dir.join(format!("r{}.db", self.n));
        let mut args = vec!["--json", "restore"];
        args.extend_from_slice(target);
        args.extend(["-o", s(&file)]);
        let out = run(self.env, None, &args);
        if out.code != 0 {
            let ev = error_event(&out);
            assert!(
                !file.exists(),
                "a refused restore ({} {ev}) left {}",
                out.code,
                file.display()
            );
            return Err((out.code, ev));
        }
        assert!(file.is_file(), "restore {target:?} exited 0 without writing -o");
        Ok((out, file))
    }

    /// A restore that must succeed.
    fn ok(&mut self, target: &[&str]) -> (Out, PathBuf) {
        self.restore(target)
            .unwrap_or_else(|(c, ev)| panic!("restore {target:?} refused: exit {c} {ev}"))
    }

    /// `restore --at T`, which must succeed and hold exactly the rows
    /// committed by `t` (the check tests/replicate.rs makes): a prefix of
    /// the source, no row committed after `t`, every row the replicator saw
    /// more than LATENESS_NS before `t`. Returns the point and the rows.
    fn check_at(&mut self, t: i64, source: &[Row], evs: &[LogEvent]) -> (Point, usize) {
        let blind = blind_windows(evs);
        let blind = &blind[..];
        let at = rfc3339(t);
        let (out, file) = self.ok(&["--at", &at, "--only", "app.db"]);
        let p = point_of(&out);
        let k = check_prefix(&file, source, &format!("--at {at}"));
        assert!(p.time_ns <= t, "--at {at} landed on a commit stamped later: {p:?}");
        if let Some(row) = source[..k].iter().find(|row| row.1 > t) {
            panic!(
                "--at {at} holds row {} committed at {}, after the target",
                row.0,
                rfc3339(row.1)
            );
        }
        let required = source
            .iter()
            .take_while(|row| visible_at(blind, row.1) <= t - LATENESS_NS)
            .count();
        if k < required {
            // What the replicator logged around the late commit.
            let ts = source[k].1;
            let near: Vec<String> = evs
                .iter()
                .filter(|e| e.time_ns() >= ts - SEC && e.time_ns() <= t + SEC / 2)
                .map(|e| format!("{} {} {:?}", e.time, e.name, e.fields))
                .collect();
            panic!(
                "--at {at} holds rows 1..={k} but row {} was committed at {} (seen by {}), more than LATENESS_NS before the target; \
                 the replicator logged around it:\n{}",
                k + 1,
                rfc3339(ts),
                rfc3339(visible_at(blind, ts)),
                near.join("\n")
            );
        }
        assert_eq!(
            p.commits_applied,
            p.txid - p.base_txid,
            "--at {at}: every commit after the base applied: {p:?}"
        );
        (p, k)
    }
}

/// The restored file passes integrity_check and holds exactly the source's
/// rows `1..=k` (same ids, times and padding); returns `k`.
fn check_prefix(out: &Path, source: &[Row], what: &str) -> usize {
    assert_eq!(integrity(out), "ok", "{what}: restored database fails integrity_check");
    let rows = replica_rows(out);
    let k = rows.len();
    assert!(
        k <= source.len(),
        "{what}: {k} rows restored, the source has {}",
        source.len()
    );
    if let Some(i) = (0..k).find(|&i| rows[i] != source[i]) {
        panic!(
            "{what}: restored rows are not a prefix of the source's: row #{i} is {:?}, the source's {:?}",
            (rows[i].0, rows[i].1),
            (source[i].0, source[i].1)
        );
    }
    k
}

/// The source's rows, checked to be ids `1..=n` with nothing missing.
fn source_rows(db: &Path) -> Vec<Row> {
    let rows = replica_rows(db);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.0, i as i64 + 1, "the source's ids have a hole at #{i}");
    }
    rows
}

/// A base as listed: id, replication txid, manifest time.
#[derive(Debug, Clone)]
struct Base {
    id: String,
    txid: u64,
    time_ns: i64,
}

/// Bases of the repository, by txid.
fn bases(env: &Env) -> Vec<Base> {
    let mut out: Vec<Base> = list(env)
        .into_iter()
        .filter(|snap| snap["kind"] == "base")
        .map(|snap| {
            let id = snap["id"].as_str().expect("id").to_string();
            let m = ok(env, &["--json", "show", &id]).json()["manifest"].clone();
            let rep = &m["sources"][0]["replication"];
            Base {
                txid: rep["txid"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("base {id} has no replication: {m}")),
                time_ns: parse_ns(m["time"].as_str().expect("time")),
                id,
            }
        })
        .collect();
    out.sort_by_key(|b| b.txid);
    out
}

fn list(env: &Env) -> Vec<serde_json::Value> {
    let out = ok(env, &["--json", "list", "--all"]);
    out.json()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("list --json is not an array: {}", out.stdout))
}

/// Segment objects `wal/<stream>/<first>-<last>` as (stream, first, last),
/// read from the repository's objects on disk (the S3 server keeps each
/// object as a file too).
fn segments(env: &Env) -> BTreeSet<(String, u64, u64)> {
    let mut out = BTreeSet::new();
    let Ok(streams) = std::fs::read_dir(env.repo.join("wal")) else {
        return out;
    };
    for st in streams.flatten() {
        let stream = st.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(st.path()).expect("read stream dir").flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let parsed = name.split_once('-').and_then(|(a, b)| {
                let hex = |x: &str| (x.len() == 16).then(|| u64::from_str_radix(x, 16).ok()).flatten();
                Some((hex(a)?, hex(b)?))
            });
            if let Some((first, last)) = parsed {
                out.insert((stream.clone(), first, last));
            }
        }
    }
    out
}

// ---------------------------------------------------- test 1: concurrency

/// One snapshot of db B: what B held when it was taken.
#[derive(Debug, Clone)]
struct SnapB {
    id: String,
    counter: i64,
    content: Content,
    /// When the snapshot command returned.
    done_ns: i64,
}

/// One `forget --prune` pass.
struct Pass {
    started_ns: i64,
    json: serde_json::Value,
}

/// Db B: `t` (rows of random padding, rewritten a quarter at a time) and a
/// counter row `meta.n`.
fn create_b(path: &Path) {
    create_db(path, 240, 400, true);
    let c = open(path);
    c.execute_batch(
        "CREATE TABLE meta(k TEXT PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO meta VALUES ('counter', 0);",
    )
    .expect("meta");
}

/// Change B for snapshot `n`: a quarter of `t` rewritten, the counter set
/// to `n`, committed and closed before the snapshot starts.
fn change_b(path: &Path, n: i64) {
    let c = open(path);
    c.execute_batch("BEGIN IMMEDIATE").expect("begin");
    c.execute(
        "UPDATE t SET pad = hex(randomblob(200)) WHERE (id - 1) / 60 = ?1",
        [n % 4],
    )
    .expect("update t");
    c.execute("UPDATE meta SET n = ?1 WHERE k = 'counter'", [n])
        .expect("update counter");
    c.execute_batch("COMMIT").expect("commit");
    c.close().map_err(|(_, e)| e).expect("close b");
}

fn counter(path: &Path) -> i64 {
    open(path)
        .query_row("SELECT n FROM meta WHERE k = 'counter'", [], |r| r.get(0))
        .expect("counter row")
}

/// Record the first failure and stop everything.
fn fail(failure: &Mutex<Option<String>>, stop: &AtomicBool, what: String) {
    failure.lock().unwrap().get_or_insert(what);
    stop.store(true, Ordering::SeqCst);
}

#[test]
fn concurrent_snapshot_replicate_and_prune_lose_nothing() {
    let _serial = common::serial();
    let started = Instant::now();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "prune-concurrent");
    let backend = if env.is_s3() { "s3" } else { "local" };
    // Other hosts: on S3 the snapshotter and the pruner each have their own
    // working directory (and host lock); locally all share the repository's
    // lock file.
    let (snap_cache, prune_cache) = if env.is_s3() {
        let a = env.path("host-snapshotter/cache");
        let b = env.path("host-pruner/cache");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        (Some(a), Some(b))
    } else {
        (None, None)
    };

    let db_a = env.path("a/app.db");
    let db_b = env.path("b/b.db");
    std::fs::create_dir_all(db_a.parent().unwrap()).unwrap();
    std::fs::create_dir_all(db_b.parent().unwrap()).unwrap();
    create_replica_db(&db_a);
    create_b(&db_b);

    let rep = Replicator::start(&env, &db_a, &env.path("replicate.log"));
    let mut writer = start_writer(&db_a);

    let stop_pruner = AtomicBool::new(false);
    let stop_snap = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let snap_retries = Retries::default();
    let prune_retries = Retries::default();
    let run_for = Duration::from_secs(25);

    let (snaps, passes): (Vec<SnapB>, Vec<Pass>) = std::thread::scope(|scope| {
        let snapshotter = scope.spawn(|| {
            let mut snaps: Vec<SnapB> = Vec::new();
            let mut n = 0;
            while !stop_snap.load(Ordering::SeqCst) {
                n += 1;
                change_b(&db_b, n);
                let want = content(&db_b);
                let args = ["--json", "snapshot", s(&db_b)];
                match run_retrying(&env, snap_cache.as_deref(), &args, &snap_retries) {
                    Ok(out) => {
                        let id = out.json()["id"].as_str().expect("snapshot id").to_string();
                        snaps.push(SnapB {
                            id,
                            counter: n,
                            content: want,
                            done_ns: now_ns(),
                        });
                    }
                    Err(e) => {
                        fail(&failure, &stop_pruner, format!("snapshot {n}: {e}"));
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            snaps
        });
        let pruner = scope.spawn(|| {
            let mut passes: Vec<Pass> = Vec::new();
            while !stop_pruner.load(Ordering::SeqCst) {
                let started_ns = now_ns();
                let args = [
                    "--json",
                    "forget",
                    "--keep-last",
                    "5",
                    "--keep-wal",
                    "8s",
                    "--prune",
                    "--grace",
                    GRACE,
                ];
                match run_retrying(&env, prune_cache.as_deref(), &args, &prune_retries) {
                    Ok(out) => passes.push(Pass {
                        started_ns,
                        json: out.json(),
                    }),
                    Err(e) => {
                        fail(&failure, &stop_snap, format!("forget --prune: {e}"));
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(700));
            }
            passes
        });
        let until = Instant::now() + run_for;
        while Instant::now() < until && failure.lock().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop_pruner.store(true, Ordering::SeqCst);
        let passes = pruner.join().expect("pruner thread");
        stop_snap.store(true, Ordering::SeqCst);
        let snaps = snapshotter.join().expect("snapshotter thread");
        (snaps, passes)
    });
    if let Some(f) = failure.lock().unwrap().take() {
        panic!(
            "a command failed during the concurrent run:\n{f}\nreplicator log:\n{}",
            rep.text()
        );
    }
    assert!(writer.still_running(), "writer A died during the run");
    let _ = writer.child.kill();
    let _ = writer.child.wait();
    let stop_a = now_ns();
    let log = rep.stop();
    let concurrent_s = started.elapsed().as_secs_f64();

    // Both phases with nothing else writing.
    let mut final_deleted = 0;
    for _ in 0..2 {
        let out = run(&env, None, &["--json", "prune", "--grace", "0s"]).expect_code(0);
        final_deleted += out.json()["deleted_packs"].as_u64().expect("deleted_packs");
    }
    ok(&env, &["verify", "--read-data"]);

    let evs = parse_events(&log);
    let gaps = count(&evs, "replicate.gap");
    assert_eq!(gaps, 0, "writer A's stream has a gap; log:\n{log}");
    let deleted_during: u64 = passes
        .iter()
        .map(|p| p.json["prune"]["deleted_packs"].as_u64().expect("prune.deleted_packs"))
        .sum();
    let recovered: u64 = passes
        .iter()
        .map(|p| p.json["prune"]["recovered_packs"].as_u64().unwrap_or(0))
        .sum();
    let marked: u64 = passes
        .iter()
        .map(|p| p.json["prune"]["marked_packs"].as_u64().unwrap_or(0))
        .sum();
    let segs_deleted: u64 = passes
        .iter()
        .map(|p| p.json["result"]["deleted_segments"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "[{backend}] {} snapshots of B, {} forget --prune passes; packs marked {marked}, deleted {deleted_during} during the run \
         (+{final_deleted} by the final prunes), recovered {recovered}; {segs_deleted} segments deleted; \
         exit-75 retries: snapshot {} busy + {} raced_prune, forget {} busy + {} raced_prune; \
         replicator: {} folds, {} fold failures, {} skipped",
        snaps.len(),
        passes.len(),
        snap_retries.in_use.load(Ordering::SeqCst),
        snap_retries.raced_prune.load(Ordering::SeqCst),
        prune_retries.in_use.load(Ordering::SeqCst),
        prune_retries.raced_prune.load(Ordering::SeqCst),
        count(&evs, "replicate.folded"),
        count(&evs, "replicate.fold_failed"),
        count(&evs, "replicate.fold_skipped"),
    );
    for e in evs.iter().filter(|e| e.name.starts_with("replicate.fold_")) {
        eprintln!("[{backend}]   {} {:?}", e.name, e.fields);
    }
    assert!(snaps.len() >= 15, "only {} snapshots of B were taken", snaps.len());
    assert!(passes.len() >= 8, "only {} forget --prune passes ran", passes.len());
    assert!(
        deleted_during > 0,
        "no prune pass deleted a pack during the run (marked {marked}): only marking was exercised"
    );
    if env.is_s3() {
        // Separate working directories: nothing shares a lock.
        assert_eq!(
            snap_retries.in_use.load(Ordering::SeqCst),
            0,
            "snapshot found its host lock busy"
        );
        assert_eq!(
            prune_retries.in_use.load(Ordering::SeqCst),
            0,
            "forget found its host lock busy"
        );
    }

    let listed = list(&env);
    let mut r = Restorer::new(&env, "restored");

    // B: exactly the 5 the last forget kept, plus those it did not see.
    let last = passes.last().expect("a pass");
    let b_name = db_b.file_name().unwrap().to_string_lossy().into_owned();
    let is_b = |v: &serde_json::Value| v["kind"] == "full";
    let seen: BTreeSet<String> = last.json["snapshots"]
        .as_array()
        .expect("verdicts")
        .iter()
        .filter(|v| is_b(v))
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let kept_by_last: BTreeSet<String> = last.json["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| is_b(v) && v["keep"] == true)
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept_by_last.len(), 5, "the last forget kept {kept_by_last:?} of B");
    let newer: BTreeSet<String> = snaps
        .iter()
        .filter(|sn| sn.done_ns >= last.started_ns && !seen.contains(&sn.id))
        .map(|sn| sn.id.clone())
        .collect();
    let want_b: BTreeSet<String> = kept_by_last.union(&newer).cloned().collect();
    let have_b: BTreeSet<String> = listed
        .iter()
        .filter(|v| v["kind"] == "full")
        .map(|v| {
            assert_eq!(
                v["sources"],
                serde_json::json!([b_name]),
                "a full snapshot not of B: {v}"
            );
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        have_b,
        want_b,
        "snapshots of B left: the 5 the last forget kept plus {} taken after it",
        newer.len()
    );
    let by_id: BTreeMap<&str, &SnapB> = snaps.iter().map(|sn| (sn.id.as_str(), sn)).collect();
    for id in &have_b {
        let sn = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("snapshot {id} of B was not taken by the snapshotter"));
        let (_, file) = r.ok(&[id.as_str()]);
        assert_eq!(integrity(&file), "ok", "snapshot {id} of B fails integrity_check");
        assert_eq!(
            counter(&file),
            sn.counter,
            "snapshot {id}: B's counter row is not what was committed before it"
        );
        assert_eq!(content(&file), sn.content, "snapshot {id}: B's content differs");
    }

    // A: every base restores to a prefix of what the writer committed.
    let source = source_rows(&db_a);
    assert!(source.len() >= 2000, "writer A committed only {} rows", source.len());
    let all_bases = bases(&env);
    for b in &all_bases {
        let (_, file) = r.ok(&[b.id.as_str()]);
        check_prefix(&file, &source, &format!("base {} (txid {})", &b.id[..8], b.txid));
    }
    assert!(
        all_bases.len() >= 5,
        "only {} bases of A are left: {all_bases:?}",
        all_bases.len()
    );

    // Every point of the WAL window: the last 8 s of writer A's run.
    let first_base_ns = all_bases.iter().map(|b| b.time_ns).min().unwrap();
    let from = stop_a - 8 * SEC;
    assert!(
        from > first_base_ns,
        "the WAL window reaches before the oldest base left"
    );
    let mut points = Vec::new();
    for i in 0..10 {
        let t = from + i * (8 * SEC) / 9;
        let (p, k) = r.check_at(t, &source, &evs);
        points.push((p.base_txid, p.txid, k));
    }
    for w in points.windows(2) {
        assert!(w[1].2 >= w[0].2, "a later time holds fewer rows: {points:?}");
    }
    assert!(points[9].2 > points[0].2, "the window holds no commits: {points:?}");
    // And the newest point is the source itself.
    let (_, now_file) = r.ok(&["--at", "now", "--only", "app.db"]);
    assert_eq!(content(&now_file), content(&db_a), "restore --at now differs from db A");
    eprintln!(
        "[{backend}] {} bases of A left, {} of B; window points (base txid, txid, rows): {points:?}; \
         concurrent phase {concurrent_s:.1} s, whole test {:.1} s",
        all_bases.len(),
        have_b.len(),
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------ test 2: keep-wal

/// The verdict of snapshot `id` in a forget's `--json` output.
fn verdict<'a>(json: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    json["snapshots"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no verdict for {id}: {json}"))
}

fn reasons(v: &serde_json::Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Check a `forget --keep-wal 3s --json` plan made between `t0` and `t1`
/// against the bases: within the window, its starting base (the anchor),
/// the newest, and nothing else kept. Returns the anchor.
fn check_wal_plan(
    json: &serde_json::Value,
    bases: &[Base],
    t0: i64,
    t1: i64,
    segs: &BTreeSet<(String, u64, u64)>,
) -> Base {
    const WITHIN: &str = "within WAL window 3s";
    const ANCHOR: &str = "WAL window's starting base";
    const NEWEST: &str = "newest base of its stream";
    let newest = bases.last().expect("bases");
    let mut anchor: Option<&Base> = None;
    for b in bases {
        let v = verdict(json, &b.id);
        let why = reasons(v);
        if b.time_ns >= t1 - 3 * SEC {
            assert!(why.iter().any(|r| r == WITHIN), "base {b:?} is inside the window: {v}");
        }
        if b.time_ns < t0 - 3 * SEC {
            assert!(!why.iter().any(|r| r == WITHIN), "base {b:?} is before the window: {v}");
        }
        assert_eq!(
            why.iter().any(|r| r == NEWEST),
            b.id == newest.id,
            "only the newest base is the newest of its stream: {v}"
        );
        if why.iter().any(|r| r == ANCHOR) {
            assert!(anchor.is_none(), "two starting bases: {json}");
            anchor = Some(b);
        }
        assert_eq!(v["keep"], !why.is_empty(), "kept exactly when a rule keeps it: {v}");
    }
    let anchor = anchor.unwrap_or_else(|| panic!("no base starts the WAL window: {json}"));
    // The anchor is the newest base before the window; the ones before it
    // are removed, the ones after it are inside the window.
    for b in bases {
        let v = verdict(json, &b.id);
        let why = reasons(v);
        if b.txid < anchor.txid {
            assert_eq!(v["keep"], false, "base {b:?} before the starting base is kept: {v}");
        } else if b.txid > anchor.txid {
            assert!(
                why.iter().any(|r| r == WITHIN),
                "base {b:?} after the starting base: {v}"
            );
        } else {
            assert!(
                !why.iter().any(|r| r == WITHIN),
                "the starting base is before the window: {v}"
            );
        }
    }
    let wal = json["wal"].as_array().expect("wal plan");
    assert_eq!(wal.len(), 1, "one stream: {json}");
    let plan = &wal[0];
    assert_eq!(
        plan["cutoff_txid"].as_u64(),
        Some(anchor.txid),
        "cutoff at the starting base: {plan}"
    );
    let below = segs.iter().filter(|x| x.2 <= anchor.txid).count() as u64;
    assert_eq!(plan["segments"].as_u64(), Some(segs.len() as u64), "{plan}");
    assert_eq!(plan["delete_segments"].as_u64(), Some(below), "{plan}");
    anchor.clone()
}

#[test]
fn keep_wal_deletes_old_segments_but_every_point_in_the_window_restores() {
    let _serial = common::serial();
    let started = Instant::now();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "keep-wal");
    let backend = if env.is_s3() { "s3" } else { "local" };
    let db = env.path("a/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_replica_db(&db);
    let rep = Replicator::start(&env, &db, &env.path("replicate.log"));
    let mut writer = start_writer(&db);
    std::thread::sleep(Duration::from_millis(9000));
    assert!(writer.still_running(), "writer A died");
    let _ = writer.child.kill();
    let _ = writer.child.wait();
    let stop_a = now_ns();
    let log = rep.stop();
    let evs = parse_events(&log);
    assert_eq!(count(&evs, "replicate.gap"), 0, "a gap; log:\n{log}");

    let before_bases = bases(&env);
    let before_segs = segments(&env);
    assert!(
        before_bases.len() >= 4,
        "only {} bases: {before_bases:?}",
        before_bases.len()
    );

    let forget = |dry: bool| -> (serde_json::Value, i64, i64) {
        let t0 = now_ns();
        let mut args = vec!["--json", "forget", "--keep-wal", "3s"];
        if dry {
            args.push("--dry-run");
        }
        let out = ok(&env, &args);
        (out.json(), t0, now_ns())
    };
    let (dry, d0, d1) = forget(true);
    let dry_anchor = check_wal_plan(&dry, &before_bases, d0, d1, &before_segs);
    assert_eq!(segments(&env), before_segs, "a dry run deleted segments");
    assert_eq!(bases(&env).len(), before_bases.len(), "a dry run removed bases");

    // Snapshot rules without --keep-wal: the window is a day, so every base
    // here (all seconds old) stays and no segment goes, where --keep-last 1
    // alone would drop all history before the newest base.
    let by_default = ok(&env, &["--json", "forget", "--keep-last", "1", "--dry-run"]).json();
    assert_eq!(by_default["wal_window"], "24h", "{by_default}");
    assert_eq!(by_default["wal_window_default"], true, "{by_default}");
    for b in &before_bases {
        let v = verdict(&by_default, &b.id);
        assert!(
            reasons(v).iter().any(|r| r == "within WAL window 24h"),
            "base {b:?} is inside the default window: {v}"
        );
    }
    assert_eq!(
        by_default["wal"][0]["delete_segments"].as_u64(),
        Some(0),
        "{by_default}"
    );
    // `unlimited`: the bases go by --keep-last alone, and the segments
    // before the one base kept lead nowhere.
    let unlimited = ok(
        &env,
        &[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--keep-wal",
            "unlimited",
            "--dry-run",
        ],
    )
    .json();
    assert_eq!(unlimited["wal_window"], "unlimited", "{unlimited}");
    assert_eq!(unlimited["wal_window_default"], false, "{unlimited}");
    let newest = before_bases.last().expect("bases");
    for b in &before_bases {
        let v = verdict(&unlimited, &b.id);
        assert_eq!(v["keep"], b.id == newest.id, "only the newest base stays: {v}");
        assert!(
            !reasons(v).iter().any(|r| r.starts_with("within WAL window")),
            "no window: {v}"
        );
    }
    assert_eq!(
        unlimited["wal"][0]["cutoff_txid"].as_u64(),
        Some(newest.txid),
        "{unlimited}"
    );
    assert_eq!(
        unlimited["wal"][0]["delete_segments"].as_u64(),
        Some(before_segs.iter().filter(|x| x.2 <= newest.txid).count() as u64),
        "{unlimited}"
    );
    assert_eq!(segments(&env), before_segs, "a dry run deleted segments");

    let (real, t0, t1) = forget(false);
    let anchor = check_wal_plan(&real, &before_bases, t0, t1, &before_segs);
    let removed: Vec<&Base> = before_bases.iter().filter(|b| b.txid < anchor.txid).collect();
    assert!(
        !removed.is_empty(),
        "no base is before the window's starting base: {before_bases:?}"
    );

    // Segments up to the cutoff are gone, the later ones all remain.
    let after_segs = segments(&env);
    let (gone, kept): (BTreeSet<_>, BTreeSet<_>) = before_segs.iter().cloned().partition(|x| x.2 <= anchor.txid);
    assert!(
        !gone.is_empty(),
        "no segment lies before the cutoff txid {}",
        anchor.txid
    );
    assert_eq!(
        after_segs, kept,
        "segments after forget: those ending after txid {}",
        anchor.txid
    );
    assert_eq!(
        real["result"]["deleted_segments"].as_u64(),
        Some(gone.len() as u64),
        "{}",
        real["result"]
    );
    let after_bases = bases(&env);
    assert_eq!(
        after_bases.iter().map(|b| b.txid).collect::<Vec<_>>(),
        before_bases
            .iter()
            .filter(|b| b.txid >= anchor.txid)
            .map(|b| b.txid)
            .collect::<Vec<_>>(),
        "bases left: the starting base and those after it"
    );

    // Every point in the window restores exactly.
    let source = source_rows(&db);
    let mut r = Restorer::new(&env, "restored");
    let from = t1 - 3 * SEC;
    assert!(
        stop_a - from > SEC,
        "the window [{}, now] holds less than 1 s of writer A's run (stopped {}): the machine is too slow",
        rfc3339(from),
        rfc3339(stop_a)
    );
    let to = stop_a + SEC / 2;
    let mut points = Vec::new();
    for i in 0..10 {
        let t = from + i * (to - from) / 9;
        let (p, k) = r.check_at(t, &source, &evs);
        assert!(
            p.base_txid >= anchor.txid,
            "--at {} landed before the starting base: {p:?}",
            rfc3339(t)
        );
        points.push((p.base_txid, p.txid, k));
    }
    assert_eq!(
        points[9].2,
        source.len(),
        "the end of the window holds every row: {points:?}"
    );

    // Before the window: from the starting base up to it, the starting
    // base and the commits after it; before that base, nothing (refused).
    let next_time = after_bases.get(1).map(|b| b.time_ns).unwrap_or(stop_a);
    let t_anchor = anchor.time_ns + (next_time.min(t0 - 3 * SEC) - anchor.time_ns).max(0) / 2;
    let (p, k) = r.check_at(t_anchor, &source, &evs);
    assert_eq!(
        p.base_txid,
        anchor.txid,
        "--at {} lands on the starting base: {p:?}",
        rfc3339(t_anchor)
    );
    let (out, file) = r.ok(&["--txid", &anchor.txid.to_string()]);
    let p0 = point_of(&out);
    assert_eq!(
        (p0.txid, p0.base_txid, p0.commits_applied),
        (anchor.txid, anchor.txid, 0)
    );
    check_prefix(&file, &source, "the starting base");
    let before = anchor.time_ns - (anchor.time_ns - removed.last().unwrap().time_ns) / 2;
    assert_eq!(
        r.restore(&["--at", &rfc3339(before)]).unwrap_err(),
        (66, "restore.before_history".to_string()),
        "--at a time before the starting base (where a removed base was)"
    );
    assert_eq!(
        r.restore(&["--txid", &(anchor.txid - 1).to_string()]).unwrap_err(),
        (66, "restore.before_history".to_string()),
        "--txid before the starting base"
    );
    ok(&env, &["verify"]);
    eprintln!(
        "[{backend}] bases {} -> {} (starting base txid {}, dry run's {}), segments {} -> {} ({} deleted); \
         before the window: --at {} -> base txid {} with {k} rows; window points (base txid, txid, rows): {points:?}; {:.1} s",
        before_bases.len(),
        after_bases.len(),
        anchor.txid,
        dry_anchor.txid,
        before_segs.len(),
        after_segs.len(),
        gone.len(),
        rfc3339(t_anchor),
        p.base_txid,
        started.elapsed().as_secs_f64()
    );
}
