//! WAL replication (`lifeboat replicate`) and point-in-time restore
//! (`restore --txid` / `--at`) through the real binary: a writer and the
//! replicator SIGKILLed at random while restores land on exact prefixes;
//! checkpoints from outside, VACUUM, the database replaced underneath and a
//! page-size change, each with correct restores on both sides; refusals;
//! `--exec`; and restore's `--if-db-not-exists` / `--if-replica-exists`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ChildGuard, Content, Env, LogEvent, Out, commit_row, content, create_replica_db, integrity, now_ns, open,
    parse_events, replica_rows, s, wait_until,
};

/// Child process: the writer of these tests (inert unless re-executed).
#[test]
fn replica_writer_child() {
    common::replica_writer_child_main();
}

const SYNC: &str = "200ms";
/// How late a commit's stamp may be (commits are stamped when seen).
const LATENESS_NS: i64 = 250_000_000;

type Row = (i64, i64, String);

// ------------------------------------------------------------ replicator

/// A running `lifeboat -v replicate DB --sync-interval 200ms`, its stderr
/// in a log file. SIGKILLed when dropped.
struct Replicator {
    guard: ChildGuard,
    log: PathBuf,
}

impl Replicator {
    fn start(env: &Env, db: &Path, log: &Path, global: &[&str], extra: &[&str]) -> Replicator {
        let mut c = env.command();
        c.arg("--repo")
            .arg(&env.repo_arg)
            .arg("-v")
            .args(global)
            .arg("replicate")
            .arg(db)
            .args(["--sync-interval", SYNC])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("create replicator log"));
        Replicator {
            guard: ChildGuard {
                child: c.spawn().expect("spawn lifeboat replicate"),
            },
            log: log.to_path_buf(),
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn events(&self) -> Vec<LogEvent> {
        parse_events(&self.text())
    }

    /// Wait until it follows the log: started and resumed, or its first
    /// base taken. Returns the event that showed it.
    fn wait_up(&mut self) -> LogEvent {
        let start = Instant::now();
        loop {
            if let Some(e) = up_event(&self.events()) {
                return e;
            }
            if !self.guard.still_running() {
                panic!("the replicator exited before it was up; log:\n{}", self.text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("the replicator is not up after 60s; log:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGINT; its exit code and log.
    fn interrupt(mut self) -> (i32, String) {
        common::signal(&self.guard.child, libc::SIGINT);
        let code = common::wait_exit(&mut self.guard.child, 90);
        (code, self.text())
    }

    /// Stop it with SIGINT and insist on exit 0.
    fn stop(self) -> String {
        let (code, log) = self.interrupt();
        assert_eq!(code, 0, "replicator exited {code} on SIGINT; log:\n{log}");
        log
    }
}

/// The event at which a replicator run follows the log: `replicate.started`
/// with `resumed=true`, else the first base after it.
fn up_event(evs: &[LogEvent]) -> Option<LogEvent> {
    let i = evs.iter().position(|e| e.name == "replicate.started")?;
    if evs[i].flag("resumed") {
        return Some(evs[i].clone());
    }
    evs[i..].iter().find(|e| e.name == "replicate.base").cloned()
}

/// The newest txid the logs show in the repository (segments shipped, bases).
fn newest_txid(evs: &[LogEvent]) -> u64 {
    evs.iter()
        .filter_map(|e| match e.name.as_str() {
            "replicate.shipped" => Some(e.num("last_txid")),
            "replicate.base" => Some(e.num("txid")),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn count(evs: &[LogEvent], name: &str) -> usize {
    evs.iter().filter(|e| e.name == name).count()
}

// ---------------------------------------------------------------- restores

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
    let time: jiff::Timestamp = p["time"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("restore --json has no point.time:\n{}", out.stdout));
    Point {
        txid: num("txid"),
        base_txid: num("base_txid"),
        commits_applied: num("commits_applied"),
        time_ns: time.as_nanosecond() as i64,
    }
}

/// The `event` of a refusal printed with `--json`.
fn error_event(out: &Out) -> String {
    out.json()["error"]["event"].as_str().unwrap_or_default().to_string()
}

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128)
        .expect("timestamp")
        .to_string()
}

/// Point-in-time restores into a scratch directory.
struct Restorer<'a> {
    env: &'a Env,
    dir: PathBuf,
    n: usize,
    /// Rows of `t` right after each base txid restored so far.
    base_rows: HashMap<u64, usize>,
}

impl<'a> Restorer<'a> {
    fn new(env: &'a Env, name: &str) -> Restorer<'a> {
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        Restorer {
            env,
            dir,
            n: 0,
            base_rows: HashMap::new(),
        }
    }

    /// `--json restore TARGET... -o <fresh file>`: the point and the file,
    /// or the refusal's exit code and event.
    fn restore(&mut self, target: &[&str]) -> Result<(Point, PathBuf), (i32, String)> {
        self.n += 1;
        let out = self.dir.join(format!("r{}.db", self.n));
        let mut args = vec!["--json", "restore"];
        args.extend_from_slice(target);
        args.extend(["-o", s(&out)]);
        let o = self.env.run(&args);
        if o.code != 0 {
            let ev = error_event(&o);
            assert!(
                !out.exists(),
                "a refused restore ({} {ev}) left {}",
                o.code,
                out.display()
            );
            return Err((o.code, ev));
        }
        assert!(out.is_file(), "restore {target:?} exited 0 without writing -o");
        Ok((point_of(&o), out))
    }

    fn txid(&mut self, n: u64) -> Result<(Point, PathBuf), (i32, String)> {
        self.restore(&["--txid", &n.to_string()])
    }

    fn ok_txid(&mut self, n: u64) -> (Point, PathBuf) {
        self.txid(n)
            .unwrap_or_else(|(c, ev)| panic!("restore --txid {n} refused: exit {c} {ev}"))
    }

    /// The content restored at txid `n` (which must succeed and land there).
    fn content_at(&mut self, n: u64) -> Content {
        let (p, out) = self.ok_txid(n);
        assert_eq!(p.txid, n, "restore --txid {n} landed on {p:?}");
        assert_eq!(integrity(&out), "ok", "restore --txid {n} fails integrity_check");
        content(&out)
    }

    /// Rows of `t` right after base txid `b`.
    fn rows_at_base(&mut self, b: u64, source: &[Row]) -> usize {
        if let Some(&k) = self.base_rows.get(&b) {
            return k;
        }
        let (p, out) = self.ok_txid(b);
        assert_eq!(
            (p.txid, p.base_txid, p.commits_applied),
            (b, b, 0),
            "restore --txid {b} of a base"
        );
        let k = check_prefix(&out, source, &format!("base txid {b}"));
        self.base_rows.insert(b, k);
        k
    }

    /// Restore `--txid n` of an append-only stream (one row per commit):
    /// `None` when it lies in a gap (exit 65, restore.gap), else the rows
    /// `1..=k` it holds, checked: integrity, exactly the source's first `k`
    /// rows, `k` = the base's rows + one per commit after it, and a second
    /// restore byte-identical.
    fn check_txid(&mut self, n: u64, source: &[Row]) -> Option<usize> {
        let (p, out) = match self.txid(n) {
            Ok(x) => x,
            Err((65, ev)) if ev == "restore.gap" => return None,
            Err((c, ev)) => panic!("restore --txid {n}: exit {c} {ev}"),
        };
        let first_hash = common::blake3_file(&out);
        assert_eq!(p.txid, n, "restore --txid {n} landed on {p:?}");
        assert_eq!(
            p.commits_applied,
            n - p.base_txid,
            "restore --txid {n}: every commit after base {} applied",
            p.base_txid
        );
        let k = check_prefix(&out, source, &format!("txid {n}"));
        let kb = self.rows_at_base(p.base_txid, source);
        assert_eq!(
            k as u64,
            kb as u64 + (n - p.base_txid),
            "txid {n}: base txid {} holds {kb} rows, so txid {n} must hold {}",
            p.base_txid,
            kb as u64 + (n - p.base_txid)
        );
        let (_, again) = self.ok_txid(n);
        assert_eq!(
            common::blake3_file(&again),
            first_hash,
            "two restores of --txid {n} differ"
        );
        Some(k)
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

/// Bases of the repository: (txid, after_gap, manifest time ns), by txid.
fn bases(env: &Env) -> Vec<(u64, bool, i64)> {
    let mut out: Vec<(u64, bool, i64)> = env
        .list()
        .into_iter()
        .filter(|snap| snap["kind"] == "base")
        .map(|snap| {
            let id = snap["id"].as_str().expect("id").to_string();
            let m = env.manifest(&id);
            let rep = &m["sources"][0]["replication"];
            let time: jiff::Timestamp = m["time"].as_str().and_then(|t| t.parse().ok()).expect("time");
            (
                rep["txid"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("base {id} has no replication: {m}")),
                rep["after_gap"].as_bool().unwrap_or(false),
                time.as_nanosecond() as i64,
            )
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------- scene

/// A replicated database written by the test itself (so what it held at
/// each moment is known), with the replicator beside it.
struct Scene<'a> {
    env: &'a Env,
    db: PathBuf,
    rep: Option<Replicator>,
    runs: usize,
    /// `--config FILE` when the scene has a configuration.
    global: Vec<String>,
    /// Logs of finished replicator runs.
    old_logs: String,
}

impl<'a> Scene<'a> {
    fn new(env: &'a Env, config: Option<&str>) -> Scene<'a> {
        let db = env.path("data/app.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        create_replica_db(&db);
        let global = match config {
            Some(text) => {
                let p = env.path("lifeboat.toml");
                std::fs::write(&p, text).unwrap();
                vec!["--config".to_string(), s(&p).to_string()]
            }
            None => Vec::new(),
        };
        let mut sc = Scene {
            env,
            db,
            rep: None,
            runs: 0,
            global,
            old_logs: String::new(),
        };
        sc.start();
        sc
    }

    fn start(&mut self) -> LogEvent {
        assert!(self.rep.is_none());
        self.runs += 1;
        let log = self.env.path(&format!("replicate-{}.log", self.runs));
        let global: Vec<&str> = self.global.iter().map(String::as_str).collect();
        let mut r = Replicator::start(self.env, &self.db, &log, &global, &[]);
        let up = r.wait_up();
        self.rep = Some(r);
        up
    }

    fn stop(&mut self) {
        let log = self.rep.take().expect("a replicator running").stop();
        self.old_logs.push_str(&log);
    }

    fn events(&self) -> Vec<LogEvent> {
        let mut text = self.old_logs.clone();
        if let Some(r) = &self.rep {
            text.push_str(&r.text());
        }
        parse_events(&text)
    }

    fn log_text(&self) -> String {
        let mut text = self.old_logs.clone();
        if let Some(r) = &self.rep {
            text.push_str(&r.text());
        }
        text
    }

    /// Commit `n` rows, one per transaction, `pause` apart.
    fn write(&self, n: usize, pause: Duration) {
        let c = open(&self.db);
        c.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
        for _ in 0..n {
            commit_row(&c);
            std::thread::sleep(pause);
        }
    }

    /// With no one writing, wait until the repository holds exactly what
    /// the database holds now: the txid of that state, and the state.
    fn caught_up(&mut self, r: &mut Restorer) -> (u64, Content) {
        let want = content(&self.db);
        let start = Instant::now();
        let mut tried = 0;
        let mut last = String::new();
        loop {
            if let Some(rep) = self.rep.as_mut()
                && let Ok(Some(st)) = rep.guard.child.try_wait()
            {
                panic!(
                    "the replicator exited ({st}) while the test waited for it; log:\n{}",
                    self.log_text()
                );
            }
            let n = newest_txid(&self.events());
            if n > 0 && n != tried {
                tried = n;
                match r.txid(n) {
                    Ok((p, out)) => {
                        assert_eq!(p.txid, n, "restore --txid {n} landed on {p:?}");
                        assert_eq!(integrity(&out), "ok", "restore --txid {n} fails integrity_check");
                        let got = content(&out);
                        if got == want {
                            return (n, want);
                        }
                        last = format!("txid {n} holds {got:?}");
                    }
                    Err((c, ev)) => last = format!("txid {n} refused: {c} {ev}"),
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "the repository did not catch up with the database ({want:?}) in 60s; last: {last}\nlog:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Restore `--txid` at `samples` points spread over `from..=to` of an
/// append-only stretch; returns how many fell in a gap.
fn check_stretch(r: &mut Restorer, from: u64, to: u64, samples: u64, source: &[Row]) -> usize {
    let mut gaps = 0;
    let mut last_k = 0;
    let step = ((to - from) / samples).max(1);
    let mut n = from;
    while n <= to {
        match r.check_txid(n, source) {
            Some(k) => {
                assert!(
                    k >= last_k,
                    "txid {n} holds {k} rows, fewer than an earlier txid ({last_k})"
                );
                last_k = k;
            }
            None => gaps += 1,
        }
        n += step;
    }
    gaps
}

// ---------------------------------------------------------------- kill loop

/// xorshift64*: small, seeded, good enough to place kills.
/// A connection kept open as a running service keeps one: the last
/// connection to close checkpoints the log and deletes it. (A WAL-mode
/// connection holds its shared lock from its first read on.)
fn service_connection(db: &Path) -> rusqlite::Connection {
    let c = open(db);
    let _: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    c
}

/// One run of the replicator in the kill loop: its log, and when the test
/// killed it (None for the last one, stopped with SIGINT).
struct Run {
    log: PathBuf,
    killed_ns: Option<i64>,
}

fn start_writer(db: &Path) -> ChildGuard {
    common::spawn_self(
        "replica_writer_child",
        &[(common::RW_DB, db), (common::RW_PAUSE_US, Path::new("2500"))],
    )
}

fn kill(guard: &mut ChildGuard) {
    let _ = guard.child.kill();
    let _ = guard.child.wait();
}

#[test]
fn kill_loop_restores_exact_prefixes_at_every_txid_and_time() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "kill-loop");
    let seed = std::env::var("LIFEBOAT_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ns() as u64 | 1);
    eprintln!("kill loop seed {seed} (set LIFEBOAT_TEST_SEED={seed} to place the kills the same way)");
    let mut rng = common::Rng(seed);

    let db = env.path("svc/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_replica_db(&db);
    let mut runs: Vec<Run> = Vec::new();
    let new_run = |runs: &mut Vec<Run>| -> Replicator {
        let log = env.path(&format!("replicate-{}.log", runs.len()));
        runs.push(Run {
            log: log.clone(),
            killed_ns: None,
        });
        Replicator::start(&env, &db, &log, &[], &[])
    };

    let mut writer = start_writer(&db);
    let mut rep = new_run(&mut runs);
    rep.wait_up();
    std::thread::sleep(Duration::from_millis(500));

    let rounds = 9;
    let mut kills = (0, 0, 0);
    for round in 0..rounds {
        std::thread::sleep(rng.ms(300, 1100));
        let what = match rng.below(10) {
            0..=3 => "replicator",
            4..=6 => "writer",
            _ => "both",
        };
        let writer_first = rng.below(2) == 0;
        let kill_rep = |rep: &mut Replicator, runs: &mut Vec<Run>| {
            kill(&mut rep.guard);
            runs.last_mut().unwrap().killed_ns = Some(now_ns());
        };
        match what {
            "replicator" => kill_rep(&mut rep, &mut runs),
            "writer" => kill(&mut writer),
            _ if writer_first => {
                kill(&mut writer);
                kill_rep(&mut rep, &mut runs);
            }
            _ => {
                kill_rep(&mut rep, &mut runs);
                kill(&mut writer);
            }
        }
        let down = rng.ms(0, 300);
        std::thread::sleep(down);
        match what {
            "replicator" => {
                kills.0 += 1;
                rep = new_run(&mut runs);
            }
            "writer" => {
                kills.1 += 1;
                writer = start_writer(&db);
            }
            _ => {
                kills.2 += 1;
                if writer_first {
                    writer = start_writer(&db);
                    rep = new_run(&mut runs);
                } else {
                    rep = new_run(&mut runs);
                    writer = start_writer(&db);
                }
            }
        }
        eprintln!("round {round}: SIGKILLed {what}, restarted after {down:?}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    kill(&mut writer);
    // Let the replicator read and ship the last commits, then stop it.
    rep.wait_up();
    let mut stable = (newest_txid(&rep.events()), Instant::now());
    wait_until("the replicator to ship the last commits", 60, || {
        let n = newest_txid(&rep.events());
        if n != stable.0 {
            stable = (n, Instant::now());
        }
        stable.1.elapsed() > Duration::from_millis(1000)
    });
    let stopped_ns = now_ns();
    rep.stop();
    eprintln!(
        "kills: replicator {}, writer {}, both {}; {} replicator runs",
        kills.0,
        kills.1,
        kills.2,
        runs.len()
    );

    // What each run logged.
    let logs: Vec<Vec<LogEvent>> = runs
        .iter()
        .map(|r| parse_events(&std::fs::read_to_string(&r.log).unwrap_or_default()))
        .collect();
    let all: Vec<LogEvent> = logs.iter().flatten().cloned().collect();
    let source = source_rows(&db);
    let want = content(&db);
    let shipped = count(&all, "replicate.shipped");
    let gap_events: Vec<&LogEvent> = all.iter().filter(|e| e.name == "replicate.gap").collect();
    let bases = bases(&env);
    let after_gap = bases.iter().filter(|b| b.1).count();
    eprintln!(
        "source: {} rows; {} segments shipped; {} bases ({} after a gap); replicate.gap events: {:?}",
        source.len(),
        shipped,
        bases.len(),
        after_gap,
        gap_events
            .iter()
            .map(|e| e.get("reason").unwrap_or("?"))
            .collect::<Vec<_>>()
    );
    assert!(source.len() >= 1000, "the writer committed only {} rows", source.len());
    assert!(shipped >= 10, "only {shipped} segments shipped");
    assert!(!bases.is_empty(), "no base in the repository");
    let newest = newest_txid(&all);
    let (first_base, _, first_base_ns) = bases[0];
    assert!(
        newest > first_base + 1000,
        "newest txid {newest}, first base {first_base}"
    );

    let mut r = Restorer::new(&env, "restored");

    // (c) The latest restore holds exactly every row of the source.
    let (p, out) = r
        .restore(&["--at", "now"])
        .unwrap_or_else(|e| panic!("restore --at now refused: {e:?}"));
    assert_eq!(integrity(&out), "ok");
    assert_eq!(p.txid, newest, "restore --at now landed on {p:?}");
    let got = content(&out);
    assert_eq!(
        (got.rows, got.max_id, &got.hash),
        (want.rows, want.max_id, &want.hash),
        "restore --at now differs from the source"
    );
    assert_eq!(got, want, "restore --at now: page size or count differ from the source");
    // One past the newest is refused.
    assert_eq!(r.txid(newest + 1).unwrap_err(), (66, "restore.after_history".into()));

    // (a) Random txids between the first base and the newest.
    let mut txid_gaps = 0;
    let mut checked: Vec<(u64, usize)> = Vec::new();
    let mut attempts = 0;
    while checked.len() < 10 {
        attempts += 1;
        assert!(attempts <= 40, "too many txids fell in gaps ({txid_gaps})");
        let n = first_base + rng.below(newest - first_base + 1);
        match r.check_txid(n, &source) {
            Some(k) => checked.push((n, k)),
            None => {
                // A gap is only ever where one was reported.
                let next = bases.iter().find(|b| b.0 > n);
                assert!(
                    next.is_some_and(|b| b.1),
                    "txid {n} is refused as a gap, but the base after it ({next:?}) is not after_gap"
                );
                txid_gaps += 1;
            }
        }
    }
    checked.sort();
    for w in checked.windows(2) {
        assert!(
            w[1].1 >= w[0].1,
            "txid {} holds fewer rows than txid {}: {checked:?}",
            w[1].0,
            w[0].0
        );
    }
    eprintln!("txid restores (txid, rows): {checked:?}; {txid_gaps} fell in a gap");

    // (b) Random times between the first base and the stop. A commit is
    // stamped when the replicator sees it: one made while no replicator was
    // running (or while one was taking a base, or whose stamp died with a
    // killed replicator before it was spooled) is seen only when the next
    // one is up. Those stretches are "blind": a row committed in one counts
    // as committed at its end.
    let mut blind: Vec<(i64, i64)> = Vec::new();
    for (i, evs) in logs.iter().enumerate() {
        let up = up_event(evs).map(|e| e.time_ns());
        if i > 0 {
            let prev_end = runs[i - 1].killed_ns.expect("earlier runs were killed");
            let end = up.or(runs[i].killed_ns).unwrap_or(stopped_ns);
            // Read but not yet spooled when killed: at most a sync interval.
            blind.push((prev_end - 500_000_000, end));
        }
        let mut pinned = None;
        for e in evs {
            match e.name.as_str() {
                "replicate.pinned" => pinned = Some(e.time_ns()),
                "replicate.gap" => blind.push((e.time_ns() - 500_000_000, e.time_ns())),
                "replicate.base" => {
                    let from = pinned.unwrap_or(e.time_ns());
                    blind.push((from - 500_000_000, e.time_ns()));
                }
                _ => {}
            }
        }
    }
    let visible_at = |ts: i64| -> i64 {
        let mut t = ts;
        loop {
            let moved = blind.iter().filter(|w| w.0 <= t && t < w.1).map(|w| w.1).max();
            match moved {
                Some(end) => t = end,
                None => return t,
            }
        }
    };
    // A commit the replicator did not see being made (made while it was
    // down, or read but not spooled by a killed run) carries the interval
    // from the last moment a run is known to have watched to the moment it
    // was read; a time inside a wide one is refused (restore.uncertain).
    // That happens only around a kill: from the killed run's last shipped
    // commit (within a sync interval and a seal of the kill) to the next
    // run's start.
    let uncertain_ok = |t: i64| {
        runs.iter().enumerate().skip(1).any(|(i, _)| {
            let killed = runs[i - 1].killed_ns.expect("earlier runs were killed");
            let up = up_event(&logs[i])
                .map(|e| e.time_ns())
                .or(runs[i].killed_ns)
                .unwrap_or(stopped_ns);
            killed - 2_500_000_000 <= t && t <= up
        })
    };
    let mut time_gaps = 0;
    let mut time_uncertain = 0;
    let mut required_total = 0;
    let mut time_checked = 0;
    let span = (stopped_ns - first_base_ns) as u64;
    for attempt in 0.. {
        if time_checked >= 8 || attempt >= 40 {
            break;
        }
        let t = first_base_ns + rng.below(span) as i64;
        let at = rfc3339(t);
        match r.restore(&["--at", &at]) {
            Ok((p, out)) => {
                let k = check_prefix(&out, &source, &format!("--at {at}"));
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
                    .take_while(|row| visible_at(row.1) <= t - LATENESS_NS)
                    .count();
                // A row missing although its commit was seen well before
                // the target.
                assert!(
                    k >= required,
                    "--at {at} holds rows 1..={k} but row {} was committed at {} (seen by {}), more than 250 ms before the target",
                    k + 1,
                    rfc3339(source[k].1),
                    rfc3339(visible_at(source[k].1))
                );
                eprintln!(
                    "--at {at}: rows 1..={k} (at least {required} required), txid {}",
                    p.txid
                );
                required_total += required;
                time_checked += 1;
            }
            Err((65, ev)) if ev == "restore.gap" => {
                // Only where a gap was reported: the base after the one
                // chosen for this time says after_gap.
                let prev = bases.iter().rposition(|b| b.2 <= t).expect("a base before the target");
                let next = bases.get(prev + 1);
                assert!(
                    next.is_some_and(|b| b.1),
                    "--at {at} refused as a gap, but the next base ({next:?}) is not after_gap"
                );
                eprintln!("--at {at}: in a gap (restore.gap)");
                time_gaps += 1;
            }
            Err((65, ev)) if ev == "restore.uncertain" => {
                assert!(
                    uncertain_ok(t),
                    "--at {at} refused as uncertain, but no replicator run was killed or starting then"
                );
                eprintln!("--at {at}: inside an unwatched interval (restore.uncertain)");
                time_uncertain += 1;
            }
            Err(e) => panic!("restore --at {at}: {e:?}"),
        }
    }
    assert!(time_checked >= 5, "only {time_checked} time restores succeeded");
    assert!(required_total > 0, "no time restore had a row it was required to hold");
    assert_eq!(
        r.restore(&["--at", &rfc3339(first_base_ns - 1_000_000_000)])
            .unwrap_err(),
        (66, "restore.before_history".into())
    );
    eprintln!(
        "gaps: {} replicate.gap events, {after_gap} after_gap bases; restores in a gap: {txid_gaps} by txid, {time_gaps} by time; {time_uncertain} times refused as unwatched",
        gap_events.len()
    );
    // A restart after a SIGKILL resumes where the log still holds what the
    // killed run had not read; a gap only where the log restarted while
    // no one watched it. Not every restart may have made a gap.
    let resumed = logs
        .iter()
        .skip(1)
        .filter(|evs| evs.iter().any(|e| e.name == "replicate.started" && e.flag("resumed")))
        .count();
    eprintln!("{resumed} of {} restarts resumed without a base", runs.len() - 1);
    assert!(resumed >= 1, "every one of {} restarts took a new base", runs.len() - 1);
    env.ok(["verify"]);
}

// ---------------------------------------------------------------- events

const SMALL_CHECKPOINTS: &str = "[replicate]\ncheckpoint_pages = 20\n";

/// Run `PRAGMA wal_checkpoint(MODE)` on `c`; true when it completed (not busy).
fn checkpoint(c: &rusqlite::Connection, mode: &str) -> bool {
    match c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(0)) {
        Ok(busy) => busy == 0,
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => false,
        Err(e) => panic!("wal_checkpoint({mode}): {e}"),
    }
}

#[test]
fn external_truncate_checkpoints_while_writing() {
    let _serial = common::serial();
    // Small checkpoints, so the replicator lets go of the log often and an
    // outside TRUNCATE can actually complete now and then.
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "checkpoints");
    let mut sc = Scene::new(&env, Some(SMALL_CHECKPOINTS));
    let mut r = Restorer::new(&env, "restored");
    sc.write(150, Duration::from_millis(2));
    let (n0, s0) = sc.caught_up(&mut r);

    let w = open(&sc.db);
    w.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    let ck = open(&sc.db);
    ck.busy_timeout(Duration::from_millis(20)).unwrap();
    let (mut done, mut tried) = (0, 0);
    let start = Instant::now();
    while done < 5 || start.elapsed() < Duration::from_secs(2) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no outside TRUNCATE checkpoint completed in 30s ({tried} tried)"
        );
        for _ in 0..3 {
            commit_row(&w);
            std::thread::sleep(Duration::from_millis(2));
        }
        tried += 1;
        if checkpoint(&ck, "TRUNCATE") {
            done += 1;
        }
    }
    drop((w, ck));
    eprintln!("outside TRUNCATE checkpoints: {done} completed of {tried}");
    sc.write(50, Duration::from_millis(2));
    let (n1, s1) = sc.caught_up(&mut r);
    let source = source_rows(&sc.db);
    let gaps = check_stretch(&mut r, n0, n1, 12, &source);
    assert_eq!(r.content_at(n0), s0, "txid {n0}, just before the checkpoints");
    assert_eq!(r.content_at(n1), s1, "txid {n1}, after them");
    let (_, now) = r.restore(&["--at", "now"]).expect("restore --at now");
    assert_eq!(content(&now), s1);
    sc.stop();
    let evs = sc.events();
    eprintln!(
        "txids {n0}..{n1}; replicate.gap {}, wal_restarted {}, checkpoint {}; sampled txids in a gap: {gaps}",
        count(&evs, "replicate.gap"),
        count(&evs, "replicate.wal_restarted"),
        count(&evs, "replicate.checkpoint")
    );
    assert_gaps_reported(&env, &evs);
}

/// Every replicate.gap logged is answered by a base that says after_gap.
fn assert_gaps_reported(env: &Env, evs: &[LogEvent]) {
    let gaps = count(evs, "replicate.gap");
    let after_gap = bases(env).iter().filter(|b| b.1).count();
    assert!(
        gaps == 0 || after_gap > 0,
        "{gaps} replicate.gap events but no base after a gap"
    );
}

#[test]
fn checkpoint_storm_passive_and_restart_after_every_commit() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "checkpoints");
    let mut sc = Scene::new(&env, Some(SMALL_CHECKPOINTS));
    let mut r = Restorer::new(&env, "restored");
    sc.write(150, Duration::from_millis(2));
    let (n0, s0) = sc.caught_up(&mut r);

    let w = open(&sc.db);
    w.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    let ck = open(&sc.db);
    ck.busy_timeout(Duration::from_millis(5)).unwrap();
    let (mut restarts, mut commits) = (0, 0);
    let start = Instant::now();
    // At least 2 s, and until an outside RESTART has completed (it can only
    // while the replicator has let go of the log to restart it).
    while start.elapsed() < Duration::from_secs(2) || restarts < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the storm did not restart the log ({restarts} RESTARTs completed, log:\n{})",
            sc.log_text()
        );
        commit_row(&w);
        commits += 1;
        checkpoint(&ck, "PASSIVE");
        if checkpoint(&ck, "RESTART") {
            restarts += 1;
        }
    }
    drop((w, ck));
    sc.write(50, Duration::from_millis(2));
    let (n1, s1) = sc.caught_up(&mut r);
    let source = source_rows(&sc.db);
    let gaps = check_stretch(&mut r, n0, n1, 12, &source);
    assert_eq!(r.content_at(n0), s0, "txid {n0}, just before the storm");
    assert_eq!(r.content_at(n1), s1, "txid {n1}, after it");
    sc.stop();
    let evs = sc.events();
    eprintln!(
        "storm: {commits} commits, {restarts} RESTART checkpoints completed; txids {n0}..{n1}; replicate.wal_restarted {}, replicate.gap {}; sampled txids in a gap: {gaps}",
        count(&evs, "replicate.wal_restarted"),
        count(&evs, "replicate.gap")
    );
    assert!(
        count(&evs, "replicate.wal_restarted") + count(&evs, "replicate.gap") > 0,
        "the storm never restarted the log under the replicator"
    );
    assert_gaps_reported(&env, &evs);
    if count(&evs, "replicate.gap") == 0 {
        assert_eq!(n1 - n0, commits + 50, "one txid per commit");
    }
}

/// Frames in the log's current generation, from the wal-index header
/// (`mxFrame`, native-endian, at offset 16 of `-shm`).
fn wal_frames(db: &Path) -> u32 {
    let shm = std::fs::read(format!("{}-shm", db.display())).expect("read -shm");
    u32::from_ne_bytes(shm[16..20].try_into().unwrap())
}

#[test]
fn a_burst_after_an_idle_spell_restarts_the_log_without_a_gap() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    // The replicator lets the log go to restart at 18 frames.
    let mut sc = Scene::new(&env, Some(SMALL_CHECKPOINTS));
    let mut r = Restorer::new(&env, "restored");
    let w = open(&sc.db);
    w.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    // Commit slowly until the log is long enough to be let go, then stop:
    // the replicator has checkpointed it and waits for a restart that an
    // idle service does not make.
    let start = Instant::now();
    loop {
        commit_row(&w);
        std::thread::sleep(Duration::from_millis(50));
        if wal_frames(&sc.db) >= 20 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the log never reached 20 frames"
        );
    }
    let (n0, s0) = sc.caught_up(&mut r);
    // Idle for longer than the replicator waits for a restart.
    std::thread::sleep(Duration::from_millis(500));
    // One transaction that restarts the log and overwrites every frame of
    // the old generation at once, faster than any poll, then quick commits.
    w.execute_batch(
        "BEGIN IMMEDIATE;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60)
         INSERT INTO t(id, ts, pad) SELECT (SELECT max(id) FROM t) + i, 0, hex(randomblob(3000)) FROM n;
         COMMIT;",
    )
    .unwrap();
    for _ in 0..20 {
        commit_row(&w);
    }
    drop(w);
    let (n1, s1) = sc.caught_up(&mut r);
    assert_eq!(r.content_at(n0), s0, "txid {n0}, before the idle spell");
    assert_eq!(r.content_at(n1), s1, "txid {n1}, after the burst");
    sc.stop();
    let evs = sc.events();
    assert_eq!(
        count(&evs, "replicate.gap"),
        0,
        "a burst after an idle spell lost continuity; log:\n{}",
        sc.log_text()
    );
    assert!(
        count(&evs, "replicate.wal_restarted") > 0,
        "the burst did not restart the log"
    );
    assert_eq!(n1 - n0, 21, "one txid per commit");
}

#[test]
fn vacuum_is_replicated_like_any_commit() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    sc.write(400, Duration::from_millis(1));
    let (n0, s0) = sc.caught_up(&mut r);
    open(&sc.db).execute("DELETE FROM t WHERE id % 3 <> 0", []).unwrap();
    let (n1, s1) = sc.caught_up(&mut r);
    open(&sc.db).execute_batch("VACUUM").unwrap();
    let (n2, s2) = sc.caught_up(&mut r);
    assert!(
        s2.page_count < s1.page_count,
        "VACUUM shrank the database ({} -> {} pages)",
        s1.page_count,
        s2.page_count
    );
    assert_eq!(s2.hash, s1.hash, "VACUUM changed no row");
    sc.write(30, Duration::from_millis(2));
    let (n3, s3) = sc.caught_up(&mut r);
    sc.stop();
    for (n, want, what) in [
        (n0, &s0, "before the DELETE"),
        (n1, &s1, "before VACUUM"),
        (n2, &s2, "after VACUUM"),
        (n3, &s3, "after more rows"),
    ] {
        assert_eq!(&r.content_at(n), want, "txid {n}, {what}");
    }
    assert_eq!((n1 - n0, n2 - n1, n3 - n2), (1, 1, 30), "one txid per commit");
    assert_eq!(count(&sc.events(), "replicate.gap"), 0);
}

#[test]
fn database_replaced_underneath_gets_a_new_base() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    sc.write(200, Duration::from_millis(1));
    let (n0, s0) = sc.caught_up(&mut r);
    sc.write(100, Duration::from_millis(1));
    let (n1, s1) = sc.caught_up(&mut r);

    // An older point restored over the live database (it is moved aside).
    let gaps_before = count(&sc.events(), "replicate.gap");
    sc.env
        .ok(["restore", "--force", "--txid", &n0.to_string(), "-o", s(&sc.db)]);
    assert_eq!(content(&sc.db), s0, "the live path now holds txid {n0}");
    wait_until("a replicate.gap for the replaced database", 30, || {
        count(&sc.events(), "replicate.gap") > gaps_before
    });
    let (n2, s2) = sc.caught_up(&mut r);
    assert_eq!(s2, s0);
    sc.write(50, Duration::from_millis(1));
    let (n3, s3) = sc.caught_up(&mut r);

    // A different database renamed into place, its predecessor and the
    // predecessor's -wal/-shm moved aside first (as restore --force does),
    // with the path left empty for a while, as a replacement by hand.
    let other = sc.env.path("data/other.db.tmp");
    create_replica_db(&other);
    {
        let c = open(&other);
        c.execute_batch("CREATE TABLE marker(x TEXT); INSERT INTO marker VALUES ('other database');")
            .unwrap();
        for _ in 0..40 {
            commit_row(&c);
        }
    }
    let aside = sc.env.path("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let gaps_before = count(&sc.events(), "replicate.gap");
    for side in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{side}", s(&sc.db)));
        if from.exists() {
            std::fs::rename(&from, aside.join(format!("app.db{side}"))).unwrap();
        }
    }
    // The path stays empty until the replicator says it is waiting for it
    // (it used to stop with exit 66 here).
    wait_until("a replicate.db_missing warning", 30, || {
        count(&sc.events(), "replicate.db_missing") > 0
    });
    std::fs::rename(&other, &sc.db).unwrap();
    let s4 = content(&sc.db);
    assert_eq!(s4.rows, 40);
    wait_until("a replicate.gap for the renamed database", 30, || {
        count(&sc.events(), "replicate.gap") > gaps_before
    });
    let (n4, got) = sc.caught_up(&mut r);
    assert_eq!(got, s4);
    sc.write(30, Duration::from_millis(1));
    let (n5, s5) = sc.caught_up(&mut r);
    sc.stop();

    let evs = sc.events();
    let gaps: Vec<&str> = evs
        .iter()
        .filter(|e| e.name == "replicate.gap")
        .map(|e| e.get("reason").unwrap_or(""))
        .collect();
    eprintln!("txids {n0} {n1} | replaced {n2} {n3} | renamed {n4} {n5}; gaps {gaps:?}");
    assert_eq!(gaps.len(), 2, "one gap per replacement: {gaps:?}");
    assert!(gaps.iter().all(|g| g.contains("replaced")), "{gaps:?}");
    let after_gap: Vec<u64> = bases(&env).iter().filter(|b| b.1).map(|b| b.0).collect();
    assert_eq!(
        after_gap,
        vec![n2, n4],
        "the bases after the replacements say after_gap"
    );
    for (n, want, what) in [
        (n0, &s0, "first state"),
        (n1, &s1, "just before the restore --force"),
        (n2, &s0, "the older point restored over it"),
        (n3, &s3, "rows written after that"),
        (n4, &s4, "the other database renamed into place"),
        (n5, &s5, "rows written after that"),
    ] {
        assert_eq!(&r.content_at(n), want, "txid {n}, {what}");
    }
    // The commits right before each replacement are still there.
    assert_eq!(
        r.content_at(n2 - 1),
        s1,
        "txid {}, the last before the first replacement",
        n2 - 1
    );
    assert_eq!(r.content_at(n4 - 1), s3, "txid {}, the last before the second", n4 - 1);
    let (_, now) = r.restore(&["--at", "now"]).expect("restore --at now");
    assert_eq!(content(&now), s5);
}

#[test]
fn a_clean_restart_resumes_without_a_base_a_gap_or_a_second_upload() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    // The service keeps a connection open throughout, as a running service
    // does (the last connection to close checkpoints the log and deletes
    // it, and commits made with no replicator running are then lost to it:
    // a gap, rightly).
    let service = service_connection(&sc.db);
    sc.write(200, Duration::from_millis(1));
    let (n0, s0) = sc.caught_up(&mut r);
    sc.stop();
    let first_run = sc.events().len();
    // Written while no replicator runs (too few frames for the log to
    // restart): found in the log at the next start.
    sc.write(50, Duration::from_millis(1));
    let up = sc.start();
    assert!(
        up.name == "replicate.started" && up.flag("resumed"),
        "the second run did not resume: {up:?}"
    );
    sc.write(50, Duration::from_millis(1));
    let (n1, s1) = sc.caught_up(&mut r);
    sc.stop();
    let evs = sc.events();
    let second: Vec<&LogEvent> = evs[first_run..].iter().collect();
    assert!(
        !second
            .iter()
            .any(|e| e.name == "replicate.base" || e.name == "replicate.gap"),
        "the resumed run took a base or saw a gap: {second:?}"
    );
    let firsts: Vec<u64> = second
        .iter()
        .filter(|e| e.name == "replicate.shipped")
        .map(|e| e.num("first_txid"))
        .collect();
    assert_eq!(
        firsts.iter().min().copied(),
        Some(n0 + 1),
        "the resumed run uploaded from {firsts:?}, not from txid {}",
        n0 + 1
    );
    assert_eq!(n1 - n0, 100, "one txid per commit across the restart");
    assert_eq!(r.content_at(n0), s0, "txid {n0}, before the restart");
    assert_eq!(r.content_at(n1), s1, "txid {n1}, after it");
    let source = source_rows(&sc.db);
    check_stretch(&mut r, n0, n1, 5, &source);
    drop(service);
}

#[test]
fn commits_made_while_stopped_are_shipped_at_start_without_further_writes() {
    // Issue 22, finding 8: an idle service's last commits, made while the
    // replicator was down, must be shipped when it starts, not when the
    // service next writes (it may never).
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    for service_open in [true, false] {
        // A service that keeps its connection (the commits wait in the log),
        // and one that closed it (its last close checkpointed the log into
        // the database and deleted it: continuity is lost, a base is due).
        if sc.rep.is_none() {
            sc.start();
        }
        let service = service_connection(&sc.db);
        sc.write(200, Duration::from_millis(1));
        let (n0, _) = sc.caught_up(&mut r);
        sc.stop();
        let service = service_open.then_some(service);
        sc.write(50, Duration::from_millis(1));
        let wal = common::sidecars(&sc.db)[0].clone();
        assert_eq!(wal.exists(), service_open, "{}", wal.display());
        sc.start();
        // Nobody writes from here on.
        let (n1, s1) = sc.caught_up(&mut r);
        assert!(n1 > n0, "service open: {service_open}");
        assert_eq!(r.content_at(n1), s1);
        sc.stop();
        drop(service);
    }
}

#[test]
fn commits_the_replicator_did_not_see_made_refuse_a_time_inside_their_interval() {
    // Issue 22, finding 7: commits made just before a SIGKILL and while the
    // replicator was down were stamped with the restart time, and a restore
    // at a moment among them silently returned an older state.
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    let service = service_connection(&sc.db);
    sc.write(100, Duration::from_millis(1));
    let (n0, s0) = sc.caught_up(&mut r);
    let watched = common::now_ns();
    // Idle long enough to record that it watched past `watched`.
    std::thread::sleep(Duration::from_millis(2500));
    // Killed, not stopped: whatever it had not shipped is found again at
    // the next start.
    let mut rep = sc.rep.take().unwrap();
    kill(&mut rep.guard);
    sc.old_logs.push_str(&rep.text());
    std::thread::sleep(Duration::from_millis(300));
    let mut made = Vec::new();
    let c = open(&sc.db);
    for _ in 0..50 {
        commit_row(&c);
        made.push(common::now_ns());
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    std::thread::sleep(Duration::from_millis(1500));
    sc.start();
    let (n1, s1) = sc.caught_up(&mut r);
    assert_eq!(n1 - n0, 50);

    // Inside the interval: refused, naming it and the exact points around it.
    let t = rfc3339(made[24]);
    let (code, ev) = r
        .restore(&["--at", &t])
        .expect_err("a time the replicator did not watch is refused");
    assert_eq!((code, ev.as_str()), (65, "restore.uncertain"));
    let out = env.run(["restore", "--at", &t, "-o", s(&env.path("refused.db"))]);
    assert!(
        out.stderr.contains(&format!("--txid {n0}")) && out.stderr.contains(&format!("--txid {n1}")),
        "the fix names the exact points on either side: {}",
        out.stderr
    );
    // Before the kill and after the restart, exact as ever.
    let (p, out) = r.restore(&["--at", &rfc3339(watched)]).unwrap();
    assert_eq!(p.txid, n0);
    assert_eq!(content(&out), s0);
    let (p, out) = r.restore(&["--at", "now"]).unwrap();
    assert_eq!(p.txid, n1);
    assert_eq!(content(&out), s1);
    sc.stop();
    drop(service);
}

#[test]
fn a_gap_after_a_clean_stop_leaves_the_watched_stretch_restorable() {
    // Issue 22, finding 7: when the log was lost while the replicator was
    // stopped, a restore at a time it had been watching (after its last
    // commit, before its stop) was refused as a gap. It knows nothing was
    // committed then: that time restores the last commit; only the
    // stretch it did not watch is refused, and the refusal names times.
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    let service = service_connection(&sc.db);
    sc.write(100, Duration::from_millis(1));
    let (n0, s0) = sc.caught_up(&mut r);
    std::thread::sleep(Duration::from_millis(500));
    let watched = common::now_ns();
    std::thread::sleep(Duration::from_millis(500));
    sc.stop();
    // Its last close checkpoints the log into the database and deletes it:
    // what follows cannot be read from the log.
    drop(service);
    std::thread::sleep(Duration::from_millis(300));
    let unwatched = common::now_ns();
    sc.write(20, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(300));
    sc.start();
    let (n1, s1) = sc.caught_up(&mut r);
    assert!(
        bases(&env).iter().any(|b| b.1),
        "a base after the gap: {:?}",
        bases(&env)
    );

    let (p, out) = r
        .restore(&["--at", &rfc3339(watched)])
        .expect("a watched time restores");
    assert_eq!(p.txid, n0, "{p:?}");
    assert_eq!(content(&out), s0);
    let (code, ev) = r
        .restore(&["--at", &rfc3339(unwatched)])
        .expect_err("an unwatched time is refused");
    assert_eq!((code, ev.as_str()), (65, "restore.gap"));
    let out = env.run(["restore", "--at", &rfc3339(unwatched), "-o", s(&env.path("x.db"))]);
    assert!(
        out.stderr.contains("known until 20"),
        "the refusal names times: {}",
        out.stderr
    );
    assert_eq!(r.content_at(n1), s1);
    sc.stop();
}

#[test]
fn page_size_change_while_stopped() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    sc.write(300, Duration::from_millis(1));
    let (n0, s0) = sc.caught_up(&mut r);
    assert_eq!(s0.page_size, 4096);
    sc.stop();
    {
        let c = open(&sc.db);
        let mode: String = c.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        c.execute_batch("PRAGMA page_size=8192; VACUUM;").unwrap();
        let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }
    let s1 = content(&sc.db);
    assert_eq!(s1.page_size, 8192);
    assert_eq!(s1.hash, s0.hash, "rows unchanged by the page size change");
    let up = sc.start();
    assert_eq!(
        up.name, "replicate.base",
        "a new base after the page size changed: {up:?}"
    );
    let (n1, got) = sc.caught_up(&mut r);
    assert_eq!(got, s1);
    sc.write(100, Duration::from_millis(1));
    let (n2, s2) = sc.caught_up(&mut r);
    sc.stop();
    eprintln!("txids: {n0} (4096), {n1} base (8192), {n2}");
    let before = r.content_at(n0);
    assert_eq!(before, s0, "txid {n0}, before the change (4096-byte pages)");
    assert_eq!(r.content_at(n1), s1, "txid {n1}, the new base (8192-byte pages)");
    assert_eq!(r.content_at(n2), s2, "txid {n2}, after it");
    let source = source_rows(&sc.db);
    check_stretch(&mut r, n1, n2, 5, &source);
}

// ---------------------------------------------------------------- refusals

/// Run `c` (stdout and stderr to files) and wait up to `secs`: a refusal
/// that did not happen would otherwise replicate forever.
fn run_timeout(env: &Env, mut c: Command, secs: u64) -> Out {
    let what = format!("{c:?}");
    let out_p = env.path("run.stdout");
    let err_p = env.path("run.stderr");
    c.stdout(std::fs::File::create(&out_p).unwrap())
        .stderr(std::fs::File::create(&err_p).unwrap());
    let mut g = ChildGuard {
        child: c.spawn().unwrap_or_else(|e| panic!("cannot run {what}: {e}")),
    };
    let start = Instant::now();
    let code = loop {
        if let Some(_st) = g.child.try_wait().unwrap() {
            break common::wait_exit(&mut g.child, 1);
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!(
                "`{what}` still running after {secs}s; stderr:\n{}",
                std::fs::read_to_string(&err_p).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code,
        stdout: std::fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_p).unwrap_or_default(),
        what,
    }
}

fn replicate_cmd(env: &Env, json: bool, db: &Path) -> Command {
    let mut c = env.command();
    c.arg("--repo").arg(&env.repo_arg);
    if json {
        c.arg("--json");
    }
    c.arg("replicate").arg(db).args(["--sync-interval", SYNC]);
    c
}

#[test]
fn refuses_a_database_not_in_wal_mode() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("rollback.db");
    common::create_db(&db, 20, 50, false);
    let repo_before = common::describe_without_log(&env.repo);
    let out = run_timeout(&env, replicate_cmd(&env, false, &db), 30).expect_code(78);
    assert!(
        out.stderr.contains("lifeboat: error:") && out.stderr.contains("(event=replicate.not_wal)"),
        "stderr:\n{}",
        out.stderr
    );
    let out = run_timeout(&env, replicate_cmd(&env, true, &db), 30).expect_code(78);
    let err = &out.json()["error"];
    assert_eq!(err["event"], "replicate.not_wal", "{}", out.stdout);
    assert_eq!(err["exit_code"], 78);
    assert_eq!(
        common::describe_without_log(&env.repo),
        repo_before,
        "nothing written to the repository"
    );
    assert!(env.list().is_empty());
    let mode: String = open(&db).query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete", "the database was left in its journal mode");
}

#[test]
fn a_bad_interval_is_a_usage_error_on_the_command_line_and_a_config_error_in_the_file() {
    let env = Env::new();
    let db = env.path("app.db");
    create_replica_db(&db);
    let repo_before = common::describe_without_log(&env.repo);
    let mut c = env.command();
    c.arg("--repo").arg(&env.repo_arg);
    c.arg("replicate").arg(&db).args(["--sync-interval", "soon"]);
    let out = run_timeout(&env, c, 30).expect_code(64);
    assert!(out.stderr.contains("--sync-interval"), "stderr:\n{}", out.stderr);
    let cfg = env.path("lifeboat.toml");
    std::fs::write(&cfg, "[replicate]\nsnapshot_interval = \"0s\"\n").unwrap();
    let mut c = env.command();
    c.arg("--repo").arg(&env.repo_arg).arg("--config").arg(&cfg);
    c.arg("replicate").arg(&db);
    let out = run_timeout(&env, c, 30).expect_code(78);
    assert!(
        out.stderr.contains("[replicate] snapshot_interval"),
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(
        common::describe_without_log(&env.repo),
        repo_before,
        "nothing written to the repository"
    );
}

#[test]
fn refuses_a_database_on_tmpfs() {
    let _serial = common::serial();
    let env = Env::new();
    // A tmpfs of its own (the suite runs as root, as CI does): the test
    // never depends on what /dev/shm happens to be.
    let mnt = env.path("tmpfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs", s(&mnt)])
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root, as the suite runs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let db = mnt.join("app.db");
    create_replica_db(&db);
    let repo_before = common::describe_without_log(&env.repo);
    let out = run_timeout(&env, replicate_cmd(&env, false, &db), 30).expect_code(78);
    assert!(
        out.stderr.contains("(event=replicate.unsupported_filesystem)"),
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(
        common::describe_without_log(&env.repo),
        repo_before,
        "nothing written to the repository"
    );
}

#[test]
fn a_second_replicator_is_refused_while_the_first_keeps_working() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    sc.write(50, Duration::from_millis(1));
    let (n0, _) = sc.caught_up(&mut r);
    let out = run_timeout(sc.env, replicate_cmd(sc.env, false, &sc.db), 30).expect_code(75);
    assert!(out.stderr.contains("(event=replicate.busy)"), "stderr:\n{}", out.stderr);
    let out = run_timeout(sc.env, replicate_cmd(sc.env, true, &sc.db), 30).expect_code(75);
    assert_eq!(out.json()["error"]["event"], "replicate.busy");
    assert!(
        sc.rep.as_mut().unwrap().guard.still_running(),
        "the first replicator is still running"
    );
    sc.write(80, Duration::from_millis(2));
    let (n1, s1) = sc.caught_up(&mut r);
    assert_eq!(
        n1,
        n0 + 80,
        "the first replicator shipped every commit after the refusal"
    );
    sc.stop();
    let (_, now) = r.restore(&["--at", "now"]).expect("restore --at now");
    assert_eq!(content(&now), s1);
}

// ---------------------------------------------------------------- --exec

#[test]
fn exec_runs_the_service_and_exits_with_its_status() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_replica_db(&db);
    let exe = std::env::current_exe().unwrap();
    let service = format!(
        "'{}' replica_writer_child --exact --nocapture --test-threads=1",
        exe.display()
    );
    let rows = 300;
    let mut c = replicate_cmd(&env, false, &db);
    c.arg("-v").args(["--exec", &service]);
    c.env(common::RW_DB, &db)
        .env(common::RW_ROWS, rows.to_string())
        .env(common::RW_EXIT, "3")
        .env(common::RW_PAUSE_US, "2000")
        // The service starts writing once the first base is taken, so every
        // row travels as a commit of the stream.
        .env(common::RW_WAIT_STATE, env.xdg_state.join("lifeboat/replicate"));
    let out = run_timeout(&env, c, 90);
    assert_eq!(
        out.code, 3,
        "lifeboat exits with the service's status; stderr:\n{}",
        out.stderr
    );
    let evs = parse_events(&out.stderr);
    let exited: Vec<&LogEvent> = evs.iter().filter(|e| e.name == "replicate.child_exited").collect();
    assert_eq!(exited.len(), 1, "stderr:\n{}", out.stderr);
    assert_eq!(exited[0].get("status"), Some("3"));
    assert!(count(&evs, "replicate.shipped") >= 1, "stderr:\n{}", out.stderr);

    let source = content(&db);
    assert_eq!((source.rows, source.max_id), (rows, rows));
    let mut r = Restorer::new(&env, "restored");
    let (p, restored) = r.restore(&["--at", "now"]).expect("restore --at now");
    assert_eq!(integrity(&restored), "ok");
    assert_eq!(
        content(&restored),
        source,
        "the restore holds every row the service wrote"
    );
    assert_eq!(p.commits_applied, rows as u64, "every row came as a commit: {p:?}");
    assert_eq!(p.txid, p.base_txid + rows as u64);

    // Signals reach the service; lifeboat exits with its status.
    let mut c = replicate_cmd(&env, false, &db);
    c.arg("-v").args(["--exec", "sleep 60"]);
    let log = env.path("exec-signal.log");
    c.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let mut g = ChildGuard {
        child: c.spawn().unwrap(),
    };
    wait_until("the replicator to be up", 60, || {
        up_event(&parse_events(&std::fs::read_to_string(&log).unwrap_or_default())).is_some()
    });
    let t0 = Instant::now();
    common::signal(&g.child, libc::SIGTERM);
    let code = common::wait_exit(&mut g.child, 30);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        code,
        128 + libc::SIGTERM,
        "status of the service killed by the forwarded SIGTERM; log:\n{text}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "stopped promptly");
    assert!(
        text.contains("event=\"replicate.child_exited\" status=143"),
        "log:\n{text}"
    );
}

// ------------------------------------------------ --if-db-not-exists etc.

#[test]
fn restore_if_db_not_exists_and_if_replica_exists() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    sc.write(60, Duration::from_millis(1));
    let (n, want) = sc.caught_up(&mut r);
    sc.stop();

    // --if-db-not-exists: an existing -o file is left alone, exit 0...
    let existing = env.path("existing.db");
    std::fs::write(&existing, b"not touched").unwrap();
    let before = common::node(&existing);
    for target in [vec!["--at", "now"], vec!["--txid", "3"], vec![]] {
        let mut args = vec!["restore", "--if-db-not-exists"];
        args.extend(&target);
        args.extend(["-o", s(&existing)]);
        env.ok(&args);
        assert_eq!(
            common::node(&existing),
            before,
            "restore {target:?} --if-db-not-exists touched it"
        );
        // ...and refused (73) without the flag.
        let mut args = vec!["--json", "restore"];
        args.extend(&target);
        args.extend(["-o", s(&existing)]);
        let out = env.run(&args).expect_code(73);
        assert_eq!(error_event(&out), "restore.target_not_empty");
        assert_eq!(common::node(&existing), before);
    }
    // A missing -o file is restored as usual.
    let fresh = env.path("fresh.db");
    env.ok(["restore", "--if-db-not-exists", "--at", "now", "-o", s(&fresh)]);
    assert_eq!(content(&fresh), want);

    // --if-replica-exists: with a replica it restores as usual...
    let fresh2 = env.path("fresh2.db");
    env.ok([
        "restore",
        "--if-replica-exists",
        "--txid",
        &n.to_string(),
        "-o",
        s(&fresh2),
    ]);
    assert_eq!(content(&fresh2), want);

    // ...with a repository that holds no base, nothing is done (exit 0)...
    let empty = Env::new();
    let out = empty.path("out.db");
    for target in [vec!["--at", "now"], vec!["--txid", "5"], vec![]] {
        let mut args = vec!["restore", "--if-replica-exists"];
        args.extend(&target);
        args.extend(["-o", s(&out)]);
        empty.ok(&args);
        assert!(
            !out.exists(),
            "restore {target:?} --if-replica-exists created {}",
            out.display()
        );
        // ...which without the flag is refused (66).
        let mut args = vec!["--json", "restore"];
        args.extend(&target);
        args.extend(["-o", s(&out)]);
        let o = empty.run(&args).expect_code(66);
        let ev = error_event(&o);
        let want = if target.first() == Some(&"--txid") {
            "restore.no_replica"
        } else {
            "restore.no_snapshot"
        };
        assert_eq!(ev, want, "restore {target:?} in an empty repository");
        assert!(!out.exists());
    }
    // An ordinary snapshot is a backup, though no replica to replay: the
    // service as of now is that snapshot.
    let plain = empty.path("plain.db");
    common::create_db(&plain, 5, 10, true);
    empty.snapshot(&[&plain]);
    empty.ok(["restore", "--if-replica-exists", "--txid", "5", "-o", s(&out)]);
    assert!(!out.exists());
    let o = empty
        .run(["--json", "restore", "--txid", "5", "-o", s(&out)])
        .expect_code(66);
    assert_eq!(error_event(&o), "restore.no_replica");
    empty.ok(["restore", "--if-replica-exists", "--at", "now", "-o", s(&out)]);
    assert_eq!(content(&out), content(&plain));
    std::fs::remove_file(&out).unwrap();

    // ...and so with no repository at all.
    let none = Env::bare();
    none.ok(["restore", "--if-replica-exists", "--at", "now", "-o", s(&out)]);
    assert!(!out.exists());
    let o = none
        .run(["--json", "restore", "--at", "now", "-o", s(&out)])
        .expect_code(66);
    assert_eq!(error_event(&o), "repo.not_found");
}

/// Two replicas (the repository and a second local one) and folded bases
/// every second: both replicas hold folds, and restores from either, at
/// the same txids, are byte-identical, pass integrity_check and hold
/// exactly the rows committed by then; the latest equals the source.
#[test]
fn two_replicas_and_folded_bases_agree() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let second = env.path("second-repo");
    env.run_bare(["--repo", s(&second), "init"]).expect_code(0);
    let config = format!(
        "[replicate]\nreplicas = [{:?}, {:?}]\nsync_interval = \"200ms\"\nsnapshot_interval = \"1s\"\n",
        env.repo_arg,
        s(&second)
    );
    let mut sc = Scene::new(&env, Some(&config));
    for _ in 0..3 {
        sc.write(150, Duration::from_millis(3));
        std::thread::sleep(Duration::from_millis(1200));
    }
    let mut r = Restorer::new(&env, "restored");
    let (newest, want) = sc.caught_up(&mut r);
    // Another interval, so the last rows are folded too.
    std::thread::sleep(Duration::from_millis(1500));
    sc.stop();
    let evs = sc.events();
    let folds = count(&evs, "replicate.folded");
    assert!(folds >= 4, "folds in both replicas (got {folds})");
    assert_eq!(count(&evs, "replicate.gap"), 0, "no gap");
    let source = source_rows(&sc.db);
    let restore = |repo: &str, target: &[&str], out: &Path| {
        let mut args = vec!["--repo", repo, "--json", "restore"];
        args.extend_from_slice(target);
        args.extend(["-o", s(out)]);
        let o = env.run_bare(&args).expect_code(0);
        point_of(&o)
    };
    for (i, n) in [1, newest / 4, newest / 2, newest * 3 / 4, newest]
        .into_iter()
        .enumerate()
    {
        let n = n.max(1);
        let a = env.path(&format!("a{i}.db"));
        let b = env.path(&format!("b{i}.db"));
        let pa = restore(&env.repo_arg, &["--txid", &n.to_string()], &a);
        let pb = restore(s(&second), &["--txid", &n.to_string()], &b);
        assert_eq!((pa.txid, pb.txid), (n, n), "both land on txid {n}");
        assert_eq!(
            common::blake3_file(&a),
            common::blake3_file(&b),
            "txid {n}: the two replicas restore different files"
        );
        check_prefix(&a, &source, &format!("txid {n}"));
    }
    let latest = env.path("latest.db");
    let p = restore(s(&second), &["--at", "now"], &latest);
    assert_eq!(p.txid, newest, "the second replica reaches the newest txid");
    assert!(
        p.base_txid > 1,
        "the latest restore starts from a fold, not the first base"
    );
    assert_eq!(
        content(&latest),
        want,
        "latest restore of the second replica equals the source"
    );
    for repo in [env.repo_arg.as_str(), s(&second)] {
        let list = env
            .run_bare(["--repo", repo, "--json", "list", "--all"])
            .expect_code(0)
            .json();
        let folded = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "folded")))
            .count();
        assert!(folded >= 2, "{repo} lists folded bases ({folded})");
    }
}

