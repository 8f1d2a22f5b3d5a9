//! Hooks, through the real binary: a source's `before`/`after` around its
//! own capture (also when the capture fails), `[[hook]]` entries on each
//! event with their environment, timeouts that kill the hook's process
//! group, the `ignore` and `fail` policies' exit codes, and hook output in
//! the log, never on stdout.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

/// A hook command appending one line to `trace`: the words given, then
/// the `LIFEBOAT_*` variables named.
fn trace_cmd(trace: &Path, words: &str, vars: &[&str]) -> String {
    let vars: Vec<String> = vars.iter().map(|v| format!("{v}=${v}")).collect();
    format!("echo '{words}' {} >> '{}'", vars.join(" "), s(trace))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Each hook writes its whole environment to `<dir>/<n>.env`, n counting
/// from 1, so a test reads every variable of every run.
fn env_dump_cmd(dir: &Path) -> String {
    format!(
        "n=$(ls '{d}' | wc -l); env | grep '^LIFEBOAT_' | sort > '{d}/'$((n+1)).env",
        d = s(dir)
    )
}

fn env_dumps(dir: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort_by_key(|p| p.file_stem().unwrap().to_string_lossy().parse::<u32>().unwrap());
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect()
        })
        .collect()
}

fn write_config(env: &Env, text: &str) {
    std::fs::write(env.cwd.join("lifeboat.toml"), text).unwrap();
}

fn snapshots(env: &Env) -> usize {
    env.list().len()
}

#[test]
fn before_and_after_run_around_their_own_source_only() {
    let _s = serial();
    let env = Env::new();
    let trace = env.path("trace");
    let db = env.path("app.db");
    create_db(&db, 50, 100, true);
    let dir = env.path("uploads");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "a").unwrap();
    let file = env.path("settings.json");
    std::fs::write(&file, "{}").unwrap();
    // The directory's `before` leaves a file in it and its `after` takes it
    // away: the snapshot holds it only if the capture ran between them.
    let marker = dir.join("during-capture");
    let hooks = |name: &str| {
        format!(
            "before = \"{}\"\nafter = \"{}\"\n",
            trace_cmd(
                &trace,
                &format!("before {name}"),
                &["LIFEBOAT_EVENT", "LIFEBOAT_SOURCE", "LIFEBOAT_COMMAND"]
            ),
            trace_cmd(&trace, &format!("after {name}"), &["LIFEBOAT_EVENT", "LIFEBOAT_ERROR"]),
        )
    };
    write_config(
        &env,
        &format!(
            "[[sqlite]]\npath = '{}'\n{}\n[[directory]]\npath = '{}'\nbefore = \"touch '{m}'; {}\"\nafter = \"rm '{m}'; {}\"\n\n[[file]]\npath = '{}'\n{}",
            s(&db),
            hooks("db"),
            s(&dir),
            trace_cmd(&trace, "before dir", &["LIFEBOAT_SOURCE"]),
            trace_cmd(&trace, "after dir", &["LIFEBOAT_SOURCE"]),
            s(&file),
            hooks("file"),
            m = s(&marker),
        ),
    );
    let out = env.ok(["snapshot"]);
    let id = out.stdout.lines().last().unwrap().trim().to_string();
    assert_eq!(
        lines(&trace),
        [
            "before db LIFEBOAT_EVENT=source.before LIFEBOAT_SOURCE=app.db LIFEBOAT_COMMAND=snapshot",
            "after db LIFEBOAT_EVENT=source.after LIFEBOAT_ERROR=",
            "before dir LIFEBOAT_SOURCE=uploads",
            "after dir LIFEBOAT_SOURCE=uploads",
            "before file LIFEBOAT_EVENT=source.before LIFEBOAT_SOURCE=settings.json LIFEBOAT_COMMAND=snapshot",
            "after file LIFEBOAT_EVENT=source.after LIFEBOAT_ERROR=",
        ]
    );
    assert!(!marker.exists(), "the directory's after hook ran");
    let m = env.manifest(&id);
    let dir_src = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "uploads")
        .expect("the directory source")
        .clone();
    assert!(
        dir_src.to_string().contains("during-capture"),
        "the directory was captured between its before and after: {dir_src}"
    );
    // Named on the command line, sources are not the config's: no hooks.
    std::fs::remove_file(&trace).unwrap();
    env.ok(["snapshot", s(&file)]);
    assert!(lines(&trace).is_empty(), "{:?}", lines(&trace));
}

