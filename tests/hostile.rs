//! The attack catalog (issue 22): crafted manifests, objects that are not
//! files, full disks and interrupted restores. Each case asserts its exit
//! code and that nothing outside the restore's target changed.

mod common;

use std::path::Path;

use common::{Env, describe, s};

/// Write `manifest` (a `show --json` manifest, edited) into the repository as
/// a snapshot of its own and return its id: what an attacker with write
/// access to the bucket, or a damaged disk, can do.
fn plant_manifest(env: &Env, manifest: &serde_json::Value) -> String {
    let json = serde_json::to_vec(manifest).unwrap();
    let id = blake3::hash(&json).to_hex().to_string();
    let path = env.repo.join("snapshots").join(&id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, lifeboat::codec::encode(&json, 3)).unwrap();
    id
}

/// `<root>/svc` holding `a.txt` ("restored content"), its snapshot's
/// manifest, and a victim file outside every target, with its content.
fn fixture(env: &Env) -> (serde_json::Value, std::path::PathBuf) {
    let svc = env.path("svc");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("a.txt"), "restored content").unwrap();
    let id = env.snapshot(&[&svc]);
    let victim = env.path("outside/victim");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::write(&victim, "the operator's file").unwrap();
    (env.manifest(&id), victim)
}

/// The entry for `a.txt` in a directory source's entries.
fn file_entry(manifest: &serde_json::Value) -> serde_json::Value {
    manifest["sources"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "a.txt")
        .cloned()
        .expect("a.txt entry")
}

/// Restore `id` into a fresh `--to` directory: it must exit 65 naming the
/// unsafe manifest, leave the victim's directory as it was and create nothing
/// in the target.
fn assert_refused_untouched(env: &Env, id: &str, victim: &Path) {
    let outside_before = describe(victim.parent().unwrap());
    let target = env.path("drill");
    let out = env.run(["restore", id, "--to", s(&target)]);
    assert_eq!(out.code, 65, "crafted manifest must be refused as damage:\n{out:?}");
    assert!(
        out.stderr.contains("restore.unsafe_manifest"),
        "the error names the unsafe manifest:\n{}",
        out.stderr
    );
    assert_eq!(
        describe(victim.parent().unwrap()),
        outside_before,
        "outside the target changed"
    );
    assert_eq!(std::fs::read_to_string(victim).unwrap(), "the operator's file");
    assert!(
        !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
        "nothing is written into the target: {:?}",
        describe(&target)
    );
}

#[test]
fn a_symlink_then_a_file_of_the_same_name_never_writes_outside_the_target() {
    let _serial = common::serial();
    let env = Env::new();
    let (mut m, victim) = fixture(&env);
    let mut link = file_entry(&m);
    link["type"] = "symlink".into();
    link["path"] = "x".into();
    link["target"] = s(&victim).into();
    for k in ["size", "blake3", "chunks"] {
        link.as_object_mut().unwrap().remove(k);
    }
    let mut file = file_entry(&m);
    file["path"] = "x".into();
    let entries = m["sources"][0]["entries"].as_array_mut().unwrap();
    entries.push(link);
    entries.push(file);
    let id = plant_manifest(&env, &m);
    assert_refused_untouched(&env, &id, &victim);
}

/// One way of crafting a manifest.
type Edit<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;

#[test]
fn entries_beneath_a_symlink_or_climbing_out_are_refused() {
    let _serial = common::serial();
    let env = Env::new();
    let (m, victim) = fixture(&env);
    let cases: Vec<(&str, Edit)> = vec![
        (
            "file beneath a symlink to a directory outside",
            Box::new(|m| {
                let mut link = file_entry(m);
                link["type"] = "symlink".into();
                link["path"] = "d".into();
                link["target"] = s(victim.parent().unwrap()).into();
                for k in ["size", "blake3", "chunks"] {
                    link.as_object_mut().unwrap().remove(k);
                }
                let mut file = file_entry(m);
                file["path"] = "d/victim".into();
                let entries = m["sources"][0]["entries"].as_array_mut().unwrap();
                entries.push(link);
                entries.push(file);
            }),
        ),
        (
            "a path climbing with ..",
            Box::new(|m| {
                let mut file = file_entry(m);
                file["path"] = "../../outside/victim".into();
                m["sources"][0]["entries"].as_array_mut().unwrap().push(file);
            }),
        ),
        (
            "an absolute source name",
            Box::new(|m| m["sources"][0]["name"] = s(&victim).into()),
        ),
        (
            "a source name climbing out",
            Box::new(|m| m["sources"][0]["name"] = "../outside".into()),
        ),
        (
            "a relative source path",
            Box::new(|m| m["sources"][0]["path"] = "svc/../../outside".into()),
        ),
        (
            "a file entry repeated",
            Box::new(|m| {
                let file = file_entry(m);
                m["sources"][0]["entries"].as_array_mut().unwrap().push(file);
            }),
        ),
    ];
    for (what, edit) in cases {
        let mut crafted = m.clone();
        edit(&mut crafted);
        let id = plant_manifest(&env, &crafted);
        eprintln!("case: {what}");
        assert_refused_untouched(&env, &id, &victim);
        std::fs::remove_file(env.repo.join("snapshots").join(&id)).unwrap();
    }
}

