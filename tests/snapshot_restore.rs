//! Snapshots and restores through the real binary: a live writer process,
//! several databases plus directories restored byte-identical, and page-level
//! deduplication of a second snapshot.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Env, create_db, describe, node, read_progress, row_stats, s};

/// Child process for `snapshots_under_a_live_writer` (inert unless re-executed).
#[test]
fn writer_child() {
    common::writer_child_main();
}

#[test]
fn snapshots_under_a_live_writer_restore_exact_prefixes() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // A few MiB, so each snapshot takes a while as rows keep arriving.
    create_db(&db, 8000, 400, true);
    let progress = env.path("writer.progress");
    let mut writer = common::spawn_self(
        "writer_child",
        &[(common::WRITER_DB, &db), (common::WRITER_PROGRESS, &progress)],
    );
    common::wait_until("the writer to commit rows", 60, || {
        read_progress(&progress).is_some_and(|n| n >= 8050)
    });

    let mut taken = Vec::new();
    for _ in 0..3 {
        let before = read_progress(&progress).expect("writer progress");
        let id = env.snapshot(&[&db]);
        let after = read_progress(&progress).expect("writer progress");
        taken.push((id, before, after));
        // Let the writer move on so the snapshots see different states.
        common::wait_until("more commits", 60, || {
            read_progress(&progress).is_some_and(|n| n >= after + 25)
        });
    }
    assert!(
        writer.still_running(),
        "the writer process died while snapshots were taken"
    );
    // Writers are never blocked: the writer committed while snapshots read.
    assert!(
        taken.iter().any(|(_, before, after)| after > before),
        "the writer committed nothing while any snapshot ran: {:?}",
        taken.iter().map(|(_, b, a)| (b, a)).collect::<Vec<_>>()
    );
    drop(writer); // SIGKILL: the database now has a hot WAL, which is fine.

    let listed = env.list();
    assert_eq!(listed.len(), 3, "three snapshots listed: {listed:?}");
    let mut last_k = 0;
    for (i, (id, before, after)) in taken.iter().enumerate() {
        let out = env.path(&format!("restored-{i}.db"));
        env.ok(["restore", id, "-o", s(&out)]);
        for side in common::sidecars(&out) {
            assert!(
                !side.exists(),
                "stale sidecar beside the restored database: {}",
                side.display()
            );
        }
        assert_eq!(
            common::integrity(&out),
            "ok",
            "restored snapshot {i} fails integrity_check"
        );
        let (count, min, max, bad) = row_stats(&out);
        eprintln!("snapshot {i}: writer at {before} before, {after} after; restored rows 1..={max}");
        assert_eq!(min, 1, "snapshot {i}: rows must start at 1");
        assert_eq!(
            count, max,
            "snapshot {i}: rows 1..=max with no gap (count {count}, max {max})"
        );
        assert_eq!(bad, 0, "snapshot {i}: rows with the wrong content");
        assert!(
            max >= *before,
            "snapshot {i} holds rows 1..={max} but the writer had committed {before} before it started"
        );
        // The progress file trails the commit by at most one row.
        assert!(
            max <= after + 1,
            "snapshot {i} holds rows up to {max}, more than were committed ({after}) when it ended"
        );
        assert!(max > last_k, "later snapshots hold more rows ({max} after {last_k})");
        last_k = max;
    }
    env.ok(["verify", "--read-data"]);
}