#[test]
fn after_runs_when_the_capture_fails_and_nothing_is_published() {
    let _s = serial();
    let env = Env::new();
    let trace = env.path("trace");
    // Not a database: its capture fails (as root too) after its before.
    let bad = env.path("broken.db");
    std::fs::write(&bad, vec![b'x'; 8192]).unwrap();
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    write_config(
        &env,
        &format!(
            "[[sqlite]]\npath = '{}'\nbefore = \"{}\"\nafter = \"{}\"\n\n[[file]]\npath = '{}'\nbefore = \"{}\"\nafter = \"{}\"\n",
            s(&bad),
            trace_cmd(&trace, "before broken", &[]),
            trace_cmd(&trace, "after broken", &["LIFEBOAT_EXIT_CODE"]),
            s(&file),
            trace_cmd(&trace, "before notes", &[]),
            trace_cmd(&trace, "after notes", &[]),
        ),
    );
    let out = env.run(["snapshot"]).expect_code(65);
    assert!(out.stderr.contains("snapshot.not_sqlite"), "{}", out.stderr);
    assert_eq!(lines(&trace), ["before broken", "after broken LIFEBOAT_EXIT_CODE=65"]);
    assert_eq!(snapshots(&env), 0);
}

#[test]
fn a_failing_before_fails_the_snapshot_and_still_runs_after() {
    let _s = serial();
    let env = Env::new();
    let trace = env.path("trace");
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    write_config(
        &env,
        &format!(
            "[[file]]\npath = '{}'\nbefore = \"echo cannot stop the service >&2; exit 3\"\nafter = \"{}\"\n",
            s(&file),
            trace_cmd(&trace, "after", &["LIFEBOAT_ERROR"]),
        ),
    );
    let out = env.run(["snapshot"]).expect_code(75);
    assert!(out.stderr.contains("event=hook.failed"), "{}", out.stderr);
    assert!(out.stderr.contains("exited 3"), "{}", out.stderr);
    // Its output is in the log with the failure, though not run with -v.
    assert!(out.stderr.contains("cannot stop the service"), "{}", out.stderr);
    let after = lines(&trace);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].starts_with("after LIFEBOAT_ERROR=source `notes.txt` before hook"),
        "{after:?}"
    );
    assert_eq!(snapshots(&env), 0);
}

#[test]
fn a_failing_after_keeps_the_snapshot_and_exits_75() {
    let _s = serial();
    let env = Env::new();
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    let dumps = env.path("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    write_config(
        &env,
        &format!(
            "[[file]]\npath = '{}'\nafter = \"exit 4\"\n\n[[hook]]\non = [\"any_error\"]\nrun = \"{}\"\n",
            s(&file),
            env_dump_cmd(&dumps)
        ),
    );
    let out = env.run(["--json", "snapshot"]).expect_code(75);
    // The result is printed, and stays the one JSON value on stdout.
    let id = out.json()["id"].as_str().unwrap().to_string();
    // any_error is told why.
    let got = env_dumps(&dumps);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0]["LIFEBOAT_ERROR"].contains("source `notes.txt` after hook"),
        "{got:?}"
    );
    assert!(out.stderr.contains("source `notes.txt` after hook"), "{}", out.stderr);
    assert!(out.stderr.contains("event=hook.failed"), "{}", out.stderr);
    assert_eq!(env.list()[0]["id"].as_str().unwrap(), id);
}

#[test]
fn events_fire_with_their_environment() {
    let _s = serial();
    let env = Env::new();
    let dumps = env.path("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    let dump = env_dump_cmd(&dumps);
    write_config(
        &env,
        &format!(
            "[repository]\nurl = '{repo}'\n\n[[file]]\npath = '{}'\n\n[[hook]]\non = [\"snapshot.success\", \"snapshot.failure\"]\nrun = \"{dump}\"\n\n[[hook]]\non = [\"any_error\"]\nrun = \"{dump}\"\n",
            s(&file),
            repo = env.repo_arg,
        ),
    );
    let id = env.run_bare(["snapshot"]).expect_code(0).stdout.trim().to_string();
    let got = env_dumps(&dumps);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["LIFEBOAT_EVENT"], "snapshot.success");
    assert_eq!(got[0]["LIFEBOAT_COMMAND"], "snapshot");
    assert_eq!(got[0]["LIFEBOAT_SNAPSHOT"], id);
    assert_eq!(got[0]["LIFEBOAT_EXIT_CODE"], "0");
    if env.is_s3() {
        assert!(got[0]["LIFEBOAT_REPOSITORY"].starts_with("s3://"), "{got:?}");
    } else {
        assert_eq!(got[0]["LIFEBOAT_REPOSITORY"], env.repo_arg);
    }
    assert!(!got[0].contains_key("LIFEBOAT_ERROR"), "{got:?}");

    // A failure: snapshot.failure, then any_error, each with the error on
    // one line, a secret in it redacted.
    let secret = env.path("PASSWORD=hunter2");
    let out = env.run_bare(["snapshot", s(&secret)]).expect_code(66);
    let got = env_dumps(&dumps);
    assert_eq!(got.len(), 3, "{got:?}\n{}", out.stderr);
    for (g, event) in got[1..].iter().zip(["snapshot.failure", "any_error"]) {
        assert_eq!(g["LIFEBOAT_EVENT"], event);
        assert_eq!(g["LIFEBOAT_EXIT_CODE"], "66");
        assert!(g["LIFEBOAT_ERROR"].contains("does not exist"), "{g:?}");
        assert!(!g["LIFEBOAT_ERROR"].contains("hunter2"), "{g:?}");
        assert!(!g.contains_key("LIFEBOAT_SNAPSHOT"), "{g:?}");
    }

    // any_error from another command.
    env.run_bare(["show", "ffffffff"]).expect_code(66);
    let got = env_dumps(&dumps);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[3]["LIFEBOAT_EVENT"], "any_error");
    assert_eq!(got[3]["LIFEBOAT_COMMAND"], "show");
}