// ------------------------------------------------ one meaning of a point

/// After `replicate` has shipped commits past the newest snapshot, a plain
/// `restore` (and `restore latest`) gives the newest commit, not the
/// snapshot nor a base; `--to DIR` brings back every source of the service,
/// each at DIR + its own absolute path; `-o` without `--only` among several
/// databases is a usage error; a mistyped `--only` is an error even with
/// `--if-db-not-exists --if-replica-exists`; `list` hides bases.
#[test]
fn latest_means_the_newest_point_of_every_source() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let other = env.path("data/other.db");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    common::create_db(&other, 20, 50, true);
    let files = env.path("data/files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("sub/a.txt"), b"tenant a").unwrap();
    let cfg_text = "[[sqlite]]\npath = \"data/app.db\"\n\n[[sqlite]]\npath = \"data/other.db\"\n\n[[directory]]\npath = \"data/files\"\n";
    let mut sc = Scene::new(&env, Some(cfg_text));
    let cfg = env.path("lifeboat.toml");
    let mut r = Restorer::new(&env, "restored");
    sc.write(10, Duration::from_millis(1));
    let snap = env.ok(["--config", s(&cfg), "snapshot"]).stdout;
    let snap_id = snap.lines().last().unwrap().trim().to_string();
    // Commits after the snapshot, shipped by the replicator.
    sc.write(150, Duration::from_millis(1));
    let (n, want) = sc.caught_up(&mut r);
    sc.stop();
    assert!(n > 150, "txid {n}");

    for spec in [&[][..], &["latest"][..]] {
        let out = env.path(&format!("plain-{}.db", spec.len()));
        let mut args = vec!["--json", "--config", s(&cfg), "restore"];
        args.extend_from_slice(spec);
        args.extend(["--only", "app.db", "-o", s(&out)]);
        let o = env.ok(&args);
        assert_eq!(content(&out), want, "restore {spec:?} gives the newest commit");
        let v = o.json();
        assert_eq!(v["restored"][0]["point"]["txid"].as_u64(), Some(n), "{v}");
        assert!(v["restored"][0]["age_seconds"].as_i64().is_some(), "{v}");
    }

    // -o among two databases, no --only: 64, naming both.
    let o = env
        .run(["--json", "--config", s(&cfg), "restore", "-o", s(&env.path("which.db"))])
        .expect_code(64);
    assert_eq!(error_event(&o), "restore.which_database");
    let msg = o.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("app.db") && msg.contains("other.db"), "{msg}");

    // The whole service into a drill directory, each source where it was.
    let drill = env.path("drill");
    let o = env.ok(["--json", "--config", s(&cfg), "restore", "--to", s(&drill)]);
    let v = o.json();
    let restored = v["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 3, "every source of the service: {v}");
    assert_eq!(
        content(&common::under(&drill, &sc.db)),
        want,
        "the database at its newest commit"
    );
    assert_eq!(
        common::integrity(&common::under(&drill, &other)),
        "ok",
        "the other database, from the snapshot"
    );
    assert_eq!(
        std::fs::read(common::under(&drill, &files).join("sub/a.txt")).unwrap(),
        b"tenant a"
    );
    for r in restored {
        let from_snapshot = r["snapshot"].as_str() == Some(snap_id.as_str());
        match r["name"].as_str().unwrap() {
            "app.db" => assert!(!from_snapshot && r["point"]["txid"] == n, "{r}"),
            _ => assert!(from_snapshot && r.get("point").is_none(), "{r}"),
        }
    }
    // Exactly that snapshot, by id: the database as it was then.
    let then = env.path("then.db");
    env.ok(["restore", &snap_id, "--only", "app.db", "-o", s(&then)]);
    assert_eq!(common::replica_rows(&then).len(), 10);

    // A mistyped --only is never "nothing to do".
    let existing = env.path("existing.db");
    std::fs::write(&existing, b"x").unwrap();
    let o = env
        .run([
            "--json",
            "--config",
            s(&cfg),
            "restore",
            "--only",
            "app.bd",
            "--if-db-not-exists",
            "--if-replica-exists",
            "-o",
            s(&existing),
        ])
        .expect_code(64);
    assert_eq!(error_event(&o), "restore.no_such_source");
    assert_eq!(std::fs::read(&existing).unwrap(), b"x");

    // `list` shows the service's snapshots; bases only with --all.
    let listed = env.ok(["--json", "list"]).json();
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["full"], "{listed}");
    let all = env.list();
    assert!(all.iter().any(|m| m["kind"] == "base"), "--all shows the bases");
}

