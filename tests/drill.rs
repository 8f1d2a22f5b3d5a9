//! `lifeboat drill` end to end with the real binary: a real SQLite
//! database, a real HTTP server (python's http.server, started by
//! `[drill] start` on the scratch copy), real shell commands and signals.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

/// A service: a database of 50 rows and a config directory, configured in
/// `lifeboat.toml` with `drill` appended, snapshotted once.
struct Service {
    env: Env,
    cfg: PathBuf,
    db: PathBuf,
    pid_file: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Service {
    fn new() -> Service {
        let env = Env::new();
        let srv = env.path("srv");
        std::fs::create_dir_all(srv.join("etc")).unwrap();
        std::fs::write(srv.join("etc/app.toml"), "listen = 8080\n").unwrap();
        let db = srv.join("app.db");
        create_db(&db, 50, 100, true);
        let cfg = env.path("lifeboat.toml");
        let service = Service {
            cfg,
            db,
            pid_file: env.path("service.pid"),
            port: free_port(),
            env,
        };
        service.configure("");
        service.env.ok(["--config", s(&service.cfg), "snapshot"]);
        service
    }

    /// `lifeboat.toml` with the sources, the service, and `checks`.
    fn configure(&self, checks: &str) {
        let text = format!(
            r#"
[[sqlite]]
path = "{db}"

[[directory]]
path = "{etc}"

[drill]
start = "echo $$ > {pid}; exec python3 -m http.server {port} --bind 127.0.0.1 --directory \"$LIFEBOAT_DRILL_DIR\""
timeout = "20s"
stop_timeout = "5s"

{checks}
"#,
            db = s(&self.db),
            etc = s(&self.env.path("srv/etc")),
            pid = s(&self.pid_file),
            port = self.port,
        );
        std::fs::write(&self.cfg, text).unwrap();
    }

    fn url(&self, path: &Path) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.strip_prefix("/").unwrap().display()
        )
    }

    fn drill(&self, extra: &[&str]) -> Out {
        let mut args = vec!["--config", s(&self.cfg), "--json", "drill"];
        args.extend_from_slice(extra);
        self.env.run(args)
    }

    fn list(&self) -> Vec<serde_json::Value> {
        let out = self.env.ok(["--json", "drill", "list"]);
        out.json().as_array().unwrap().clone()
    }

    /// The service started by the last drill is gone.
    fn assert_service_stopped(&self) {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .expect("the drill started the service")
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the drill's service (pid {pid}) still runs");
        std::fs::remove_file(&self.pid_file).unwrap();
    }

    /// No scratch copy is left under the default scratch parent.
    fn assert_scratch_removed(&self) {
        let parent = self.env.xdg_cache.join("lifeboat/drill");
        let left: Vec<_> = std::fs::read_dir(&parent)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "scratch copies left: {left:?}");
    }
}

fn checks_of(v: &serde_json::Value) -> Vec<(String, bool)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["passed"].as_bool().unwrap()))
        .collect()
}

#[test]
fn a_drill_whose_checks_pass_is_recorded_and_leaves_nothing_behind() {
    let _serial = serial();
    let svc = Service::new();
    let _keep = KeepOnFailure(&svc.env, "drill_pass");
    svc.configure(&format!(
        r#"
[[drill.check]]
name = "rows survived"
sql = "SELECT count(*) FROM t WHERE v = 'row-' || id"
database = "app.db"
expect = 50

[[drill.check]]
name = "config served"
http = "{url}"
expect_status = 200

[[drill.check]]
name = "database in place"
command = "test -s \"$LIFEBOAT_DRILL_DIR{db}\""
"#,
        url = svc.url(&svc.env.path("srv/etc/app.toml")),
        db = s(&svc.db),
    ));
    let out = svc.drill(&[]).expect_code(0);
    let v = out.json();
    assert_eq!(v["result"], "pass", "{v:#}");
    let checks = checks_of(&v);
    let names: Vec<&str> = checks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "restore",
            "integrity app.db",
            "files app.db",
            "files etc",
            "start service",
            "rows survived",
            "config served",
            "database in place"
        ],
        "{v:#}"
    );
    assert!(checks.iter().all(|(_, p)| *p), "{v:#}");
    let key = v["key"].as_str().expect("recorded").to_string();
    assert!(key.starts_with("drills/"), "{key}");
    assert_eq!(v["sources"].as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(v["kept"], false);
    svc.assert_service_stopped();
    svc.assert_scratch_removed();

    let listed = svc.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["key"], key.as_str());
    assert_eq!(listed[0]["result"], "pass");
    assert_eq!(listed[0]["host"], hostname().as_str());
    // The text form follows the drill log template.
    let text = svc.env.ok(["drill", "list"]).stdout;
    assert!(text.contains("pass") && text.contains(&key), "{text}");
    // `lifeboat status` shows it as the last drill.
    let st = svc.env.ok(["--json", "status"]).json();
    assert_eq!(st["last_drill"]["passed"], true, "{st:#}");
    // And the drill is in the operations log.
    let log = svc.env.ok(["--json", "log"]).json();
    assert!(
        log.as_array().unwrap().iter().any(|r| r["command"] == "drill"),
        "{log:#}"
    );
}

