//! `lifeboat agent` through the real binary: jobs every second or two make
//! snapshots and one operations log record each; the agent SIGKILLed in the
//! middle of a job leaves no partial snapshot and no lock, and at restart
//! the interrupted run runs once and replication resumes without a gap;
//! SIGHUP with a valid and a broken config; SIGTERM mid-job; timeouts and
//! retries; `--print-jobs` for the default schedule and for cron in a time
//! zone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{ChildGuard, Env, commit_row, create_db, create_replica_db, open, replica_rows, s, serial, wait_until};

/// Child process holding the repository's writer lock (inert unless re-executed).
#[test]
fn lock_child() {
    common::lock_child_main();
}

/// A running `lifeboat -v --config CONFIG agent`, its stderr in a file.
/// SIGKILLed when dropped.
struct Agent {
    guard: ChildGuard,
    log: PathBuf,
}

impl Agent {
    fn start(env: &Env, config: &Path, log_name: &str) -> Agent {
        Agent::start_with(env, config, log_name, &[])
    }

    fn start_with(env: &Env, config: &Path, log_name: &str, vars: &[(&str, &str)]) -> Agent {
        let log = env.path(log_name);
        let mut c = env.command();
        c.envs(vars.iter().copied());
        c.args(["-v", "--config", s(config), "agent"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create agent log"));
        Agent {
            guard: ChildGuard {
                child: c.spawn().expect("spawn lifeboat agent"),
            },
            log,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; insist on exit 0.
    fn stop(mut self) -> String {
        common::signal(&self.guard.child, libc::SIGTERM);
        let code = common::wait_exit(&mut self.guard.child, 120);
        let log = self.text();
        assert_eq!(code, 0, "agent exited {code} on SIGTERM; log:\n{log}");
        log
    }

    /// Wait until `f` holds, failing early (with the log) if the agent died.
    fn wait(&mut self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                self.guard.still_running(),
                "the agent exited waiting for {what}; log:\n{}",
                self.text()
            );
            assert!(
                start.elapsed() < std::time::Duration::from_secs(secs),
                "timed out after {secs}s waiting for {what}; log:\n{}",
                self.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// `lifeboat.toml` in the scratch world: the repository, then `body`.
fn write_config(env: &Env, body: &str) -> PathBuf {
    let path = env.path("lifeboat.toml");
    let text = format!("{body}\n[repository]\nurl = \"{}\"\n", env.repo_arg);
    // Whole or not at all: the agent may read it at any moment (SIGHUP).
    let tmp = env.path("lifeboat.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn status_path(env: &Env) -> PathBuf {
    env.xdg_state.join("lifeboat/agent/agent-status.json")
}

fn status(env: &Env) -> serde_json::Value {
    std::fs::read(status_path(env))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn job_status(env: &Env, name: &str) -> serde_json::Value {
    status(env)["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Snapshots (bases left out) carrying `tag`.
fn tagged(env: &Env, tag: &str) -> usize {
    env.list()
        .iter()
        .filter(|s| s["kind"] != "base" && s["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag)))
        .count()
}

/// Operations log records of job `name`.
fn records_of(env: &Env, name: &str) -> Vec<serde_json::Value> {
    let out = env.ok(["--json", "log"]);
    out.json()
        .as_array()
        .expect("log --json is an array")
        .iter()
        .filter(|r| r["job"] == name)
        .cloned()
        .collect()
}

/// A rollback-journal database locked EXCLUSIVE by this process: a snapshot
/// of it waits (SQLite's busy handler) until the lock goes, so a job that
/// captures it is reliably in the middle of its run.
fn locked_db(path: &Path) -> rusqlite::Connection {
    create_db(path, 50, 200, false);
    let c = open(path);
    c.execute_batch("BEGIN EXCLUSIVE").expect("take the exclusive lock");
    c
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn jobs_every_second_make_snapshots_with_one_record_each() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/a.txt"), "hello").unwrap();
    let config = write_config(
        &env,
        "[[directory]]\npath = \"data\"\n\n\
         [[job]]\nname = \"every\"\nschedule = \"1s\"\nrun = \"snapshot --tag every\"\n\n\
         [[job]]\nname = \"cron\"\nschedule = \"*/2 * * * * *\"\nrun = \"snapshot --kind partial --tag cron\"\n\
         retries = 10\nretry_delay = \"500ms\"\n",
    );
    // The two jobs start in the same second and one finds the repository
    // locked by the other (exit 75): it tries again half a second later
    // rather than after the default minute, off the other's beat.
    let mut agent = Agent::start(&env, &config, "agent.log");
    agent.wait("snapshots of both jobs", 120, || {
        tagged(&env, "every") >= 2 && tagged(&env, "cron") >= 2
    });
    // `lifeboat status` asks the running agent itself, over its socket.
    let st = env.ok(["--config", s(&config), "--json", "status"]).json();
    assert_eq!(st["agent"]["running"], true, "{st}");
    assert_eq!(st["agent"]["via"], "socket", "{st}");
    let log = agent.stop();
    assert!(log.contains("agent.job_started"), "{log}");

    // Each run is one record, named by its job: a successful record for
    // every snapshot, except that the run the agent's stop caught between
    // publishing its snapshot and writing its record is recorded by the
    // agent as stopped (agent.job_killed): at most one such run per job.
    for job in ["every", "cron"] {
        let records = records_of(&env, job);
        let ok = records.iter().filter(|r| r["result"] == "ok").count();
        let stopped = records.iter().filter(|r| r["event"] == "agent.job_killed").count();
        let snapshots = tagged(&env, job);
        assert!(stopped <= 1, "{job}: {records:#?}");
        assert!(
            snapshots == ok || snapshots == ok + stopped,
            "{job}: {snapshots} snapshots; {records:#?}"
        );
        for r in &records {
            assert_eq!(r["format"], 2, "{r}");
            assert_eq!(r["command"], "snapshot", "{r}");
            assert!(r["args"].as_array().unwrap().iter().any(|a| a == "--config"), "{r}");
        }
    }
    // Nothing outside the agent is recorded under a job, nor as format 2.
    let all = env.ok(["--json", "log"]).json();
    let init = &all.as_array().unwrap()[0];
    assert_eq!(
        (init["command"].as_str(), init["format"].as_u64()),
        (Some("init"), Some(1))
    );
    assert!(init.get("job").is_none());

    // Stopped cleanly: no lock left, the status says so.
    env.ok(["snapshot", s(&env.path("data"))]);
    assert_eq!(status(&env)["state"], "stopped");
}

#[test]
fn sigkill_mid_job_then_restart_runs_it_once_and_replication_resumes() {
    let _serial = serial();
    let env = Env::new();
    let app = env.path("app.db");
    create_replica_db(&app);
    let held = env.path("held.db");
    let lock = locked_db(&held);
    let config = write_config(
        &env,
        "[[sqlite]]\npath = \"app.db\"\n\n\
         [[sqlite]]\npath = \"held.db\"\nreplicate = false\n\n\
         [replicate]\nsync_interval = \"100ms\"\n\n\
         [[job]]\nname = \"slow\"\nschedule = \"1h\"\nrun = \"snapshot --tag slow\"\n\
         retries = 100\nretry_delay = \"1s\"\n",
    );
    let writer = open(&app);
    let mut agent = Agent::start(&env, &config, "agent-1.log");
    for _ in 0..20 {
        commit_row(&writer);
    }
    agent.wait("the replicator to follow app.db", 60, || {
        status(&env)["replication"]["databases"][0]["last_event"].is_string()
    });
    // Its first try may meet the replicator's first base at the
    // repository's lock (75, retried); a try that stays is held by the
    // database's lock, in the middle of its run.
    let running = || {
        let j = job_status(&env, "slow");
        (j["state"] == "running").then(|| j["pid"].as_u64().expect("job pid") as u32)
    };
    agent.wait("a run held in its middle", 60, || {
        let Some(pid) = running() else { return false };
        std::thread::sleep(std::time::Duration::from_millis(300));
        running() == Some(pid) && pid_alive(pid)
    });
    let job_pid = running().unwrap();

    // SIGKILL in the middle of the job: the job goes with it.
    common::signal(&agent.guard.child, libc::SIGKILL);
    common::wait_exit(&mut agent.guard.child, 30);
    wait_until("the job's process to end with the agent", 30, || !pid_alive(job_pid));
    // Commits while no agent runs.
    for _ in 0..20 {
        commit_row(&writer);
    }
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    // No partial snapshot, no lock left behind, nothing damaged.
    assert_eq!(tagged(&env, "slow"), 0);
    env.ok(["verify"]);
    let early = records_of(&env, "slow");
    // The run held in its middle ended with the agent, recording nothing;
    // only tries that met the replicator at the repository's lock did.
    assert!(
        early.iter().all(|r| r["event"] == "repo.in_use"),
        "only tries that met the lock: {early:#?}"
    );

    let mut agent = Agent::start(&env, &config, "agent-2.log");
    agent.wait("the interrupted run to run again at start", 120, || {
        tagged(&env, "slow") == 1 && records_of(&env, "slow").iter().any(|r| r["result"] == "ok")
    });
    for _ in 0..20 {
        commit_row(&writer);
    }
    let mut attempt = 0;
    let mut out = PathBuf::new();
    agent.wait("every commit to be restorable", 120, || {
        attempt += 1;
        out = env.path(&format!("restored-{attempt}.db"));
        let r = env.run(["restore", "latest", "--only", "app.db", "-o", s(&out)]);
        r.code == 0 && replica_rows(&out).len() == 60
    });
    let ids: Vec<i64> = replica_rows(&out).iter().map(|r| r.0).collect();
    assert_eq!(ids, (1..=60).collect::<Vec<_>>(), "every commit, none missing");
    let log = agent.stop();
    assert!(log.contains("agent.job_interrupted"), "{log}");
    // Once: the schedule is hourly, so only the catch-up ran.
    // The run the agent's death cut short is recorded at restart, once.
    let records = records_of(&env, "slow");
    let ok = records.iter().filter(|r| r["result"] == "ok").count();
    assert_eq!(ok, 1, "{records:#?}");
    let killed = records.iter().filter(|r| r["event"] == "agent.job_killed").count();
    assert_eq!(killed, 1, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r["result"] == "ok" || r["event"] == "agent.job_killed" || r["event"] == "repo.in_use"),
        "{records:#?}"
    );
    assert_eq!(tagged(&env, "slow"), 1);
    assert_eq!(status(&env)["replication"]["databases"][0]["gaps"], 0);
    env.ok(["verify"]);
}

#[test]
fn sighup_takes_a_valid_config_and_refuses_a_broken_one() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/a.txt"), "hello").unwrap();
    let dir = "[[directory]]\npath = \"data\"\n\n";
    let a = "[[job]]\nname = \"a\"\nschedule = \"1s\"\nrun = \"snapshot --tag a\"\n\n";
    let config = write_config(&env, &format!("{dir}{a}"));
    let mut agent = Agent::start(&env, &config, "agent.log");
    agent.wait("job a", 60, || tagged(&env, "a") >= 1);

    let b = "[[job]]\nname = \"b\"\nschedule = \"1s\"\nrun = \"snapshot --tag b\"\n\n";
    write_config(&env, &format!("{dir}{a}{b}"));
    common::signal(&agent.guard.child, libc::SIGHUP);
    agent.wait("job b, new in the reloaded config", 60, || tagged(&env, "b") >= 1);

    // A cron field out of range on line 11: refused, the old jobs go on.
    let broken = "[[job]]\nname = \"b\"\nschedule = \"61 * * * *\"\nrun = \"snapshot --tag b\"\n\n";
    write_config(&env, &format!("{dir}{a}{broken}"));
    common::signal(&agent.guard.child, libc::SIGHUP);
    agent.wait("the refusal", 60, || agent_text(&env).contains("agent.reload_refused"));
    let refusal = agent_text(&env)
        .lines()
        .find(|l| l.contains("agent.reload_refused"))
        .unwrap()
        .to_string();
    assert!(
        refusal.contains("lifeboat.toml") && refusal.contains("line 11"),
        "{refusal}"
    );
    assert!(refusal.contains("cron"), "{refusal}");
    let before = tagged(&env, "b");
    agent.wait("job b to go on under the old config", 60, || tagged(&env, "b") > before);
    agent.stop();
}

fn agent_text_at(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn agent_text(env: &Env) -> String {
    std::fs::read_to_string(env.path("agent.log")).unwrap_or_default()
}

#[test]
fn a_run_still_going_is_not_started_twice_and_sigterm_exits_0_without_a_lock() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    let held = env.path("held.db");
    let lock = locked_db(&held);
    let config = write_config(
        &env,
        "[[sqlite]]\npath = \"held.db\"\nreplicate = false\n\n\
         [[job]]\nname = \"slow\"\nschedule = \"1s\"\nrun = \"snapshot\"\n",
    );
    let mut agent = Agent::start(&env, &config, "agent.log");
    agent.wait("the job to be running", 60, || {
        job_status(&env, "slow")["state"] == "running"
    });
    let job_pid = job_status(&env, "slow")["pid"].as_u64().unwrap() as u32;
    // Every second the job is due again, and skipped while its run goes on.
    let log_path = agent.log.clone();
    agent.wait("a skipped fire", 60, || {
        agent_text_at(&log_path).contains("agent.job_skipped")
    });
    assert_eq!(job_status(&env, "slow")["pid"], job_pid, "still the first run");
    let log = agent.stop();
    assert_eq!(log.matches("agent.job_started").count(), 1, "{log}");
    assert!(!pid_alive(job_pid), "the job's process outlived the agent");
    // Abandoned safely, and said so in the log.
    let records = records_of(&env, "slow");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["event"], "agent.job_killed");
    assert_eq!(records[0]["exit_code"], 128 + libc::SIGTERM);
    drop(lock);
    env.ok(["snapshot", s(&env.path("data"))]);
    env.ok(["verify"]);
    assert_eq!(env.list().len(), 1);
}

#[test]
fn a_timeout_stops_the_run_and_a_temporary_failure_is_retried() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    let held = env.path("held.db");
    let lock = locked_db(&held);
    let config = write_config(
        &env,
        "[[sqlite]]\npath = \"held.db\"\nreplicate = false\n\n\
         [agent]\nstop_grace = \"2s\"\n\n\
         [[job]]\nname = \"slow\"\nschedule = \"1h\"\nrun = \"snapshot\"\ntimeout = \"1s\"\n",
    );
    let mut agent = Agent::start(&env, &config, "agent-timeout.log");
    agent.wait("the timeout's record", 60, || !records_of(&env, "slow").is_empty());
    agent.stop();
    let r = &records_of(&env, "slow")[0];
    assert_eq!(r["event"], "agent.job_timeout", "{r}");
    assert_eq!(r["exit_code"], 128 + libc::SIGTERM, "{r}");
    drop(lock);
    assert_eq!(env.list().len(), 0);

    // The repository's lock held elsewhere: exit 75 is temporary, retried
    // every second until the lock goes; the hourly schedule alone would
    // not run it again.
    let ready = env.path("lock-ready");
    let holder = common::spawn_self(
        "lock_child",
        &[(common::LOCK_FILE, &env.lock_file()), (common::LOCK_READY, &ready)],
    );
    wait_until("the lock holder", 30, || ready.exists());
    let config = write_config(
        &env,
        "[[directory]]\npath = \"data\"\n\n\
         [[job]]\nname = \"retried\"\nschedule = \"1h\"\nrun = \"snapshot\"\nretries = 10\nretry_delay = \"1s\"\n",
    );
    let mut agent = Agent::start(&env, &config, "agent-retry.log");
    agent.wait("a failed try", 60, || {
        records_of(&env, "retried").iter().any(|r| r["exit_code"] == 75)
    });
    drop(holder);
    agent.wait("a retry that succeeds", 60, || env.list().len() == 1);
    let log = agent.stop();
    assert!(log.contains("agent.job_retry"), "{log}");
    let records = records_of(&env, "retried");
    let (last, failed) = records.split_last().unwrap();
    assert_eq!(last["result"], "ok", "{records:#?}");
    assert!(
        !failed.is_empty() && failed.iter().all(|r| r["event"] == "repo.in_use"),
        "{records:#?}"
    );
}

#[test]
fn print_jobs_shows_the_default_schedule_and_cron_in_a_time_zone() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    let config = write_config(&env, "[[directory]]\npath = \"data\"\n");
    let out = env
        .run_bare(["--config", s(&config), "agent", "--print-jobs"])
        .expect_code(0);
    for line in [
        "partial  0 3 * * 1-6  snapshot --kind partial",
        "full     0 3 * * 0    snapshot --kind full",
        "forget   0 4 * * *    forget --prune",
        "drill    0 5 * * 0    drill",
    ] {
        assert!(out.stdout.contains(line), "{line}\n{}", out.stdout);
    }
    assert!(out.stdout.contains("the seeds' schedule"), "{}", out.stdout);
    let json = env
        .run_bare(["--json", "--config", s(&config), "agent", "--print-jobs"])
        .expect_code(0)
        .json();
    assert_eq!(json["default_schedule"], true);
    let names: Vec<&str> = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["partial", "full", "forget", "drill"]);
    // Nothing was started or written.
    assert!(!status_path(&env).exists());
    assert!(!env.xdg_state.join("lifeboat/agent/schedule.json").exists());

    let config = write_config(
        &env,
        "timezone = \"America/New_York\"\n[[directory]]\npath = \"data\"\n\n\
         [[job]]\nname = \"nightly\"\nschedule = \"30 2 * * *\"\nrun = \"snapshot --kind partial\"\njitter = \"5m\"\n\n\
         [[job]]\nname = \"quarter\"\nschedule = \"0 */15 * * * *\"\nrun = \"verify --read-data-subset 5%\"\n\n\
         [[job]]\nname = \"often\"\nschedule = \"15m\"\nrun = \"forget --prune\"\n",
    );
    let json = env
        .run_bare(["--json", "--config", s(&config), "agent", "--print-jobs"])
        .expect_code(0)
        .json();
    assert_eq!(json["timezone"], "America/New_York");
    assert_eq!(json["default_schedule"], false);
    let jobs = json["jobs"].as_array().unwrap();
    let next = |i: usize| -> Vec<jiff::Zoned> {
        jobs[i]["next"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let ts: jiff::Timestamp = t.as_str().unwrap().parse().unwrap();
                ts.to_zoned(jiff::tz::TimeZone::get("America/New_York").unwrap())
            })
            .collect()
    };
    let nightly = next(0);
    assert_eq!(nightly.len(), 3);
    for (i, z) in nightly.iter().enumerate() {
        assert_eq!((z.hour(), z.minute(), z.second()), (2, 30, 0), "{z} in New York");
        if i > 0 {
            assert_eq!(z.date(), nightly[i - 1].date().tomorrow().unwrap(), "one a day");
        }
    }
    assert!(
        jobs[0]["next"][0].as_str().unwrap().ends_with("-05:00")
            || jobs[0]["next"][0].as_str().unwrap().ends_with("-04:00")
    );
    let quarter = next(1);
    for w in quarter.windows(2) {
        assert_eq!(w[1].timestamp().as_second() - w[0].timestamp().as_second(), 15 * 60);
    }
    assert!(quarter.iter().all(|z| z.minute() % 15 == 0 && z.second() == 0));
    assert_eq!(jobs[2]["at_start"], true, "an interval job never run runs at start");
    let text = env
        .run_bare(["--config", s(&config), "agent", "--print-jobs"])
        .expect_code(0);
    assert!(text.stdout.contains("time zone: America/New_York"), "{}", text.stdout);
    assert!(text.stdout.contains("often    15m"), "{}", text.stdout);
    assert!(text.stdout.contains("at start"), "{}", text.stdout);
}

#[test]
fn broken_jobs_are_refused_naming_the_line() {
    let _serial = serial();
    let env = Env::new();
    for (body, line, says) in [
        (
            "[[job]]\nname = \"x\"\nschedule = \"often\"\nrun = \"snapshot\"\n",
            3,
            "schedule",
        ),
        (
            "[[job]]\nname = \"x\"\nschedule = \"1h\"\nrun = \"snapshot --bogus\"\n",
            4,
            "--bogus",
        ),
        (
            "[[job]]\nname = \"x\"\nschedule = \"1h\"\nrun = \"replicate\"\n",
            4,
            "cannot be a job",
        ),
        (
            "[[job]]\nname = \"x\"\nschedule = \"1h\"\nrun = \"list\"\n[[job]]\nname = \"x\"\nschedule = \"2h\"\nrun = \"list\"\n",
            7,
            "two jobs",
        ),
        ("timezone = \"Mars/Olympus\"\n", 0, "timezone"),
    ] {
        let config = write_config(&env, body);
        let out = env.run_bare(["--config", s(&config), "agent", "--print-jobs"]);
        assert_eq!(out.code, 78, "{body}\n{}", out.stderr);
        assert!(out.stderr.contains("lifeboat.toml"), "{}", out.stderr);
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
        if line > 0 {
            assert!(
                out.stderr.contains(&format!("line {line}:")),
                "line {line}: {}",
                out.stderr
            );
        }
        assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
        // Every command reads the config the same way.
        assert_eq!(env.run_bare(["--config", s(&config), "list"]).code, 78);
    }
}

/// systemd's side of `Type=notify`, on a real datagram socket: READY once
/// started, a STATUS line naming the jobs, WATCHDOG pings at half of
/// WATCHDOG_USEC, STOPPING on SIGTERM.
#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    let config = write_config(
        &env,
        "[[directory]]\npath = \"data\"\n\n\
         [[job]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nrun = \"snapshot\"\n",
    );
    let sock_path = env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let agent = Agent::start_with(
        &env,
        &config,
        "agent.log",
        &[("NOTIFY_SOCKET", s(&sock_path)), ("WATCHDOG_USEC", "200000")],
    );
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); so far {seen:?}; log:\n{}", agent.text()));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(seen[0], "READY=1", "{seen:?}");
    let status = seen.iter().find(|m| m.starts_with("STATUS=")).expect("a STATUS line");
    assert!(
        status.starts_with("STATUS=1 job,") && status.contains("next nightly at"),
        "{status}"
    );
    common::signal(&agent.guard.child, libc::SIGTERM);
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    agent.stop();
}

/// SIGHUP with a database added: the replicator is restarted on the new
/// set, the first database resumes where it stood (every commit
/// restorable), the new one is followed.
#[test]
fn sighup_with_a_new_database_restarts_replication_without_a_gap() {
    let _serial = serial();
    let env = Env::new();
    let (one, two) = (env.path("one.db"), env.path("two.db"));
    create_replica_db(&one);
    create_replica_db(&two);
    let jobs = "[replicate]\nsync_interval = \"100ms\"\n\n\
                [[job]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nrun = \"snapshot\"\n\n";
    let config = write_config(&env, &format!("{jobs}[[sqlite]]\npath = \"one.db\"\n"));
    let mut agent = Agent::start(&env, &config, "agent.log");
    let followed = |name: &str| {
        status(&env)["replication"]["databases"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == name && d["last_event"].is_string()))
    };
    agent.wait("one.db followed", 60, || followed("one.db"));
    let w1 = open(&one);
    for _ in 0..10 {
        commit_row(&w1);
    }
    write_config(
        &env,
        &format!("{jobs}[[sqlite]]\npath = \"one.db\"\n\n[[sqlite]]\npath = \"two.db\"\n"),
    );
    common::signal(&agent.guard.child, libc::SIGHUP);
    agent.wait("two.db followed after the reload", 60, || followed("two.db"));
    for _ in 0..10 {
        commit_row(&w1);
    }
    let w2 = open(&two);
    for _ in 0..5 {
        commit_row(&w2);
    }
    let mut attempt = 0;
    let mut restored = |name: &str, rows: usize| {
        attempt += 1;
        let out = env.path(&format!("restored-{attempt}-{name}"));
        env.run(["restore", "latest", "--only", name, "-o", s(&out)]).code == 0 && replica_rows(&out).len() == rows
    };
    agent.wait("every commit of both restorable", 120, || {
        restored("one.db", 20) && restored("two.db", 5)
    });
    let log = agent.stop();
    assert!(log.contains("agent.replicate_restart"), "{log}");
    let st = status(&env);
    let dbs = st["replication"]["databases"].as_array().unwrap();
    assert!(dbs.iter().all(|d| d["gaps"] == 0), "{dbs:?}");
    env.ok(["verify"]);
}

/// What a job's hooks print reaches the agent's log (the journal under
/// systemd) even when they succeed: jobs log at info, where `hook.output` is.
#[test]
fn a_jobs_hook_output_is_in_the_agents_log() {
    let _serial = serial();
    let env = Env::new();
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/a.txt"), "hello").unwrap();
    let config = write_config(
        &env,
        "[[directory]]\npath = \"data\"\nbefore = \"echo hook-said-hello-before\"\n\n\
         [[job]]\nname = \"every\"\nschedule = \"1s\"\nrun = \"snapshot --tag every\"\n",
    );
    let mut agent = Agent::start(&env, &config, "agent.log");
    agent.wait("a snapshot by the job", 120, || tagged(&env, "every") >= 1);
    agent.wait("the hook's output in the log", 30, || {
        agent_text_at(&env.path("agent.log")).contains("hook-said-hello-before")
    });
    agent.stop();
}