// --------------------------------------------------------- verify the WAL

/// Finding 5: `verify --read-data` did not read WAL segments; a flipped
/// byte in a shipped segment passed, and only a restore through it failed.
/// Now every segment is read (or a random share with
/// `--read-data-subset`), and a missing one is found even without reading.
#[test]
fn verify_reads_every_wal_segment_and_names_the_commits_lost() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "scene");
    let mut sc = Scene::new(&env, None);
    let mut r = Restorer::new(&env, "restored");
    for _ in 0..3 {
        sc.write(20, Duration::from_millis(1));
        sc.caught_up(&mut r);
    }
    sc.stop();
    env.ok(["verify", "--read-data"]);
    let mut segs: Vec<PathBuf> = walk_files(&env.repo.join("wal"));
    segs.sort();
    assert!(segs.len() >= 3, "three bursts, three segments at least: {segs:?}");
    let middle = &segs[segs.len() / 2];
    let mut raw = std::fs::read(middle).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x40;
    std::fs::write(middle, raw).unwrap();

    env.ok(["verify"]);
    for args in [
        &["verify", "--read-data"][..],
        &["verify", "--read-data-subset", "100%"][..],
    ] {
        let out = env.run(args).expect_code(65);
        assert!(
            out.stdout.contains("database app.db") && out.stdout.contains("commits "),
            "{args:?} names the database and the commits:\n{}",
            out.stdout
        );
    }
    env.run(["verify", "--read-data-subset", "0%"]).expect_code(64);

    // A segment gone from the middle of the chain: found without reading.
    std::fs::remove_file(middle).unwrap();
    let out = env.run(["verify"]).expect_code(65);
    assert!(out.stdout.contains("missing from the stream"), "{}", out.stdout);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else if p.file_name().unwrap().to_string_lossy().contains('-') {
            out.push(p);
        }
    }
    out
}