/// Each kind of smoke check failing: exit 65, the record written and shown
/// by `drill list`, the other checks still run, the service stopped.
#[test]
fn failing_sql_http_and_command_checks_exit_65_with_a_record() {
    let _serial = serial();
    let svc = Service::new();
    let _keep = KeepOnFailure(&svc.env, "drill_fail");
    let present = svc.url(&svc.env.path("srv/etc/app.toml"));
    let missing = svc.url(&svc.env.path("srv/etc/missing.toml"));
    let cases = [
        (
            "sql",
            r#"sql = "SELECT count(*) FROM t"
database = "app.db"
expect = 49"#
                .to_string(),
            "returned `50`, expected `49`",
        ),
        (
            "http",
            format!("http = \"{missing}\"\nexpect_status = 200"),
            "404, expected 200",
        ),
        (
            "command",
            "command = \"echo the smoke; exit 3\"".to_string(),
            "exited 3",
        ),
    ];
    let fired = svc.env.path("drill-failure-hook.txt");
    for (i, (kind, check, says)) in cases.iter().enumerate() {
        svc.configure(&format!(
            "[[drill.check]]\nname = \"bad {kind}\"\n{check}\n\n[[drill.check]]\nname = \"good http\"\nhttp = \"{present}\"\n\n\
             [[hook]]\non = [\"drill.failure\"]\nrun = 'echo \"$LIFEBOAT_EVENT $LIFEBOAT_EXIT_CODE $LIFEBOAT_ERROR\" >> {}'\n",
            s(&fired)
        ));
        let out = svc.drill(&[]).expect_code(65);
        // The drill.failure hook ran, told which check failed.
        let told = std::fs::read_to_string(&fired).unwrap_or_default();
        assert_eq!(told.lines().count(), i + 1, "{told}");
        assert!(
            told.lines()
                .last()
                .unwrap()
                .starts_with("drill.failure 65 drill failed: bad ")
                && told.contains(&format!("bad {kind}")),
            "{told}"
        );
        let v = out.json();
        assert_eq!(v["result"], "fail", "{kind}: {v:#}");
        let failed: Vec<&serde_json::Value> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .collect();
        assert_eq!(failed.len(), 1, "{kind}: {v:#}");
        assert_eq!(failed[0]["name"], format!("bad {kind}").as_str());
        assert_eq!(failed[0]["kind"], *kind);
        assert!(failed[0]["detail"].as_str().unwrap().contains(says), "{kind}: {v:#}");
        // The check after the failed one still ran, against the service.
        assert!(
            checks_of(&v).contains(&("good http".to_string(), true)),
            "{kind}: {v:#}"
        );
        svc.assert_service_stopped();
        svc.assert_scratch_removed();
        let listed = svc.list();
        assert_eq!(listed.len(), i + 1, "{kind}");
        assert_eq!(listed[0]["key"], v["key"], "newest first");
        assert_eq!(listed[0]["result"], "fail");
        let text = svc.env.ok(["drill", "list"]).stdout;
        assert!(text.contains(&format!("failed bad {kind}")), "{text}");
        // status names the failed check of the newest drill.
        let st = svc.env.ok(["--json", "status"]).json();
        assert_eq!(st["last_drill"]["passed"], false, "{st:#}");
        assert_eq!(
            st["last_drill"]["failed_checks"][0],
            format!("bad {kind}").as_str(),
            "{st:#}"
        );
    }
    // The text report of a failed drill, without --json.
    let out = svc.env.run(["--config", s(&svc.cfg), "drill"]).expect_code(65);
    assert!(
        out.stdout.contains("Validation:") && out.stdout.contains("bad command: FAIL"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("exited 3: the smoke"), "{}", out.stdout);
    svc.assert_service_stopped();
}

#[test]
fn keep_leaves_the_scratch_copy_where_it_says() {
    let _serial = serial();
    let svc = Service::new();
    let _keep = KeepOnFailure(&svc.env, "drill_keep");
    // A check that needs the service, so it is up (its pid file written)
    // before it is stopped.
    svc.configure(&format!(
        "[[drill.check]]\nhttp = \"{}\"\n",
        svc.url(&svc.env.path("srv/etc/app.toml"))
    ));
    let dir = svc.env.path("drill-here");
    let out = svc.drill(&["--keep", "--scratch", s(&dir)]).expect_code(0);
    let v = out.json();
    assert_eq!(v["kept"], true);
    assert_eq!(v["scratch"], s(&dir));
    let copy = dir.join(svc.db.strip_prefix("/").unwrap());
    assert_eq!(integrity(&copy), "ok");
    assert_eq!(row_stats(&copy), (50, 1, 50, 0));
    assert_eq!(
        std::fs::read_to_string(dir.join(svc.env.path("srv/etc/app.toml").strip_prefix("/").unwrap())).unwrap(),
        "listen = 8080\n"
    );
    svc.assert_service_stopped();
    // The service's output is kept beside the copy.
    assert!(dir.join(".lifeboat-drill/service.log").exists());

    // A scratch directory that is not empty is refused, nothing changed.
    let before = std::fs::read_dir(&dir).unwrap().count();
    let out = svc.drill(&["--scratch", s(&dir)]).expect_code(73);
    assert_eq!(out.json()["error"]["event"], "drill.scratch_not_empty");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), before);
    // One inside a source is refused before anything is made.
    let inside = svc.env.path("srv/etc/drill");
    let out = svc.drill(&["--scratch", s(&inside)]).expect_code(64);
    assert_eq!(out.json()["error"]["event"], "drill.scratch_overlaps");
    assert!(!inside.exists());
    assert_eq!(svc.list().len(), 1, "refusals record no drill");
}