/// Set a path's mtime (without following symlinks) to `secs` + `nanos`.
fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory with nested dirs, modes, symlinks (relative, absolute dangling,
/// to a directory, out of the tree), an empty file, a multi-chunk file and
/// duplicated content, all with explicit mtimes.
fn build_tree(root: &Path, seed: u8) {
    let dirs = ["", "sub", "sub/deeper", "sub/deeper/deepest", "empty", "private"];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let files: [(&str, Vec<u8>, u32); 7] = [
        ("readme.txt", format!("tree {seed}\n").repeat(100).into_bytes(), 0o644),
        ("run.sh", b"#!/bin/sh\necho hello\n".to_vec(), 0o755),
        ("private/secret.key", vec![seed; 600], 0o600),
        ("sub/deeper/c.txt", b"deep content\n".to_vec(), 0o640),
        ("sub/deeper/deepest/ro.txt", b"read only\n".to_vec(), 0o444),
        ("sub/empty.bin", Vec::new(), 0o600),
        (
            "sub/copy-of-readme.txt",
            format!("tree {seed}\n").repeat(100).into_bytes(),
            0o644,
        ),
    ];
    for (rel, data, mode) in &files {
        let p = root.join(rel);
        std::fs::write(&p, data).unwrap();
        chmod(&p, *mode);
    }
    // Several content-defined chunks (the chunker averages 1 MiB).
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed as u64;
    while big.len() < (3 << 20) + 12345 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(root.join("sub/big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("sub/deeper/c.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/lifeboat/target", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("sub", root.join("link-dir")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", root.join("sub/link-out")).unwrap();
    if common_is_root() {
        std::os::unix::fs::lchown(root.join("private/secret.key"), Some(1234), Some(2345)).unwrap();
        std::os::unix::fs::lchown(root.join("link-rel"), Some(1234), Some(2345)).unwrap();
    }
    chmod(&root.join("private"), 0o700);
    chmod(&root.join("sub/deeper"), 0o750);
    // mtimes last, deepest first, so setting them is not undone.
    let mut all: Vec<String> = describe(root).into_keys().collect();
    all.sort_by_key(|k| std::cmp::Reverse(k.matches('/').count() + usize::from(!k.is_empty())));
    for (i, rel) in all.iter().enumerate() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        set_mtime(
            &p,
            1_600_000_000 + i as i64 * 3600 + seed as i64,
            123_456_789 + i as u32,
        );
    }
}

fn common_is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn several_databases_and_directories_restore_byte_identical() {
    let _serial = common::serial();
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("conf")).unwrap();
    let a = src.join("a.db");
    let b = src.join("b.sqlite");
    create_db(&a, 3000, 200, true);
    create_db(&b, 500, 100, false); // rollback journal: captured, with a warning
    chmod(&a, 0o600);
    chmod(&b, 0o640);
    let uploads = src.join("uploads");
    let etc = src.join("etc");
    build_tree(&uploads, 1);
    build_tree(&etc, 2);
    let conf = src.join("conf/app.toml");
    std::fs::write(&conf, "listen = \"127.0.0.1:8443\"\n").unwrap();
    chmod(&conf, 0o600);
    set_mtime(&conf, 1_650_000_000, 42);

    let a_hash = common::blake3_file(&a);
    let b_hash = common::blake3_file(&b);
    let uploads_desc = describe(&uploads);
    let etc_desc = describe(&etc);
    let conf_node = node(&conf);
    assert!(uploads_desc.len() > 15, "fixture tree is populated: {uploads_desc:?}");

    let out = env
        .run([
            "snapshot",
            s(&a),
            s(&b),
            s(&uploads),
            s(&etc),
            s(&conf),
            "--tag",
            "nightly",
        ])
        .expect_code(0);
    assert!(
        out.stderr.contains("not WAL"),
        "a non-WAL database is captured with a warning; stderr:\n{}",
        out.stderr
    );
    let id = out.stdout.lines().last().unwrap().trim().to_string();

    let listed = env.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["tags"], serde_json::json!(["nightly"]));
    let names: Vec<&str> = listed[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.db", "b.sqlite", "uploads", "etc", "app.toml"]);
    let text = env.ok(["list"]).stdout;
    assert!(text.contains(&id[..8]), "plain list names the snapshot:\n{text}");
    let manifest = env.manifest(&id);
    let a_src = &manifest["sources"][0];
    assert_eq!(a_src["type"], "sqlite");
    assert_eq!(a_src["journal_mode"], "wal");
    assert_eq!(a_src["size"].as_u64().unwrap(), std::fs::metadata(&a).unwrap().len());

    // Into a fresh directory.
    let to = env.path("restored");
    env.ok(["restore", &id, "--to", s(&to)]);
    assert_eq!(
        common::blake3_file(&common::under(&to, &a)),
        a_hash,
        "a.db restored byte-identical"
    );
    assert_eq!(
        common::blake3_file(&common::under(&to, &b)),
        b_hash,
        "b.sqlite restored byte-identical"
    );
    assert_eq!(node(&common::under(&to, &a)).mode, 0o600);
    assert_eq!(node(&common::under(&to, &b)).mode, 0o640);
    assert_eq!(
        describe(&common::under(&to, &uploads)),
        uploads_desc,
        "uploads/ restored with contents, modes, links and mtimes"
    );
    assert_eq!(
        describe(&common::under(&to, &etc)),
        etc_desc,
        "etc/ restored with contents, modes, links and mtimes"
    );
    assert_eq!(
        node(&common::under(&to, &conf)),
        conf_node,
        "the single file restored with mode and mtime"
    );
    // Each source at its own path under the target (a copy of the service
    // starts from there): src/ holds them all, src/conf/ the single file.
    let mut top: Vec<String> = std::fs::read_dir(common::under(&to, &src))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["a.db", "b.sqlite", "conf", "etc", "uploads"],
        "nothing else (no staging or sidecar leftovers)"
    );

    // --only and -o pick one database.
    let one = env.path("one.db");
    env.ok(["restore", &id, "--only", "b.sqlite", "-o", s(&one)]);
    assert_eq!(common::blake3_file(&one), b_hash);

    // Disaster: everything is gone; restore puts it back where it was.
    std::fs::remove_dir_all(&src).unwrap();
    env.ok(["restore", "latest"]);
    assert_eq!(common::blake3_file(&a), a_hash);
    assert_eq!(common::blake3_file(&b), b_hash);
    assert_eq!(describe(&uploads), uploads_desc);
    assert_eq!(describe(&etc), etc_desc);
    assert_eq!(node(&conf), conf_node);
    for side in common::sidecars(&a).into_iter().chain(common::sidecars(&b)) {
        assert!(
            !side.exists(),
            "no sidecar beside a restored database: {}",
            side.display()
        );
    }
    env.ok(["verify", "--read-data"]);
}