// ------------------------------------------------------- many databases

/// `N` WAL databases under `data/`, each with a different number of
/// commits, and a config naming them all as `[[sqlite]]` sources.
fn many_databases(env: &Env, n: usize) -> (Vec<(String, PathBuf)>, PathBuf) {
    let mut config = format!("[replicate]\nsync_interval = \"{SYNC}\"\n");
    let mut dbs = Vec::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    for i in 0..n {
        let name = format!("db{i:02}");
        let db = env.path(&format!("data/{name}.db"));
        create_replica_db(&db);
        let c = open(&db);
        for _ in 0..(3 + i % 7) {
            commit_row(&c);
        }
        config.push_str(&format!("[[sqlite]]\nname = \"{name}\"\npath = \"{}\"\n", s(&db)));
        dbs.push((name, db));
    }
    let cfg = env.path("lifeboat.toml");
    std::fs::write(&cfg, config).unwrap();
    (dbs, cfg)
}

/// `lifeboat [--json] -v replicate` over every `[[sqlite]]` of `cfg`,
/// stdout and stderr to files.
fn start_many(env: &Env, cfg: &Path, json: bool) -> (ChildGuard, PathBuf, PathBuf) {
    let (out, log) = (env.path("replicate.stdout"), env.path("replicate.log"));
    let mut c = env.command();
    c.arg("--repo").arg(&env.repo_arg).arg("--config").arg(cfg).arg("-v");
    if json {
        c.arg("--json");
    }
    c.arg("replicate")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let guard = ChildGuard {
        child: c.spawn().expect("spawn lifeboat replicate"),
    };
    (guard, out, log)
}