/// A tmpfs of `mib` MiB mounted for the test, unmounted when dropped. The
/// suite runs as root (CI does), so a full filesystem is a real one.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", s(at)])
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root, as the suite runs");
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_snapshot_onto_a_full_disk_ends_74_and_the_repository_recovers_alone() {
    let _serial = common::serial();
    let env = Env::bare();
    if env.is_s3() {
        return; // the repository's own disk is what this tests
    }
    let disk = SmallDisk::mount(&env.path("small"), 24);
    let repo = disk.0.join("repo");
    let repo = s(&repo);
    common::run_bounded(&env, repo, &["init"], 60).expect_code(0);
    // ~80 MiB, ~40 MiB compressed: the first 16 MiB pack is stored, the
    // second fills the disk.
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    common::create_db(&db, 80_000, 1000, true);

    let out = common::run_bounded(&env, repo, &["snapshot", s(&db)], 120);
    assert_eq!(out.code, 74, "a full disk is an I/O failure:\n{out:?}");
    assert!(out.stderr.contains("No space left"), "names the cause:\n{}", out.stderr);

    // No lock left behind, no manual clean-up: prune runs first on the full
    // disk, then a small snapshot goes through.
    common::run_bounded(&env, repo, &["prune"], 120).expect_code(0);
    let small = env.path("svc/server.toml");
    std::fs::write(&small, "port = 8080\n").unwrap();
    common::run_bounded(&env, repo, &["snapshot", s(&small)], 120).expect_code(0);
    let staging = disk.0.join("repo/tmp");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging is clear after recovery: {left:?}");
    common::run_bounded(&env, repo, &["verify", "--read-data"], 120).expect_code(0);
}

fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

#[test]
fn a_fifo_where_a_pack_or_manifest_belongs_is_damage_not_a_hang() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        return; // s3s-fs itself would block on a FIFO: the local store is what this tests
    }
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    common::create_db(&db, 2_000, 100, true);
    let id = env.snapshot(&[&db]);
    let repo = env.repo_arg.clone();

    let pack = common::files_under(&env.repo.join("data"))
        .into_iter()
        .next()
        .expect("a pack");
    let pack = env.repo.join("data").join(pack);
    std::fs::remove_file(&pack).unwrap();
    make_fifo(&pack);
    let target = env.path("drill");
    let out = common::run_bounded(&env, &repo, &["restore", &id, "--to", s(&target)], 60);
    assert_eq!(out.code, 65, "{out:?}");
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    let out = common::run_bounded(&env, &repo, &["verify", "--read-data"], 60);
    assert_eq!(out.code, 65, "{out:?}");

    let manifest = env.repo.join("snapshots").join(&id);
    std::fs::remove_file(&manifest).unwrap();
    make_fifo(&manifest);
    let out = common::run_bounded(&env, &repo, &["restore", &id, "--to", s(&target)], 60);
    assert_eq!(out.code, 65, "{out:?}");
    let out = common::run_bounded(&env, &repo, &["verify"], 60);
    assert_eq!(out.code, 65, "{out:?}");
}

/// The staging entries a restore leaves in `dir`.
fn staging_in(dir: &Path) -> Vec<std::path::PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    common::entries_starting(dir, ".lifeboat-restore-")
}