#[test]
fn second_snapshot_after_small_change_adds_only_changed_pages() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("big.db");
    // ~16 MiB of 4 KiB pages.
    create_db(&db, 26_000, 600, true);
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(size > 14 << 20, "fixture is multi-MiB ({size} bytes)");
    let v1 = common::blake3_file(&db);

    let repo_empty = common::tree_bytes(&env.repo);
    let id1 = env.snapshot(&[&db]);
    let repo_after1 = common::tree_bytes(&env.repo);

    // Change a few rows, spread over the table.
    let changed = [1i64, 6_500, 13_000, 19_500, 26_000];
    {
        let c = common::open(&db);
        c.execute_batch("BEGIN").unwrap();
        for id in changed {
            let n = c
                .execute("UPDATE t SET pad = hex(randomblob(300)) WHERE id = ?1", [id])
                .unwrap();
            assert_eq!(n, 1);
        }
        c.execute_batch("COMMIT").unwrap();
    }
    let v2 = common::blake3_file(&db);
    assert_ne!(v1, v2);

    let id2 = env.snapshot(&[&db]);
    let repo_after2 = common::tree_bytes(&env.repo);

    let first_growth = repo_after1 - repo_empty;
    let second_growth = repo_after2 - repo_after1;
    eprintln!("repository growth: first snapshot {first_growth} bytes, second {second_growth} bytes");
    assert!(
        first_growth > 4 << 20,
        "the first snapshot stores the database ({first_growth} bytes)"
    );
    assert!(
        second_growth * 20 < first_growth,
        "the second snapshot grew the repository by {second_growth} bytes, not < 5% of the first snapshot's {first_growth}"
    );

    let listed = env.list();
    assert_eq!(listed.len(), 2);
    let added1 = listed[0]["added_stored_bytes"].as_u64().unwrap();
    let added2 = listed[1]["added_stored_bytes"].as_u64().unwrap();
    assert!(added2 > 0, "the changed pages were stored");
    assert!(
        added2 * 20 < added1,
        "added_stored_bytes {added2} is not < 5% of {added1}"
    );
    let m2 = env.manifest(&id2);
    let new_blobs = m2["summary"]["new_blobs"].as_u64().unwrap();
    eprintln!("added_stored_bytes: {added1} then {added2}; second snapshot new blobs: {new_blobs}");
    // One leaf page per changed row, perhaps page 1, and the page map.
    assert!(
        (2..=changed.len() as u64 + 3).contains(&new_blobs),
        "second snapshot stored {new_blobs} new blobs"
    );

    let r1 = env.path("r1.db");
    let r2 = env.path("r2.db");
    env.ok(["restore", &id1, "-o", s(&r1)]);
    env.ok(["restore", &id2, "-o", s(&r2)]);
    assert_eq!(
        common::blake3_file(&r1),
        v1,
        "first snapshot restores the original bytes"
    );
    assert_eq!(
        common::blake3_file(&r2),
        v2,
        "second snapshot restores the changed bytes"
    );
    let pads = |p: &Path| -> Vec<String> {
        let c = common::open(p);
        changed
            .iter()
            .map(|id| {
                c.query_row("SELECT pad FROM t WHERE id = ?1", [id], |r| r.get(0))
                    .unwrap()
            })
            .collect()
    };
    let (p1, p2) = (pads(&r1), pads(&r2));
    for i in 0..changed.len() {
        assert_ne!(p1[i], p2[i], "row {} differs between the snapshots", changed[i]);
        assert_eq!(p2[i].len(), 600);
    }
    assert_eq!(row_stats(&r2), (26_000, 1, 26_000, 0));
    env.ok(["verify", "--read-data"]);
}

