//! `lifeboat status` against the real binary: from the repository alone
//! (snapshots, a replicated database, sources never backed up, a stale
//! agent socket), and with an agent answering on its socket (a listener
//! this test runs, speaking the protocol of `src/cli/agent_socket.rs`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use common::{Env, create_db, create_replica_db, s};
use serde_json::{Value, json};

/// Child process: the writer of the replication test (inert unless re-executed).
#[test]
fn replica_writer_child() {
    common::replica_writer_child_main();
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

fn source<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("source {name} not in {st}"))
}

/// A config with a database, a file, and a directory no snapshot has held.
fn configured_env() -> (Env, PathBuf) {
    let env = Env::new();
    let db = env.path("svc/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 50, 100, true);
    std::fs::write(env.path("svc/settings.toml"), "a = 1\n").unwrap();
    std::fs::create_dir_all(env.path("svc/uploads")).unwrap();
    let config = env.path("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}\"\n\n[[sqlite]]\npath = \"svc/app.db\"\n\n[[file]]\npath = \"svc/settings.toml\"\n\n[[directory]]\npath = \"svc/uploads\"\nfull_only = true\n",
            env.repo_arg
        ),
    )
    .unwrap();
    (env, config)
}

fn status(env: &Env, config: &Path, extra: &[&str]) -> common::Out {
    let mut c = env.command();
    c.arg("--config").arg(config).args(["--json", "status"]).args(extra);
    common::run_command(c)
}