/// Start `restore ARGS`, wait until its staging appears in `watch`, then send
/// `sig` while it is still running; returns its exit status. Panics if the
/// restore finished first: a kill that lands after the work proves nothing.
fn interrupt_restore(env: &Env, args: &[&str], watch: &Path, sig: libc::c_int) -> std::process::ExitStatus {
    let mut c = env.command();
    c.arg("--repo").arg(&env.repo_arg).arg("restore").args(args);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = common::ChildGuard {
        child: c.spawn().unwrap(),
    };
    common::wait_until("the restore's staging", 120, || {
        !staging_in(watch).is_empty() || !child.still_running()
    });
    assert!(
        child.still_running(),
        "the restore ended before it could be interrupted"
    );
    common::signal(&child.child, sig);
    child.child.wait().unwrap()
}

/// `<root>/svc/state.db`, ~150 MiB, so a restore runs long enough to be
/// interrupted, and its snapshot id.
fn big_db_snapshot(env: &Env) -> String {
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    common::create_db(&db, 150_000, 1000, true);
    env.snapshot(&[&db])
}

#[test]
fn a_killed_restore_leaves_staging_the_next_restore_removes() {
    let _serial = common::serial();
    let env = Env::new();
    let id = big_db_snapshot(&env);
    let target = env.path("drill");
    std::fs::create_dir_all(&target).unwrap();
    let db_dir = common::under(&target, &env.path("svc"));
    let status = interrupt_restore(&env, &[&id, "--to", s(&target)], &db_dir, libc::SIGKILL);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!staging_in(&db_dir).is_empty(), "SIGKILL leaves staging behind");
    // Not a non-empty target (73): the retry recognises the dead restore's
    // staging, removes it and restores.
    env.ok(["restore", &id, "--to", s(&target)]);
    assert!(staging_in(&db_dir).is_empty(), "{:?}", describe(&db_dir));
    assert_eq!(common::integrity(&db_dir.join("state.db")), "ok");

    // The same beside a single output file.
    let out_dir = env.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("copy.db");
    interrupt_restore(&env, &[&id, "-o", s(&out)], &out_dir, libc::SIGKILL);
    assert!(!staging_in(&out_dir).is_empty());
    env.ok(["restore", &id, "-o", s(&out)]);
    assert!(staging_in(&out_dir).is_empty(), "{:?}", describe(&out_dir));
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "nothing left in {}: {left:?}", dir.display());
}

#[test]
fn sigterm_or_sigint_during_a_restore_removes_its_staging() {
    let _serial = common::serial();
    let env = Env::new();
    let id = big_db_snapshot(&env);
    for (sig, name) in [(libc::SIGTERM, "sigterm"), (libc::SIGINT, "sigint")] {
        let target = env.path(name);
        std::fs::create_dir_all(&target).unwrap();
        let db_dir = common::under(&target, &env.path("svc"));
        let status = interrupt_restore(&env, &[&id, "--to", s(&target)], &db_dir, sig);
        assert_eq!(
            status.code(),
            Some(128 + sig),
            "exit 128 + signal, as a shell reports it"
        );
        // The folders it created on the way went with it.
        assert_empty(&target);
        let out = target.join("copy.db");
        let status = interrupt_restore(&env, &[&id, "-o", s(&out)], &target, sig);
        assert_eq!(status.code(), Some(128 + sig));
        assert_empty(&target);
    }
}

#[test]
fn a_secret_inside_an_endpoint_url_is_never_echoed() {
    let _serial = common::serial();
    let env = Env::bare();
    let port = common::s3::free_port();
    for json in [false, true] {
        let url = format!("s3://bkt?endpoint=http://user:hunter2pw@127.0.0.1:{port}&region=x");
        let mut c = env.command();
        c.env("LIFEBOAT_RETRY_SECONDS", "1");
        if json {
            c.arg("--json");
        }
        c.args(["--repo", &url, "list"]);
        let out = common::run_command(c);
        assert_eq!(out.code, 75, "{out:?}");
        let shown = format!("{}{}", out.stdout, out.stderr);
        assert!(shown.contains("user:***@127.0.0.1"), "names the endpoint:\n{shown}");
        assert!(
            !out.stderr.contains("hunter2pw") && !out.stdout.contains("hunter2pw"),
            "the password is echoed:\n{out:?}"
        );
    }
}