#[test]
fn policy_ignore_logs_and_policy_fail_exits_75() {
    let _s = serial();
    let env = Env::new();
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    let config = |policy: &str| {
        format!(
            "[[file]]\npath = '{}'\n\n[[hook]]\non = [\"snapshot.success\"]\nrun = \"echo ping failed >&2; exit 2\"\npolicy = \"{policy}\"\n",
            s(&file)
        )
    };
    write_config(&env, &config("ignore"));
    let out = env.run(["--json", "snapshot"]).expect_code(0);
    out.json();
    assert!(out.stderr.contains("hook.failed"), "{}", out.stderr);
    assert!(out.stderr.contains("ping failed"), "{}", out.stderr);

    write_config(&env, &config("fail"));
    let out = env.run(["--json", "snapshot"]).expect_code(75);
    // The snapshot stands and its result is the one JSON value on stdout.
    out.json();
    assert!(
        out.stderr.contains("lifeboat: error: [[hook]] 1 on snapshot.success"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshots(&env), 2);
}

/// `true` once the process is gone or a zombie nobody reaps.
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
    }
}

#[test]
fn a_timed_out_hook_is_killed_with_its_children() {
    let _s = serial();
    let env = Env::new();
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    let pidfile = env.path("child.pid");
    // The child ignores SIGTERM: only the group's SIGKILL ends it.
    write_config(
        &env,
        &format!(
            "[[file]]\npath = '{}'\n\n[[hook]]\non = [\"snapshot.success\"]\nrun = \"(trap '' TERM; exec sleep 1000) & echo $! > '{}'; echo started; wait\"\ntimeout = \"1s\"\npolicy = \"fail\"\n",
            s(&file),
            s(&pidfile)
        ),
    );
    let out = env.run(["snapshot"]).expect_code(75);
    assert!(out.stderr.contains("event=hook.timed_out"), "{}", out.stderr);
    assert!(out.stderr.contains("started"), "its output is logged: {}", out.stderr);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    wait_until("the hook's child to be killed", 30, || gone(pid));
    assert_eq!(snapshots(&env), 1);
}

#[test]
fn hook_output_goes_to_the_log_line_by_line_never_to_stdout() {
    let _s = serial();
    let env = Env::new();
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    write_config(
        &env,
        &format!(
            "[[file]]\npath = '{}'\nbefore = \"echo stopping web; echo warn-line >&2\"\n\n[[hook]]\non = [\"snapshot.success\"]\nrun = \"printf 'one\\\\ntwo\\\\n'\"\n",
            s(&file)
        ),
    );
    let out = env.run(["-v", "--json", "snapshot"]).expect_code(0);
    out.json();
    for line in ["stopping web", "warn-line", "one", "two"] {
        let logged = out
            .stderr
            .lines()
            .any(|l| l.contains(&format!(" {line} event=\"hook.output\"")));
        assert!(logged, "`{line}` logged as hook.output:\n{}", out.stderr);
        assert!(!out.stdout.contains(line), "stdout: {}", out.stdout);
    }
}