#[test]
fn without_an_agent_status_reads_the_repository() {
    let _serial = common::serial();
    let (env, config) = configured_env();
    let cfg = s(&config);
    // An old full snapshot, then a partial one now: the database and the
    // file come from the partial, the directory only from the full.
    let old = "2026-01-01T00:00:00Z";
    let run = |args: &[&str]| {
        let mut c = env.command();
        c.arg("--config").arg(cfg).args(args);
        common::run_command(c).expect_code(0)
    };
    run(&["snapshot", "--kind", "full", "--time", old]);
    let partial = run(&["snapshot", "--kind", "partial"]);
    let partial_id = partial.stdout.lines().last().unwrap().trim().to_string();
    let full_id = env
        .list()
        .into_iter()
        .find(|r| r["kind"] == "full")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .unwrap();

    let out = status(&env, &config, &[]).expect_code(0);
    let st = out.json();
    assert_eq!(st["agent"]["running"], false, "{st}");
    assert!(st["agent"].get("error").is_none(), "{st}");
    assert_eq!(u(&st["repository"]["snapshots"]), 2);
    let on_disk: u64 = common::files_under(&env.repo)
        .iter()
        // The local writer's lock and staging area, and a server's own
        // dot-files, are not repository objects.
        .filter(|k| *k != "lock" && !k.starts_with("tmp/") && !k.split('/').any(|c| c.starts_with('.')))
        .map(|k| std::fs::metadata(env.repo.join(k)).unwrap().len())
        .sum();
    assert_eq!(u(&st["repository"]["bytes"]), on_disk, "{st}");
    let names: Vec<&str> = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // The config's order: databases, directories, files.
    assert_eq!(names, ["app.db", "uploads", "settings.toml"]);

    let db = source(&st, "app.db");
    assert_eq!(db["kind"], "sqlite");
    assert_eq!(db["last_snapshot"]["id"], partial_id.as_str());
    assert_eq!(db["last_snapshot"]["kind"], "partial");
    assert!(db["replication"].is_null());
    let up = source(&st, "uploads");
    assert_eq!(up["last_snapshot"]["id"], full_id.as_str());
    assert_eq!(up["newest_point"], old);
    // Counted from the status's own clock to the stamped time.
    let checked: jiff::Timestamp = st["checked_at"].as_str().unwrap().parse().unwrap();
    let want = checked.duration_since(old.parse().unwrap()).as_secs();
    assert_eq!(up["age_seconds"].as_i64(), Some(want), "{up}");
    assert!(st["problems"].as_array().unwrap().is_empty(), "{st}");
    assert_eq!(st["ok"], true);

    // As a check: a day's age is fine for the database and the file, not
    // for the directory only the January full snapshot holds.
    let out = status(&env, &config, &["--max-age", "1d"]).expect_code(65);
    let problems = out.json()["problems"].clone();
    let problems = problems.as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].as_str().unwrap().starts_with("uploads: "), "{problems:?}");
    status(&env, &config, &["--max-age", "400d"]).expect_code(0);

    // The text screen: one row per source, the never-taken age in words.
    let mut c = env.command();
    c.arg("--config").arg(cfg).arg("status");
    let text = common::run_command(c).expect_code(0).stdout;
    assert!(text.contains("agent       not running"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("uploads"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains(&full_id[..8]) && row.contains("d ") && row.ends_with(" ago"),
        "{row}"
    );
}

#[test]
fn a_configured_source_never_backed_up_is_a_problem() {
    let _serial = common::serial();
    let (env, config) = configured_env();
    let mut c = env.command();
    c.arg("--config").arg(&config).args(["snapshot", "--kind", "partial"]);
    common::run_command(c).expect_code(0);
    let st = status(&env, &config, &[]).expect_code(0).json();
    let up = source(&st, "uploads");
    assert!(up["last_snapshot"].is_null() && up["age_seconds"].is_null(), "{up}");
    assert_eq!(st["problems"][0], "uploads: never backed up", "{st}");
    assert_eq!(st["ok"], false);
    // Only a check turns it into an exit code.
    status(&env, &config, &["--max-age", "1d"]).expect_code(65);
}

#[test]
fn without_a_repository_status_exits_66_and_creates_nothing() {
    let _serial = common::serial();
    let env = Env::bare();
    let out = env.run(["--json", "status"]).expect_code(66);
    assert_eq!(out.json()["error"]["event"], "repo.not_found");
    assert!(!env.repo.exists());
    // A bad --max-age is a usage error naming the flag.
    let env = Env::new();
    let out = env.run(["status", "--max-age", "soon"]).expect_code(64);
    assert!(out.stderr.contains("--max-age"), "{}", out.stderr);
}

#[test]
fn a_replicated_database_shows_the_newest_commit_the_repository_holds() {
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
    let rows = 40u64;
    let started = jiff::Timestamp::now();
    let mut c = env.command();
    c.arg("--repo")
        .arg(&env.repo_arg)
        .args(["replicate", s(&db), "--sync-interval", "200ms", "--exec", &service])
        .env(common::RW_DB, &db)
        .env(common::RW_ROWS, rows.to_string())
        .env(common::RW_PAUSE_US, "3000")
        .env(common::RW_WAIT_STATE, env.xdg_state.join("lifeboat/replicate"));
    common::run_command(c).expect_code(0);
    let ended = jiff::Timestamp::now();

    let st = env.ok(["--json", "status"]).json();
    let src = source(&st, "app.db");
    let r = &src["replication"];
    let stats = env.ok(["--json", "stats"]).json();
    let w = &stats["wal_streams"][0];
    assert_eq!(r["stream"], w["stream"], "{st}");
    // The last row's commit, as the segments on disk hold it.
    assert_eq!(u(&r["txid"]), u(&w["last_txid"]), "{st}");
    assert_eq!(r["time"], w["last_commit"], "{st}");
    let t: jiff::Timestamp = r["time"].as_str().unwrap().parse().unwrap();
    assert!(started <= t && t <= ended, "{r}");
    // The newest point is the replicated commit, later than any base.
    assert_eq!(src["newest_point"], r["time"]);
    let text = env.ok(["status"]).stdout;
    assert!(text.contains(&format!("txid {}", u(&r["txid"]))), "{text}");
}

/// An agent's status (the agent's `agent-status.json` schema, format 1),
/// with a field from a newer version.
fn agent_status(pid: u32, state: &str) -> Value {
    json!({
        "format": 1,
        "pid": pid,
        "started": "2026-12-01T00:00:00Z",
        "updated": "2026-12-07T05:00:00Z",
        "config": "/etc/lifeboat/lifeboat.toml",
        "timezone": "UTC",
        "default_schedule": false,
        "state": state,
        "jobs": [
            {"name": "nightly", "schedule": "0 3 * * *", "run": "snapshot --kind partial", "state": "idle",
             "last_start": "2026-12-07T03:00:00Z", "last_end": "2026-12-07T03:00:09Z",
             "last_exit_code": 0, "next_run": "2026-12-08T03:00:00Z"},
            {"name": "prune", "schedule": "1d", "run": "forget --prune", "state": "idle",
             "last_start": "2026-12-07T04:00:00Z", "last_exit_code": 75}
        ],
        "replication": {"running": true, "pid": 9, "restarts": 0, "databases": [
            {"name": "app.db", "txid": 77, "last_event": "replicate.following",
             "last_event_at": "2026-12-07T03:00:00Z", "gaps": 0}
        ]},
        "a_field_from_a_newer_agent": true
    })
}

/// A stand-in agent: answers every connection with `reply` (after reading
/// the request line, which it records).
fn fake_agent(path: &Path, reply: Value) -> std::sync::mpsc::Receiver<String> {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            let _ = tx.send(line);
            writeln!(conn, "{reply}").unwrap();
        }
    });
    rx
}