#[test]
fn a_flipped_envelope_tag_is_damage_not_a_newer_version() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        // An S3 repository's host cache keeps verified copies of manifests
        // and index files, so damage made on the server behind its back is
        // not read: the repository's own files are what this damages.
        return;
    }
    let svc = env.path("svc");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("a.txt"), "content").unwrap();
    let id = env.snapshot(&[&svc]);
    let manifest = env.repo.join("snapshots").join(&id);
    let mut raw = std::fs::read(&manifest).unwrap();
    raw[0] = 0x07;
    std::fs::write(&manifest, raw).unwrap();
    let out = env.run(["restore", &id, "--to", s(&env.path("drill"))]);
    assert_eq!(out.code, 65, "{out:?}");
    assert!(
        out.stderr.contains("verify --read-data"),
        "the fix is named:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("upgrade"), "{}", out.stderr);
}

/// The repository's objects, without the operations log and the lock file
/// (which names its last holder).
fn repo_state(env: &Env) -> std::collections::BTreeMap<String, common::Node> {
    let mut state = common::describe_without_log(&env.repo);
    state.remove("lock");
    state
}

/// Flip one byte in the middle of `path`.
fn flip_byte(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    flip_at(path, len / 2);
}

fn flip_at(path: &Path, at: usize) {
    let mut raw = std::fs::read(path).unwrap();
    raw[at] ^= 0x5a;
    std::fs::write(path, raw).unwrap();
}

fn names_in(dir: &Path) -> std::collections::BTreeSet<String> {
    common::files_under(dir).into_iter().collect()
}

/// Two snapshots of two services, each in its own packs and index file:
/// (id of A, id of B, A's index file, B's index file, B's packs).
fn two_services(env: &Env) -> (String, String, String, String, Vec<String>) {
    let mut ids = Vec::new();
    let mut index_files = Vec::new();
    let mut packs = Vec::new();
    for name in ["svc-a", "svc-b"] {
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data.bin"), format!("{name} ").repeat(5000)).unwrap();
        let index_before = names_in(&env.repo.join("index"));
        let packs_before = names_in(&env.repo.join("data"));
        ids.push(env.snapshot(&[&dir]));
        let new_index: Vec<String> = names_in(&env.repo.join("index"))
            .difference(&index_before)
            .cloned()
            .collect();
        assert_eq!(new_index.len(), 1, "one index file per snapshot");
        index_files.push(new_index[0].clone());
        packs = names_in(&env.repo.join("data"))
            .difference(&packs_before)
            .cloned()
            .collect();
    }
    (
        ids[0].clone(),
        ids[1].clone(),
        index_files[0].clone(),
        index_files[1].clone(),
        packs,
    )
}

#[test]
fn a_damaged_manifest_costs_only_its_snapshot_and_verify_reports_every_problem() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        // An S3 repository's host cache keeps verified copies of manifests
        // and index files, so damage made on the server behind its back is
        // not read: the repository's own files are what this damages.
        return;
    }
    let (a, b, _, _, b_packs) = two_services(&env);
    flip_byte(&env.repo.join("snapshots").join(&a));

    let listed = env.list();
    let ids: Vec<&str> = listed.iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, [b.as_str()], "list shows the readable snapshot");
    let out = env.ok(["list"]);
    assert!(
        out.stderr.contains("repo.manifest_damaged") && out.stderr.contains(&a[..8]),
        "list names the damaged one: {}",
        out.stderr
    );
    env.ok(["restore", &b, "--to", s(&env.path("drill-b"))]);
    assert_eq!(env.run(["restore", &a, "--to", s(&env.path("drill-a"))]).code, 65);
    assert_eq!(env.run(["restore", "latest", "--to", s(&env.path("drill-l"))]).code, 0);

    // A damaged pack of B as well: verify names both, each with its snapshot.
    // (In its first frame, past the envelope's tag: the data, not the header.)
    flip_at(&env.repo.join("data").join(&b_packs[0]), 2);
    let out = env.run(["--json", "verify", "--read-data"]);
    assert_eq!(out.code, 65, "{out:?}");
    let problems = out.json()["problems"].as_array().cloned().unwrap_or_default();
    let damaged: std::collections::BTreeSet<&str> = problems.iter().filter_map(|p| p["snapshot"].as_str()).collect();
    assert!(
        damaged.contains(a.as_str()),
        "the manifest's snapshot is named: {problems:?}"
    );
    assert!(
        damaged.contains(b.as_str()),
        "the pack's snapshot is named: {problems:?}"
    );

    // Deleting anything while a manifest is damaged could lose the data it
    // references: forget and prune refuse, and change nothing.
    let before = repo_state(&env);
    assert_eq!(env.run(["forget", "--keep-last", "1", "--prune"]).code, 65);
    assert_eq!(env.run(["prune"]).code, 65);
    assert_eq!(repo_state(&env), before);

    // repair snapshots sets it aside, keeping its bytes; then both run.
    let out = env.ok(["--json", "repair", "snapshots"]);
    assert_eq!(out.json()["set_aside"][0][0], a.as_str(), "{}", out.stdout);
    assert!(env.repo.join("damaged/snapshots").join(&a).is_file());
    assert!(!env.repo.join("snapshots").join(&a).exists());
    let again = env.ok(["--json", "repair", "snapshots"]);
    assert_eq!(again.json()["set_aside"], serde_json::json!([]), "idempotent");
    let out = env.ok(["list"]);
    assert!(!out.stderr.contains("repo.manifest_damaged"), "{}", out.stderr);
    env.ok(["forget", "--keep-last", "1", "--prune"]);
}