#[test]
fn an_interrupted_drill_stops_the_service_cleans_up_and_records_it() {
    let _serial = serial();
    let svc = Service::new();
    let _keep = KeepOnFailure(&svc.env, "drill_interrupt");
    let marker = svc.env.path("check-running");
    svc.configure(&format!(
        "[[drill.check]]\nhttp = \"{}\"\n\n[[drill.check]]\nname = \"slow\"\ncommand = \"touch {}; sleep 60\"\ntimeout = \"120s\"\n",
        svc.url(&svc.env.path("srv/etc/app.toml")),
        s(&marker)
    ));
    let mut c = svc.env.command();
    c.args(["--repo", &svc.env.repo_arg, "--config", s(&svc.cfg), "--json", "drill"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard {
        child: c.spawn().unwrap(),
    };
    wait_until("the slow check to run", 60, || marker.exists());
    signal(&child.child, libc::SIGTERM);
    let code = wait_exit(&mut child.child, 60);
    assert_eq!(code, 128 + libc::SIGTERM);
    svc.assert_service_stopped();
    svc.assert_scratch_removed();
    let listed = svc.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["result"], "interrupted");
}

#[test]
fn a_broken_drill_section_is_a_configuration_error() {
    let _serial = serial();
    let svc = Service::new();
    svc.configure("[[drill.check]]\nsql = \"SELECT 1\"\ndatabase = \"app.db\"\nhttp = \"http://127.0.0.1:1/\"\n");
    let out = svc.drill(&[]).expect_code(78);
    let e = &out.json()["error"];
    assert_eq!(e["event"], "config.invalid");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("[[drill.check]] #1: needs exactly one"),
        "{e}"
    );
    assert!(e["subject"].as_str().unwrap().ends_with("lifeboat.toml"), "{e}");
    svc.configure("[[drill.check]]\nsql = \"SELECT 1\"\n");
    let out = svc.drill(&[]).expect_code(78);
    assert!(
        out.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs `database`")
    );
    svc.configure("[[drill.check]]\nhttp = \"not a url\"\n");
    svc.drill(&[]).expect_code(78);
    assert!(svc.list().is_empty());
    assert!(!svc.pid_file.exists(), "no service started");
}

