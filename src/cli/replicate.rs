//! `lifeboat replicate`: one [`lifeboat::replicate::run`] thread per database
//! (named or configured), the replicas they ship to, `--exec` of the service,
//! and stopping on signals.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::{Config, ReplicateConfig, file_name};
use lifeboat::duration::parse_duration;
use lifeboat::replicate::{self, DbSpec, Notice, Notify, Options, Target};
use lifeboat::repo::Repository;
use lifeboat::sqlite::capture::DEFAULT_SCHEMA_QUERY;
use lifeboat::{Error, Result};

use super::{Ctx, flag_or_config};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Runs in the foreground until SIGINT or SIGTERM, then ships what it has read and exits 0.
Every committed transaction reaches each replica within --sync-interval, with its transaction
id and the time it was seen, so `lifeboat restore --txid N` or `--at TIME` can land on any one.

It keeps a read transaction open so no checkpoint can overwrite frames it has not shipped, runs
checkpoints itself (PASSIVE; TRUNCATE when the log grows very large), and takes a new verified
base whenever continuity cannot be proven (log reset underneath, database replaced, its own
crash with the log gone). Gaps are logged (event replicate.gap) and refused by restore.

History is kept until `lifeboat forget` removes it: schedule `forget --keep-wal 24h ...`
(24h is its default with snapshot rules) to keep every commit of the last day and, before
that, the bases its rules keep.

Examples:
  lifeboat replicate /var/lib/app/app.db
  lifeboat replicate --replica s3://bucket/app?region=eu-west-1 --replica /mnt/usb/repo
  lifeboat replicate --exec \"/usr/bin/app serve\"      # run the service as a child

One process replicates any number of databases: list them, or let it take every [[sqlite]] of
the config. Its bases take turns at each repository; another process writing there (a snapshot,
a prune) is waited for (replicate.lock_wait) up to a minute, then tried again later.

With --json, stdout carries one JSON object per line, each naming its event:
  replicate.started      pid, databases [{name, path}], replicas, sync_interval_ms
  replicate.following    db, path, stream, txid, resumed (per database, once it is followed)
  replicate.base         db, replica, snapshot, txid, after_gap, ms (restorable from here on)
  replicate.base_failed  db, replica, error, retry_in_s
  replicate.gap          db, reason, after_txid (commits after it may be missing)
  replicate.folded       db, replica, snapshot, txid
  replicate.stopped      databases [{db, txid, commits, bases, gaps, unshipped}],
                         replicas [{replica, requests}], exit_code (always the last line)