/// Every file and directory under `dir` that others could read or enter.
fn readable_by_others(dir: &std::path::Path) -> Vec<String> {
    common::describe(dir)
        .into_iter()
        .filter(|(_, n)| n.kind != "symlink" && n.mode & 0o077 != 0)
        .map(|(k, n)| format!("{k} {:o}", n.mode))
        .collect()
}

#[test]
fn the_repository_and_the_hosts_copies_are_private_whatever_the_umask() {
    // Issue 20, finding 7: under umask 022 packs were 0644 and folders 0755,
    // so TLS keys backed up from 0600 files were readable by every local
    // user; so were the S3 host cache and the replication spool.
    let _serial = common::serial();
    // SAFETY: umask only changes this process's creation mask; the
    // commands below inherit it.
    let previous = unsafe { libc::umask(0o022) };
    let env = Env::new();
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 500, 100, true);
    let key = env.path("svc/tls.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----").unwrap();
    env.snapshot(&[&db, &key]);
    env.ok(["replicate", s(&db), "--exec", "true"]);
    unsafe { libc::umask(previous) };
    let mut places = vec![env.xdg_state.join("lifeboat")];
    if env.is_s3() {
        places.push(env.xdg_cache.join("lifeboat"));
    } else {
        places.push(env.repo.clone());
    }
    for place in places {
        assert!(place.exists(), "{} was written", place.display());
        let open = readable_by_others(&place);
        assert!(
            open.is_empty(),
            "readable by others under {}: {open:?}",
            place.display()
        );
    }
}