/// Lines where a replicator reports its own repository lock as taken.
fn own_lock_refusals(log: &str, pid: u32) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("repository in use") && l.contains(&format!("pid {pid} ")))
        .collect()
}

/// One replicator for thirty databases: every database gets its base
/// without the replicator refusing itself the repository lock (it used to
/// put a refused base off for 10 s, 20 s, 40 s…), every commit made
/// before and while it runs is shipped, and each database restores at its
/// newest commit by name.
#[test]
fn one_replicator_for_many_databases_never_refuses_itself() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "many");
    let (dbs, cfg) = many_databases(&env, 30);
    let (mut guard, _, log_path) = start_many(&env, &cfg, false);
    let pid = guard.child.id();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Bounded generously for a loaded machine; the assertions are about
    // refusals and restores, not time.
    wait_until("a base of every database", 60, || {
        let text = log();
        let refused = own_lock_refusals(&text, pid);
        assert!(
            refused.is_empty(),
            "the replicator refused itself the repository lock:\n{}",
            refused.join("\n")
        );
        assert!(guard.still_running(), "the replicator exited; log:\n{text}");
        let evs = parse_events(&text);
        dbs.iter().all(|(name, _)| {
            evs.iter()
                .any(|e| e.name == "replicate.base" && e.get("db") == Some(name.as_str()))
        })
    });
    // Commits while it runs, to every database.
    for (_, db) in &dbs {
        let c = open(db);
        for _ in 0..3 {
            commit_row(&c);
        }
    }
    common::signal(&guard.child, libc::SIGINT);
    let code = common::wait_exit(&mut guard.child, 90);
    let text = log();
    assert_eq!(code, 0, "replicator exited {code}; log:\n{text}");
    assert_eq!(own_lock_refusals(&text, pid), Vec::<&str>::new());
    let evs = parse_events(&text);
    assert_eq!(count(&evs, "replicate.base_failed"), 0, "log:\n{text}");
    assert_eq!(count(&evs, "replicate.unshipped"), 0, "log:\n{text}");
    for (name, db) in &dbs {
        let out = env.path(&format!("restored-{name}.db"));
        let o = env
            .run(["--json", "restore", "--at", "now", "--only", name, "-o", s(&out)])
            .expect_code(0);
        // The base is txid 1; the three commits after it, 2 to 4.
        assert_eq!(point_of(&o).txid, 4, "{name}: {}", o.stdout);
        assert_eq!(content(&out), content(db), "{name} restores at its newest commit");
    }
}