#[test]
fn broken_hook_settings_are_configuration_errors() {
    let _s = serial();
    let env = Env::new();
    for (text, says) in [
        ("[[hook]]\non = [\"snapshot.done\"]\nrun = \"true\"\n", "snapshot.done"),
        ("[[hook]]\non = []\nrun = \"true\"\n", "names no event"),
        (
            "[[hook]]\non = [\"any_error\"]\nrun = \"true\"\ntimeout = \"soon\"\n",
            "[[hook]] 1 timeout",
        ),
        (
            "[[hook]]\non = [\"any_error\"]\nrun = \"true\"\npolicy = \"retry\"\n",
            "retry",
        ),
        ("[[file]]\npath = 'x'\nhook_timeout = \"0s\"\n", "hook_timeout"),
    ] {
        write_config(&env, text);
        let out = env.run(["snapshot"]).expect_code(78);
        assert!(out.stderr.contains("lifeboat.toml"), "{}", out.stderr);
        assert!(out.stderr.contains(says), "{text}: {}", out.stderr);
        assert!(out.stderr.contains("config.invalid"), "{}", out.stderr);
    }
    std::fs::remove_file(env.cwd.join("lifeboat.toml")).unwrap();
    assert_eq!(snapshots(&env), 0);
}

#[test]
fn a_replication_gap_fires_its_hook() {
    let _s = serial();
    let env = Env::new();
    let dumps = env.path("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let db = env.path("live.db");
    create_replica_db(&db);
    write_config(
        &env,
        &format!(
            "[[sqlite]]\npath = '{}'\n\n[[hook]]\non = [\"replicate.gap\"]\nrun = \"{}\"\n",
            s(&db),
            env_dump_cmd(&dumps)
        ),
    );
    let mut c = env.command();
    c.arg("--repo")
        .arg(&env.repo_arg)
        .args(["--json", "replicate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ChildGuard {
        child: c.spawn().unwrap(),
    };
    let mut stdout = std::io::BufReader::new(child.child.stdout.take().unwrap());
    let mut line = String::new();
    // Past the first base: the database is followed.
    loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "replicate ended"
        );
        if line.contains("\"replicate.base\"") {
            break;
        }
    }
    // Replaced at its path: continuity is lost.
    let new = env.path("new.db");
    create_replica_db(&new);
    commit_row(&open(&new));
    std::fs::rename(&new, &db).unwrap();
    wait_until("the gap hook", 60, || !env_dumps(&dumps).is_empty());
    signal(&child.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child.child, 60), 0);
    let got = env_dumps(&dumps);
    assert_eq!(got[0]["LIFEBOAT_EVENT"], "replicate.gap");
    assert_eq!(got[0]["LIFEBOAT_COMMAND"], "replicate");
    assert_eq!(got[0]["LIFEBOAT_SOURCE"], "live.db");
    assert!(got[0]["LIFEBOAT_ERROR"].contains("replaced"), "{got:?}");
}

#[test]
fn an_interrupted_snapshot_still_runs_the_owed_afters() {
    let _s = serial();
    let env = Env::new();
    let trace = env.path("trace");
    let pidfile = env.path("before.pid");
    let file = env.path("notes.txt");
    std::fs::write(&file, "n").unwrap();
    // The before hangs (as a stuck `docker compose stop` would) once it
    // has said it started.
    write_config(
        &env,
        &format!(
            "[[file]]\npath = '{}'\nbefore = \"echo $$ > '{}'; exec sleep 1000\"\nafter = \"{}\"\n",
            s(&file),
            s(&pidfile),
            trace_cmd(&trace, "after", &["LIFEBOAT_ERROR", "LIFEBOAT_EXIT_CODE"]),
        ),
    );
    let mut c = env.command();
    c.arg("--repo").arg(&env.repo_arg).arg("snapshot");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = ChildGuard {
        child: c.spawn().unwrap(),
    };
    wait_until("the before hook", 60, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    signal(&child.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child.child, 60), 128 + libc::SIGTERM);
    assert_eq!(
        lines(&trace),
        ["after LIFEBOAT_ERROR=interrupted by signal 15 LIFEBOAT_EXIT_CODE=143"]
    );
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    wait_until("the before hook to be killed", 30, || gone(pid));
    assert_eq!(snapshots(&env), 0);
}

#[test]
fn a_before_may_make_its_source() {
    let _s = serial();
    let env = Env::new();
    // A dump the before writes, as borgmatic's database hooks do.
    let dump = env.path("dump.sql");
    write_config(
        &env,
        &format!(
            "[[file]]\npath = '{d}'\nbefore = \"echo 'CREATE TABLE t(x);' > '{d}'\"\nafter = \"rm '{d}'\"\n",
            d = s(&dump)
        ),
    );
    let id = env.ok(["snapshot"]).stdout.trim().to_string();
    assert!(!dump.exists());
    assert!(env.manifest(&id).to_string().contains("dump.sql"));
}