#[test]
fn a_damaged_index_file_costs_only_the_snapshots_it_indexes_and_stray_files_are_ignored() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        // An S3 repository's host cache keeps verified copies of manifests
        // and index files, so damage made on the server behind its back is
        // not read: the repository's own files are what this damages.
        return;
    }
    let (a, b, _, b_index, _) = two_services(&env);
    std::fs::write(env.repo.join("index/README.txt"), "notes an operator left").unwrap();
    env.ok(["restore", &a, "--to", s(&env.path("drill-0"))]);
    env.ok(["verify", "--read-data"]);

    flip_byte(&env.repo.join("index").join(&b_index));
    env.ok(["restore", &a, "--to", s(&env.path("drill-a"))]);
    assert_eq!(env.list().len(), 2);
    let out = env.run(["restore", &b, "--to", s(&env.path("drill-b"))]);
    assert_eq!(out.code, 65, "{out:?}");
    let out = env.run(["--json", "verify"]);
    assert_eq!(out.code, 65, "{out:?}");
    let problems = out.json()["problems"].as_array().cloned().unwrap_or_default();
    assert!(
        problems.iter().any(|p| p["snapshot"] == b.as_str()),
        "verify names the snapshot the index file costs: {problems:?}"
    );
    assert!(
        problems.iter().all(|p| p["snapshot"] != a.as_str()),
        "and not the other: {problems:?}"
    );
    let before = repo_state(&env);
    assert_eq!(env.run(["prune"]).code, 65, "prune would take B's packs for garbage");
    assert_eq!(repo_state(&env), before);

    // repair index rebuilds B's entries from its packs' headers.
    let plan = env.ok(["--json", "repair", "index", "--dry-run"]);
    assert_eq!(repo_state(&env), before, "a dry run changes nothing");
    assert_eq!(plan.json()["index_files_set_aside"][0], format!("index/{b_index}"));
    let out = env.ok(["--json", "repair", "index"]);
    assert!(
        !out.json()["packs_reindexed"].as_array().unwrap().is_empty(),
        "{}",
        out.stdout
    );
    assert!(
        env.repo.join("damaged/index").join(&b_index).is_file(),
        "kept under damaged/"
    );
    let again = env.ok(["--json", "repair", "index"]);
    assert_eq!(again.json()["packs_reindexed"], serde_json::json!([]), "idempotent");
    env.ok(["restore", &b, "--to", s(&env.path("drill-b2"))]);
    env.ok(["verify", "--read-data"]);
    env.ok(["prune"]);
    env.ok(["restore", &b, "--to", s(&env.path("drill-b3"))]);
}