An error that stops it is printed as {\"error\": ...} instead of replicate.stopped.

Refused: databases not in WAL mode (replicate.not_wal, 78), on NFS/tmpfs/ramfs/SMB
(replicate.unsupported_filesystem, 78), or already being replicated (replicate.busy, 75).")]
pub struct Args {
    /// Databases (default: every [[sqlite]] of the config).
    dbs: Vec<PathBuf>,
    /// Repository to ship to (repeatable). Default: the config's [replicate] replicas, else
    /// the repository (--repo).
    #[arg(long = "replica", value_name = "URL_OR_PATH")]
    replicas: Vec<String>,
    /// Longest a commit waits before it is in every replica (default 1s). Each interval with
    /// commits costs one upload per replica: at 1s on S3 a little over 3,600 PUTs an hour of writes.
    #[arg(long, value_name = "DURATION")]
    sync_interval: Option<String>,
    /// How often a new base is folded from the shipped commits (default 1h): a point-in-time
    /// restore replays at most this much history. The database is not read again for it.
    #[arg(long, value_name = "DURATION")]
    snapshot_interval: Option<String>,
    /// Run this command as a child (through /bin/sh), forward signals to it, stop after it
    /// exits (shipping everything first) and exit with its status.
    #[arg(long, value_name = "\"CMD ARGS\"")]
    exec: Option<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

fn install_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    // Before any connection is opened; see there.
    replicate::lean_page_cache();
    let config = ctx.config()?;
    let section = config.map(|c| c.replicate.clone()).unwrap_or_default();
    let dbs = databases(config, &args.dbs)?;
    for d in &dbs {
        super::require_exists(&d.path)?;
        replicate::check_supported(&d.path)?;
    }

    let mut opts = options(&args, &section, ctx.dirs().replication_state_dir())?;

    let replicas = ctx.replica_locations(&args.replicas, &section.replicas)?;
    // Each must exist; the default repository is created on first use.
    for loc in replicas.iter().filter(|l| l.is_default) {
        drop(Repository::open_or_init_default(loc)?.locked("replicate")?);
    }
    // One handle per repository for every database: uploads share it, and
    // bases take turns at it rather than refuse each other.
    let targets: Vec<Arc<Target>> = replicas.iter().map(Target::open).collect::<Result<_>>()?;
    let stopped: Arc<Mutex<Vec<Notice>>> = Arc::default();
    if ctx.json {
        opts.notify = json_notices(&dbs, &targets, &opts, Arc::clone(&stopped));
    }
    let gap_hook_failed = Arc::new(Mutex::new(None));
    opts.notify = gap_hooks(
        super::hooks::Hooks::new(ctx),
        opts.notify.clone(),
        Arc::clone(&gap_hook_failed),
    );
    install_handlers();
    let mut child = start_child(args.exec.as_deref())?;
    if !ctx.quiet && !ctx.json {
        let names: Vec<String> = replicas.iter().map(|r| r.display()).collect();
        for d in &dbs {
            eprintln!("replicating {} to {}", d.path.display(), names.join(", "));
        }
    }

    let (failure, status) = replicate_all(dbs, &targets, &opts, &mut child);
    let mut requests = Vec::new();
    for t in &targets {
        let r = t.segments.requests();
        tracing::info!(event = "replicate.requests", replica = %t.name, put = r.put, get = r.get, list = r.list, head = r.head, delete = r.delete);
        requests.push(serde_json::json!({"replica": t.name, "requests": r}));
    }
    if let Some(e) = failure {
        if let Some(mut c) = child {
            // SAFETY: as above.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
        return Err(e);
    }
    if ctx.json {
        print_stopped(&stopped, requests, status);
    }
    if let Some(e) = gap_hook_failed.lock().expect("gap hook").take()
        && status == 0
    {
        return Ok(super::exit::report_line(&e));
    }
    Ok(status)
}

/// The databases to follow: those named, else every [[sqlite]] of the
/// config, with the config's schema query where it gives one.
fn databases(config: Option<&Config>, paths: &[PathBuf]) -> Result<Vec<DbSpec>> {
    Ok(if paths.is_empty() {
        let c = config.ok_or_else(Config::not_found_error)?;
        let dbs: Vec<DbSpec> = c
            .sqlite
            .iter()
            // `replicate = false` opts a source out of continuous shipping.
            .filter(|s| s.replicate != Some(false))
            .map(|s| DbSpec {
                name: s.name.clone().unwrap_or_else(|| file_name(&s.path)),
                path: s.path.clone(),
                schema_query: s.schema_version.clone().unwrap_or_else(|| DEFAULT_SCHEMA_QUERY.into()),
            })
            .collect();
        if dbs.is_empty() {
            return Err(Error::usage("nothing to replicate")
                .fix("name databases on the command line or [[sqlite]] sources in the config"));
        }
        dbs
    } else {
        paths
            .iter()
            .map(|p| {
                let schema_query = config
                    .and_then(|c| c.sqlite.iter().find(|s| &s.path == p))
                    .and_then(|s| s.schema_version.clone())
                    .unwrap_or_else(|| DEFAULT_SCHEMA_QUERY.into());
                DbSpec {
                    name: file_name(p),
                    path: p.clone(),
                    schema_query,
                }
            })
            .collect()
    })
}

/// The replication options: flags, else the config's [replicate] section,
/// else the defaults.
fn options(args: &Args, section: &ReplicateConfig, state_dir: PathBuf) -> Result<Options> {
    let mut opts = Options {
        state_dir,
        ..Options::default()
    };
    if let Some(d) = flag_or_config(
        ("--sync-interval", args.sync_interval.as_deref()),
        ("[replicate] sync_interval", section.sync_interval.as_deref()),
        parse_duration,
    )? {
        opts.sync_interval = d;
    }
    if let Some(s) = section.checkpoint_interval.as_deref() {
        opts.checkpoint_interval = parse_duration("[replicate] checkpoint_interval", s)?;
    }
    if let Some(n) = section.checkpoint_pages {
        opts.restart_frames = n.max(1);
    }
    if let Some(n) = section.truncate_pages {
        opts.truncate_frames = n.max(opts.restart_frames);
    }
    if let Some(d) = flag_or_config(
        ("--snapshot-interval", args.snapshot_interval.as_deref()),
        ("[replicate] snapshot_interval", section.snapshot_interval.as_deref()),
        parse_duration,
    )? {
        opts.snapshot_interval = d;
    }
    if let Some(d) = section.state_dir.clone() {
        opts.state_dir = d;
    }
    // Commits are stamped with the time they are seen, so the poll interval
    // bounds how late a stamp can be; a poll costs two small reads.
    opts.poll_interval = (opts.sync_interval / 100).clamp(Duration::from_millis(2), Duration::from_millis(20));
    Ok(opts)
}

/// With --json: one line per notice, the start held back until every
/// database is followed; the stop notices kept in `stopped` for the last
/// line.
fn json_notices(dbs: &[DbSpec], targets: &[Arc<Target>], opts: &Options, stopped: Arc<Mutex<Vec<Notice>>>) -> Notify {
    let started = serde_json::json!({
        "event": "replicate.started",
        "pid": std::process::id(),
        "databases": dbs.iter().map(|d| serde_json::json!({"name": d.name, "path": d.path})).collect::<Vec<_>>(),
        "replicas": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "sync_interval_ms": opts.sync_interval.as_millis() as u64,
    });
    // Held back until every database is followed: a refusal at start
    // (not WAL, already replicated) is then the only JSON printed, as
    // for every other command.
    let early = Mutex::new((dbs.len(), Some(started), Vec::new()));
    Notify::new(move |n| {
        if let Notice::Stopped { .. } = n {
            stopped.lock().expect("stopped").push(n);
            return;
        }
        let mut early = early.lock().expect("json lines");
        let (waiting, started, held) = &mut *early;
        if started.is_none() {
            return json_line(&n);
        }
        if let Notice::Following { .. } = n {
            *waiting -= 1;
        }
        held.push(n);
        if *waiting == 0 {
            json_line(&started.take());
            for n in held.drain(..) {
                json_line(&n);
            }
        }
    })
}

/// `[[hook]]`s on `replicate.gap` fired for each gap, on a thread of their
/// own (a notice must return quickly), then `inner` told; the first
/// failure of a hook with `policy = "fail"` kept in `failed`, for the exit
/// code.
fn gap_hooks(hooks: super::hooks::Hooks, inner: Notify, failed: Arc<Mutex<Option<Error>>>) -> Notify {
    use super::hooks::{EventInfo, HookEvent};
    Notify::new(move |n| {
        if let Notice::Gap { db, reason, .. } = &n {
            let info = EventInfo {
                error: Some(format!("{db}: {reason}")),
                source: Some(db.clone()),
                ..Default::default()
            };
            let (hooks, failed) = (hooks.clone(), Arc::clone(&failed));
            let _ = std::thread::Builder::new().name("gap-hooks".into()).spawn(move || {
                if let Err(e) = hooks.fire(HookEvent::ReplicateGap, &info) {
                    failed.lock().expect("gap hook").get_or_insert(e);
                }
            });
        }
        inner.send(n);
    })
}

/// The --exec child, started through /bin/sh.
fn start_child(exec: Option<&str>) -> Result<Option<std::process::Child>> {
    Ok(match exec {
        Some(cmd) => Some(
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("exec {cmd}"))
                .spawn()
                .map_err(|e| Error::no_input(cmd, format!("cannot start: {e}")).fix("check the --exec command"))?,
        ),
        None => None,
    })
}

/// Follow every database on a thread of its own until the stop; the first
/// failure stops the others. The failure, and the child's exit status (0
/// without one).
fn replicate_all(
    dbs: Vec<DbSpec>,
    targets: &[Arc<Target>],
    opts: &Options,
    child: &mut Option<std::process::Child>,
) -> (Option<Error>, i32) {
    let failure: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let mut status = 0;
    std::thread::scope(|scope| {
        for d in dbs {
            let (opts, failure) = (opts.clone(), &failure);
            scope.spawn(move || {
                if let Err(e) = replicate::run(d, targets, opts, &STOP) {
                    failure.lock().expect("failure").get_or_insert(e);
                    STOP.store(true, Ordering::SeqCst);
                }
            });
        }
        // The main thread forwards signals to the child and notices its exit.
        status = supervise(child);
    });
    (failure.into_inner().expect("failure"), status)
}

/// Until the stop: forward signals to the child and notice its exit, and
/// wake idle followers once stopping. The child's exit status, or 0.
fn supervise(child: &mut Option<std::process::Child>) -> i32 {
    let mut status = 0;
    let mut forwarded = 0;
    let mut woken = false;
    loop {
        if !woken && STOP.load(Ordering::SeqCst) {
            // Idle followers sleep until their log is written: end
            // their waits now rather than at their next look.
            replicate::wake_all();
            woken = true;
        }
        if let Some(c) = child.as_mut() {
            let sig = SIGNAL.load(Ordering::SeqCst);
            if sig != 0 && sig != forwarded {
                // SAFETY: kill with a valid pid and signal number.
                unsafe { libc::kill(c.id() as libc::pid_t, sig) };
                forwarded = sig;
            }
            if let Ok(Some(st)) = c.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                status = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
                tracing::info!(event = "replicate.child_exited", status);
                STOP.store(true, Ordering::SeqCst);
                *child = None;
            }
        } else if STOP.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    status
}

/// The last --json line: every database's stop notice and each replica's
/// requests.
fn print_stopped(stopped: &Mutex<Vec<Notice>>, requests: Vec<serde_json::Value>, status: i32) {
    let databases: Vec<serde_json::Value> = stopped
        .lock()
        .expect("stopped")
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(n).expect("serializable");
            if let Some(o) = v.as_object_mut() {
                o.remove("event");
            }
            v
        })
        .collect();
    json_line(&serde_json::json!({
        "event": "replicate.stopped",
        "databases": databases,
        "replicas": requests,
        "exit_code": status,
    }));
}

/// One JSON object on a line of its own, written whole (several database
/// threads print at once).
fn json_line(v: &impl serde::Serialize) {
    let mut line = serde_json::to_vec(v).expect("serializable");
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}