/// A backup that does not restore is the drill failing, not an error: exit
/// 65, recorded with the restore's own error, nothing else run.
#[test]
fn a_damaged_backup_is_a_failed_drill_with_a_record() {
    let _serial = serial();
    let svc = Service::new();
    let _keep = KeepOnFailure(&svc.env, "drill_damaged");
    svc.configure(&format!(
        "[[drill.check]]\nhttp = \"{}\"\n",
        svc.url(&svc.env.path("srv/etc/app.toml"))
    ));
    let mut packs = Vec::new();
    let mut dirs = vec![svc.env.repo.join("data")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                packs.push(e.path());
            }
        }
    }
    assert!(!packs.is_empty());
    for p in &packs {
        let mut bytes = std::fs::read(p).unwrap();
        let half = bytes.len() / 2;
        for b in bytes.iter_mut().skip(16).take(half) {
            *b ^= 0x5a;
        }
        std::fs::write(p, bytes).unwrap();
    }
    let v = svc.drill(&[]).expect_code(65).json();
    assert_eq!(v["result"], "fail", "{v:#}");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "nothing runs after a failed restore: {v:#}");
    assert_eq!(checks[0]["kind"], "restore");
    assert_eq!(checks[0]["passed"], false);
    assert!(checks[0]["detail"].as_str().unwrap().contains("exit 65"), "{v:#}");
    assert!(!svc.pid_file.exists(), "no service started on a failed restore");
    svc.assert_scratch_removed();
    assert_eq!(svc.list()[0]["result"], "fail");
}

/// A drill killed with SIGKILL cannot clean up: its service goes with it
/// (it gets SIGTERM when Lifeboat dies), and the next drill removes the
/// scratch copy it left, but never one kept with --keep.
#[test]
fn the_next_drill_sweeps_what_a_killed_one_left() {
    let _serial = serial();
    let svc = Service::new();
    let _keep = KeepOnFailure(&svc.env, "drill_killed");
    let up = svc.url(&svc.env.path("srv/etc/app.toml"));
    // A copy kept on purpose, in the same place.
    svc.configure(&format!("[[drill.check]]\nhttp = \"{up}\"\n"));
    let kept = svc.drill(&["--keep"]).json();
    let kept_dir = PathBuf::from(kept["scratch"].as_str().unwrap());
    svc.assert_service_stopped();

    let marker = svc.env.path("check-running");
    svc.configure(&format!(
        "[[drill.check]]\nhttp = \"{up}\"\n\n[[drill.check]]\ncommand = \"touch {}; exec sleep 60\"\ntimeout = \"120s\"\n",
        s(&marker)
    ));
    let mut c = svc.env.command();
    c.args(["--repo", &svc.env.repo_arg, "--config", s(&svc.cfg), "drill"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard {
        child: c.spawn().unwrap(),
    };
    wait_until("the slow check to run", 60, || marker.exists());
    signal(&child.child, libc::SIGKILL);
    wait_exit(&mut child.child, 60);
    let pid: i32 = std::fs::read_to_string(&svc.pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    wait_until(
        "the killed drill's service to stop",
        30,
        || unsafe { libc::kill(pid, 0) } != 0,
    );
    std::fs::remove_file(&svc.pid_file).unwrap();
    let parent = svc.env.xdg_cache.join("lifeboat/drill");
    let left = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    assert_eq!(left().len(), 2, "the killed drill's copy is still there");

    svc.configure("");
    svc.drill(&[]).expect_code(0);
    assert_eq!(left(), [kept_dir], "only the kept copy remains");
}

/// A service that dies at once fails its http checks at once, saying so,
/// rather than after the timeout.
#[test]
fn a_service_that_exits_fails_its_http_checks() {
    let _serial = serial();
    let svc = Service::new();
    let text = std::fs::read_to_string(&svc.cfg).unwrap();
    let start = text.lines().find(|l| l.starts_with("start = ")).unwrap().to_string();
    let text = text.replace(&start, "start = \"echo cannot bind >&2; exit 3\"")
        + "[[drill.check]]\nhttp = \"http://127.0.0.1:1/up\"\ntimeout = \"20s\"\n";
    std::fs::write(&svc.cfg, text).unwrap();
    let v = svc.drill(&[]).expect_code(65).json();
    let check = v["checks"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(check["kind"], "http");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("the service exited (exited 3)"),
        "{v:#}"
    );
    let notes = v["notes"].to_string();
    assert!(notes.contains("cannot bind"), "the service's last words: {v:#}");
}