#[test]
fn a_truncated_database_is_refused_and_a_damaged_one_can_still_be_got_out() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    common::create_db(&db, 2_000, 500, false);

    // Truncated mid-page: refused at capture, nothing published (it would
    // verify and never restore).
    let whole = std::fs::read(&db).unwrap();
    std::fs::write(&db, &whole[..whole.len() - 1000]).unwrap();
    let out = env.run(["snapshot", s(&db)]);
    assert_eq!(out.code, 65, "{out:?}");
    assert!(
        out.stderr.contains("state.db") && out.stderr.contains("truncated"),
        "{}",
        out.stderr
    );
    assert!(env.list().is_empty(), "nothing published");

    // Whole pages, damaged b-tree: captured as it is (only SQLite can tell),
    // refused on restore with one line naming the database, and its bytes
    // can be got out for forensics with --no-integrity-check.
    let mut damaged = whole.clone();
    let page = 4096;
    for b in &mut damaged[page + 100..page + 400] {
        *b = 0xA5;
    }
    std::fs::write(&db, &damaged).unwrap();
    let id = env.snapshot(&[&db]);
    env.ok(["verify", "--read-data"]);
    let copy = env.path("out/copy.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let out = env.run(["restore", &id, "-o", s(&copy)]);
    assert_eq!(out.code, 65, "{out:?}");
    let line = out.stderr.lines().find(|l| l.starts_with("lifeboat: error:")).unwrap();
    assert!(
        line.contains("database state.db") && line.contains("--no-integrity-check"),
        "{line}"
    );
    assert!(!copy.exists());
    let out = env.ok(["restore", &id, "-o", s(&copy), "--no-integrity-check", "-q"]);
    assert!(out.stderr.contains("NOT checked"), "loud even with -q: {}", out.stderr);
    assert_eq!(std::fs::read(&copy).unwrap(), damaged, "the captured bytes, exactly");
}

/// tests/corpus/manifests: the crafted manifests of the catalog, checked in.
/// `ok-*` must pass the layout check, `bad-*` must be refused by it, and a
/// restore of each planted `bad-*` exits 65 before writing anything.
#[test]
fn the_checked_in_corpus_of_crafted_manifests_is_refused_before_any_write() {
    let _serial = common::serial();
    let env = Env::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/manifests");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let bad = names.iter().filter(|n| n.starts_with("bad-")).count();
    assert!(bad >= 12, "the corpus holds {bad} crafted cases");
    for name in &names {
        let json = std::fs::read(dir.join(name)).unwrap();
        let m = lifeboat::repo::manifest::Manifest::from_json(&json, name)
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        let checked = m.check_layout(name);
        if name.starts_with("ok-") {
            checked.unwrap_or_else(|e| panic!("{name} is refused: {e}"));
            continue;
        }
        let e = checked.expect_err(name);
        assert_eq!(
            (e.kind, e.code.event()),
            (lifeboat::ErrorKind::BadData, "restore.unsafe_manifest"),
            "{name}"
        );
        // End to end: planted in a repository, its restore writes nothing.
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let id = plant_manifest(&env, &value);
        let target = env.path(&format!("drill-{name}"));
        let out = env.run(["restore", &id, "--to", s(&target)]);
        assert_eq!(out.code, 65, "{name}: {out:?}");
        assert!(!target.exists(), "{name}: the target was created");
        std::fs::remove_file(env.repo.join("snapshots").join(&id)).unwrap();
    }
}

#[test]
fn repair_killed_at_every_step_finishes_when_run_again() {
    // Issue 22: the repair commands are idempotent and crash-safe. Killed
    // at each of their write steps in turn, from the same damaged start,
    // a second run finishes and the repository verifies and restores.
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        return; // the damaged template is copied as files
    }
    let (a, b, _, b_index, _) = two_services(&env);
    flip_byte(&env.repo.join("index").join(&b_index));
    let extra = env.path("svc-c");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("c.txt"), "c").unwrap();
    let c = env.snapshot(&[&extra]);
    flip_byte(&env.repo.join("snapshots").join(&c));
    let template = env.path("repo-template");
    common::copy_tree(&env.repo, &template);
    for what in ["index", "snapshots"] {
        let (interrupted, out) = common::kill_at_every_step(&env, &["repair", what], |n| {
            env.ok(["repair", "index"]);
            env.ok(["repair", "snapshots"]);
            env.ok(["verify", "--read-data"]);
            for id in [&a, &b] {
                let to = env.path("check");
                let _ = std::fs::remove_dir_all(&to);
                env.ok(["restore", id, "--to", s(&to)]);
            }
            assert!(
                env.repo.join("damaged").exists(),
                "repair {what}, killed at {n}: kept nothing aside"
            );
            std::fs::remove_dir_all(&env.repo).unwrap();
            common::copy_tree(&template, &env.repo);
        });
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            interrupted >= 2,
            "repair {what}: only {interrupted} runs were interrupted"
        );
        eprintln!("repair {what}: killed at each of its {interrupted} steps");
        std::fs::remove_dir_all(&env.repo).unwrap();
        common::copy_tree(&template, &env.repo);
    }
}