#[test]
fn with_a_running_agent_status_shows_its_jobs_and_live_replication() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 20, 50, true);
    env.snapshot(&[&db]);
    let socket = env.xdg_state.join("lifeboat/agent/agent.sock");
    let requests = fake_agent(&socket, agent_status(4242, "running"));
    let st = env.ok(["--json", "status"]).json();
    assert_eq!(requests.recv().unwrap(), "status\n");
    assert_eq!(st["agent"]["running"], true, "{st}");
    assert_eq!(st["agent"]["pid"], 4242);
    assert_eq!(st["jobs"][0]["next_run"], "2026-12-08T03:00:00Z");
    assert_eq!(st["agent"]["via"], "socket");
    assert_eq!(source(&st, "app.db")["live_replication"]["txid"], 77);
    // The stored part still comes from the repository.
    assert_eq!(u(&st["repository"]["snapshots"]), 1);
    let problems = st["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{st}");
    assert!(problems[0].as_str().unwrap().contains("job prune"), "{st}");
    env.run(["status", "--max-age", "1d"]).expect_code(65);

    let text = env.ok(["status"]).stdout;
    assert!(text.contains("agent       running, pid 4242"), "{text}");
    let job = text
        .lines()
        .find(|l| l.starts_with("prune"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(job.contains("failed (75)"), "{job}");
    let src = text
        .lines()
        .find(|l| l.starts_with("app.db"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        src.contains("txid 77") && src.contains(" following ") && src.ends_with(" ago"),
        "{src}"
    );
}

#[test]
fn a_socket_left_by_a_dead_agent_is_ignored_and_left_alone() {
    let _serial = common::serial();
    let env = Env::new();
    let socket = env.xdg_state.join("lifeboat/agent/agent.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(UnixListener::bind(&socket).unwrap());
    let st = env.ok(["--json", "status"]).json();
    assert_eq!(st["agent"]["running"], false, "{st}");
    assert!(st["agent"].get("error").is_none(), "{st}");
    assert!(socket.exists(), "status removes nothing");
    // --socket names another place to ask.
    let elsewhere = env.path("run/agent.sock");
    let _requests = fake_agent(&elsewhere, json!({"format": 1, "pid": 7}));
    let st = env.ok(["--json", "status", "--socket", s(&elsewhere)]).json();
    assert_eq!(st["agent"]["pid"], 7, "{st}");
}

#[test]
fn an_agent_without_a_socket_is_read_from_its_status_file_while_it_runs() {
    let _serial = common::serial();
    let env = Env::new();
    let dir = env.xdg_state.join("lifeboat/agent");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent-status.json");
    // This test process stands in for the running agent.
    std::fs::write(&file, agent_status(std::process::id(), "running").to_string()).unwrap();
    let st = env.ok(["--json", "status"]).json();
    assert_eq!(st["agent"]["running"], true, "{st}");
    assert_eq!(st["agent"]["via"], "status file", "{st}");
    assert_eq!(st["jobs"][1]["last_exit_code"], 75);
    // A stopped agent's last status is not a running agent.
    std::fs::write(&file, agent_status(std::process::id(), "stopped").to_string()).unwrap();
    let st = env.ok(["--json", "status"]).json();
    assert_eq!(st["agent"]["running"], false, "{st}");
    assert!(st["jobs"].as_array().unwrap().is_empty(), "{st}");
}

#[test]
fn a_config_naming_no_source_shows_what_the_repository_holds() {
    let _serial = common::serial();
    let env = Env::new();
    let file = env.path("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let id = env.snapshot(&[&file]);
    let config = env.path("lifeboat.toml");
    std::fs::write(&config, format!("[repository]\nurl = \"{}\"\n", env.repo_arg)).unwrap();
    let st = status(&env, &config, &[]).expect_code(0).json();
    let names: Vec<&str> = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt"], "{st}");
    assert_eq!(source(&st, "notes.txt")["last_snapshot"]["id"], id.as_str());
    assert_eq!(source(&st, "notes.txt")["kind"], "file");
}