#[test]
fn quiet_restores_and_demos_print_only_errors() {
    // Issue 20, finding 12: -q did not silence restore or demo.
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    create_db(&db, 50, 10, true);
    let id = env.snapshot(&[&db]);
    let out = env.ok(["-q", "restore", &id, "--to", s(&env.path("drill"))]);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""), "restore -q");
    let out = env.run_bare(["-q", "demo"]).expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("demo passed"),
        "demo -q prints its result only: {}",
        out.stdout
    );
    assert_eq!(out.stderr, "", "demo -q");
}

/// Issue 20, finding 12: `demo --repo` was silently ignored, and the demo
/// printed a row count read after its snapshot, so the restored database
/// looked as if it had lost rows. Now the demo runs against the given
/// (new) repository and keeps it, and says between which rows the snapshot
/// caught the writer, which the restored count lies within.
#[test]
fn demo_runs_against_the_given_repository_and_tells_the_rows_truly() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        return; // the demo's own repository is local; once is enough
    }
    let repo = env.path("demo-repo");
    let out = env.run_bare(["--json", "--repo", s(&repo), "demo"]).expect_code(0);
    let v = out.json();
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let listed = env
        .run_bare(["--repo", s(&repo), "--json", "list"])
        .expect_code(0)
        .json();
    assert!(
        listed.as_array().unwrap().len() >= 2,
        "the demo's snapshots are in --repo: {listed}"
    );
    let second = steps
        .iter()
        .find(|l| l.starts_with("second snapshot"))
        .expect("a second snapshot step");
    let nums = |l: &str, after: &str| -> i64 {
        let rest = &l[l.find(after).unwrap() + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (from, to) = (nums(second, "from row "), nums(second, " to "));
    let restored = steps.iter().find(|l| l.starts_with("restored database")).unwrap();
    let n = nums(restored, "rows 1..=");
    assert!(
        from <= n && n <= to + 1,
        "restored {n} rows, captured between {from} and {to}: {steps:?}"
    );
    // An existing repository is not the demo's to fill.
    env.run_bare(["--repo", s(&repo), "demo"]).expect_code(73);
}

/// `snapshot --only NAME` captures a subset of the configured sources (one
/// tenant's own schedule); an unknown name is 64 naming the choices; `list`
/// filters by tag, host and source.
#[test]
fn snapshot_only_some_sources_and_list_filters() {
    let _serial = common::serial();
    let env = Env::new();
    let a = env.path("svc/a.db");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    create_db(&a, 10, 10, true);
    std::fs::write(env.path("svc/t42.toml"), "tenant = 42\n").unwrap();
    let cfg = env.path("lifeboat.toml");
    std::fs::write(
        &cfg,
        "[[sqlite]]\npath = \"svc/a.db\"\n\n[[file]]\npath = \"svc/t42.toml\"\nname = \"tenant-42\"\n",
    )
    .unwrap();
    let out = env
        .run(["--json", "--config", s(&cfg), "snapshot", "--only", "tenant-4"])
        .expect_code(64);
    let msg = out.json()["error"]["message"].as_str().unwrap().to_string();
    let fix = out.json()["error"]["fix"].as_str().unwrap().to_string();
    assert!(
        msg.contains("tenant-4") && fix.contains("tenant-42") && fix.contains("a.db"),
        "{msg} / {fix}"
    );
    let v = env
        .ok([
            "--json",
            "--config",
            s(&cfg),
            "snapshot",
            "--only",
            "tenant-42",
            "--tag",
            "tenant",
        ])
        .json();
    assert_eq!(v["sources"], serde_json::json!(["tenant-42"]));
    env.ok(["--config", s(&cfg), "snapshot", "--tag", "nightly"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["--json", "list"];
        a.extend_from_slice(args);
        env.ok(&a)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&[]).len(), 2);
    assert_eq!(ids(&["--tag", "tenant"]).len(), 1);
    assert_eq!(ids(&["--source", "a.db"]).len(), 1);
    assert_eq!(ids(&["--source", "tenant-42"]).len(), 2);
    assert_eq!(ids(&["--host", "no-such-host"]).len(), 0);
}