/// `replicate --json`: one JSON object per line on stdout: started (with
/// the databases and replicas), a base for each database, and after
/// SIGINT a last `replicate.stopped` line with each database's totals.
#[test]
fn replicate_json_reports_start_bases_and_totals() {
    let _serial = common::serial();
    let env = Env::new();
    let (dbs, cfg) = many_databases(&env, 3);
    let (mut guard, out_path, log_path) = start_many(&env, &cfg, true);
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
            .collect()
    };
    let based = |v: &[serde_json::Value]| {
        dbs.iter().all(|(n, _)| {
            v.iter()
                .any(|l| l["event"] == "replicate.base" && l["db"] == n.as_str())
        })
    };
    wait_until("a base line for every database", 60, || {
        assert!(
            guard.still_running(),
            "exited; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        based(&lines())
    });
    let c = open(&dbs[0].1);
    for _ in 0..4 {
        commit_row(&c);
    }
    common::signal(&guard.child, libc::SIGINT);
    assert_eq!(common::wait_exit(&mut guard.child, 90), 0);
    let v = lines();
    let first = &v[0];
    assert_eq!(first["event"], "replicate.started", "{first}");
    assert_eq!(first["pid"], guard.child.id());
    let replicas = first["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{first}");
    let replica = &replicas[0];
    if !env.is_s3() {
        assert_eq!(replica, env.repo_arg.as_str());
    }
    let names: Vec<&str> = first["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db00", "db01", "db02"]);
    for (n, _) in &dbs {
        let f = v
            .iter()
            .find(|l| l["event"] == "replicate.following" && l["db"] == n.as_str())
            .unwrap_or_else(|| panic!("no replicate.following for {n}: {v:?}"));
        assert_eq!(f["resumed"], false);
        let b = v
            .iter()
            .find(|l| l["event"] == "replicate.base" && l["db"] == n.as_str())
            .unwrap();
        assert_eq!(&b["replica"], replica);
        assert_eq!(b["txid"], 1, "{b}");
        assert_eq!(b["snapshot"].as_str().unwrap().len(), 64, "{b}");
    }
    let last = v.last().unwrap();
    assert_eq!(last["event"], "replicate.stopped", "{last}");
    assert_eq!(last["exit_code"], 0);
    let totals = last["databases"].as_array().unwrap();
    assert_eq!(totals.len(), 3, "{last}");
    let db0 = totals.iter().find(|d| d["db"] == "db00").unwrap();
    assert_eq!(db0["commits"], 4, "{db0}");
    assert_eq!(db0["txid"], 5, "{db0}");
    assert_eq!(db0["bases"], 1, "{db0}");
    assert_eq!(db0["gaps"], 0, "{db0}");
    assert_eq!(db0["unshipped"], serde_json::json!([]), "{db0}");
    assert_eq!(&last["replicas"][0]["replica"], replica);
    assert!(last["replicas"][0]["requests"]["put"].is_u64(), "{last}");
}

/// Idle databases leave their heartbeat to the replicator's one thread,
/// which records it for all of them in one file without waking their
/// followers. Killed after an idle spell, the replicator still knows it
/// watched every database until shortly before: a restore at a moment of
/// that spell is exact for each, and one among the commits made while it
/// was down is refused.
#[test]
fn idle_databases_killed_are_dated_from_the_shared_heartbeat() {
    let _serial = common::serial();
    let env = Env::new();
    let _keep = common::KeepOnFailure(&env, "many");
    let (dbs, cfg) = many_databases(&env, 5);
    // Services keep their connections, so what is committed while the
    // replicator is down waits in the logs.
    let services: Vec<_> = dbs.iter().map(|(_, db)| service_connection(db)).collect();
    let (mut guard, _, log_path) = start_many(&env, &cfg, false);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("a base of every database", 60, || {
        assert!(guard.still_running(), "the replicator exited; log:\n{}", log());
        let evs = parse_events(&log());
        dbs.iter().all(|(name, _)| {
            evs.iter()
                .any(|e| e.name == "replicate.base" && e.get("db") == Some(name.as_str()))
        })
    });
    let watched = common::now_ns();
    // Idle long enough for the heartbeat to record past `watched`.
    std::thread::sleep(Duration::from_millis(2500));
    kill(&mut guard);
    std::thread::sleep(Duration::from_millis(300));
    let mut made = Vec::new();
    for (_, db) in &dbs {
        let c = open(db);
        for _ in 0..3 {
            commit_row(&c);
            std::thread::sleep(Duration::from_millis(5));
        }
        made.push(common::now_ns());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (mut guard, _, log_path) = start_many(&env, &cfg, false);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("the commits made while down shipped", 60, || {
        assert!(guard.still_running(), "the replicator exited; log:\n{}", log());
        count(&parse_events(&log()), "replicate.shipped") >= dbs.len()
    });
    common::signal(&guard.child, libc::SIGINT);
    assert_eq!(common::wait_exit(&mut guard.child, 90), 0, "log:\n{}", log());
    for ((name, db), made) in dbs.iter().zip(made) {
        let out = env.path(&format!("watched-{name}.db"));
        let o = env
            .run([
                "--json",
                "restore",
                "--at",
                &rfc3339(watched),
                "--only",
                name,
                "-o",
                s(&out),
            ])
            .expect_code(0);
        assert_eq!(point_of(&o).txid, 1, "{name}: the base, watched past it: {}", o.stdout);
        let out = env.path(&format!("down-{name}.db"));
        env.run(["restore", "--at", &rfc3339(made - 1), "--only", name, "-o", s(&out)])
            .expect_code(65);
        let out = env.path(&format!("now-{name}.db"));
        env.run(["restore", "--at", "now", "--only", name, "-o", s(&out)])
            .expect_code(0);
        assert_eq!(content(&out), content(db), "{name} restores at its newest commit");
    }
    drop(services);
}
