//! `lifeboat stats` against figures the test works out itself: the objects
//! on disk, `list --json` and the manifests' summaries, and for a replicated
//! database the segments on disk and the base it starts from.

mod common;

use std::collections::BTreeMap;

use common::{Env, create_db, create_replica_db, open, s};
use serde_json::Value;

/// Child process: the writer of the WAL test (inert unless re-executed).
#[test]
fn replica_writer_child() {
    common::replica_writer_child_main();
}

fn stats(env: &Env) -> Value {
    env.ok(["--json", "stats"]).json()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// Objects and bytes per kind as the repository's files on disk show them:
/// the local writer's lock, its staging area and unfinished dot-files are
/// not objects.
fn objects_on_disk(env: &Env) -> BTreeMap<&'static str, (u64, u64)> {
    let mut out = BTreeMap::new();
    for rel in common::files_under(&env.repo) {
        if rel == "lock" || rel.starts_with("tmp/") || rel.split('/').any(|c| c.starts_with('.')) {
            continue;
        }
        let kind = match rel.split('/').next().unwrap() {
            "data" => "packs",
            "index" => "index",
            "snapshots" => "snapshots",
            "wal" => "wal",
            _ => "other",
        };
        let size = std::fs::metadata(env.repo.join(&rel)).unwrap().len();
        for k in [kind, "total"] {
            let e = out.entry(k).or_insert((0, 0));
            e.0 += 1;
            e.1 += size;
        }
    }
    out
}

fn check_objects(env: &Env, st: &Value) {
    let disk = objects_on_disk(env);
    for kind in ["packs", "index", "snapshots", "wal", "other", "total"] {
        let o = &st["repository"][kind];
        let want = disk.get(kind).copied().unwrap_or((0, 0));
        assert_eq!((u(&o["objects"]), u(&o["bytes"])), want, "{kind}: {o}");
    }
}

/// Deterministic incompressible bytes (xorshift64).
fn random_bytes(n: usize, mut x: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn snapshot_row<'a>(st: &'a Value, id: &str) -> &'a Value {
    st["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} not in {st}"))
}

#[test]
fn figures_match_the_objects_and_the_manifests() {
    let _serial = common::serial();
    let env = Env::new();
    let empty = stats(&env);
    assert_eq!(u(&empty["snapshot_count"]), 0);
    assert_eq!(empty["dedup_ratio"], Value::Null, "no data, no ratio");
    check_objects(&env, &empty);

    let db = env.path("app.db");
    create_db(&db, 3000, 600, true);
    let files = env.path("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("a.txt"), "alpha\n".repeat(2000)).unwrap();
    std::fs::write(files.join("b.bin"), random_bytes(1536 << 10, 7)).unwrap();
    std::fs::write(files.join("sub/c.txt"), "gamma\n".repeat(500)).unwrap();
    let s1 = env.snapshot(&[&db, &files]);

    // A few rows change: a few pages and a delta page map are new.
    open(&db)
        .execute(
            "UPDATE t SET pad = hex(randomblob(300)) WHERE id IN (7, 1500, 2990)",
            [],
        )
        .unwrap();
    std::fs::write(files.join("d.txt"), "delta\n".repeat(300)).unwrap();
    let s2 = env.snapshot(&[&db, &files]);

    let st = stats(&env);
    check_objects(&env, &st);
    let listed = env.list();
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [s1.as_str(), s2.as_str()]);
    let rows: Vec<&str> = st["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ids, "oldest first, like list");
    assert_eq!(u(&st["snapshot_count"]), 2);
    let logical: u64 = listed.iter().map(|r| u(&r["logical_bytes"])).sum();
    assert_eq!(u(&st["logical_bytes"]), logical);

    // Every frame written belongs to blobs some snapshot uses, so the
    // frames' stored sizes (the summaries' added bytes) add up to the
    // referenced stored bytes exactly; the rest of the packs is overhead.
    let m1 = env.manifest(&s1);
    let m2 = env.manifest(&s2);
    let added = |m: &Value| u(&m["summary"]["added_stored_bytes"]);
    let added_raw = |m: &Value| u(&m["summary"]["added_raw_bytes"]);
    let referenced = &st["referenced"];
    assert_eq!(u(&referenced["stored_bytes"]), added(&m1) + added(&m2), "{st}");
    assert!(u(&referenced["raw_bytes"]) <= added_raw(&m1) + added_raw(&m2));
    assert!(u(&referenced["raw_bytes"]) > logical / 2, "{st}");
    assert_eq!(
        (u(&st["unreferenced"]["blobs"]), u(&st["unreferenced"]["stored_bytes"])),
        (0, 0),
        "no snapshot was forgotten"
    );
    assert_eq!(u(&st["missing_references"]), 0);
    assert_eq!(
        u(&referenced["stored_bytes"])
            + u(&st["unreferenced"]["stored_bytes"])
            + u(&st["pack_overhead_bytes"])
            + u(&st["unindexed_packs"]["bytes"]),
        u(&st["repository"]["packs"]["bytes"]),
        "the packs' bytes are accounted for: {st}"
    );

    let dedup = st["dedup_ratio"].as_f64().unwrap();
    let compression = st["compression_ratio"].as_f64().unwrap();
    let raw = u(&referenced["raw_bytes"]) as f64;
    assert!((dedup - logical as f64 / raw).abs() < 1e-9, "{st}");
    assert!(dedup > 1.5, "two near-identical snapshots: {dedup}");
    assert!(
        (compression - raw / u(&referenced["stored_bytes"]) as f64).abs() < 1e-9,
        "{st}"
    );
    assert!(compression > 1.0, "hex padding compresses: {compression}");

    // What the second snapshot stored nobody else uses: the changed pages,
    // its page map, the new file. The first alone holds the old versions of
    // the changed pages, a share of frames it stored.
    let r1 = snapshot_row(&st, &s1);
    let r2 = snapshot_row(&st, &s2);
    assert_eq!(u(&r2["unique"]["stored_bytes"]), added(&m2), "{r2}");
    assert_eq!(u(&r2["added_stored_bytes"]), added(&m2));
    assert_eq!(u(&r2["logical_bytes"]), u(&m2["summary"]["logical_bytes"]));
    assert_eq!(r2["kind"], "full");
    let unique1 = u(&r1["unique"]["stored_bytes"]);
    assert!(unique1 > 0 && unique1 < added(&m1) / 10, "{r1}");
    let uniques = u(&r1["unique"]["stored_bytes"]) + u(&r2["unique"]["stored_bytes"]);
    assert!(uniques < u(&referenced["stored_bytes"]));

    // A third snapshot of the same data writes only a page map, whose chain
    // holds the second's map: now nothing is the second's alone.
    let s3 = env.snapshot(&[&db, &files]);
    let st = stats(&env);
    check_objects(&env, &st);
    let m3 = env.manifest(&s3);
    assert_eq!(u(&snapshot_row(&st, &s2)["unique"]["stored_bytes"]), 0, "{st}");
    assert_eq!(u(&snapshot_row(&st, &s3)["unique"]["stored_bytes"]), added(&m3), "{st}");
    assert_eq!(
        u(&st["referenced"]["stored_bytes"]),
        added(&m1) + added(&m2) + added(&m3)
    );

    // The text form names every figure.
    let out = env.ok(["stats"]);
    let dedup = format!("{:.2}", st["dedup_ratio"].as_f64().unwrap());
    for want in [
        "dedup ratio",
        "compression ratio",
        "unreferenced",
        &s1[..8],
        &s3[..8],
        &dedup,
    ] {
        assert!(out.stdout.contains(want), "{want:?} missing:\n{}", out.stdout);
    }
    let help = env.ok(["stats", "--help"]);
    assert!(help.stdout.contains("what forgetting it"), "{}", help.stdout);
}

#[test]
fn wal_streams_show_their_segments_and_span() {
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
    let rows = 120u64;
    let started = jiff::Timestamp::now();
    let mut c = env.command();
    c.arg("--repo")
        .arg(&env.repo_arg)
        .args(["replicate", s(&db), "--sync-interval", "200ms", "--exec", &service])
        .env(common::RW_DB, &db)
        .env(common::RW_ROWS, rows.to_string())
        .env(common::RW_PAUSE_US, "3000")
        // Rows are written once the first base is taken, so every one of
        // them travels as a commit of the stream.
        .env(common::RW_WAIT_STATE, env.xdg_state.join("lifeboat/replicate"));
    common::run_command(c).expect_code(0);
    let ended = jiff::Timestamp::now();

    let st = stats(&env);
    check_objects(&env, &st);
    let streams = st["wal_streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{st}");
    let w = &streams[0];
    let stream = w["stream"].as_str().unwrap();
    let seg_dir = env.repo.join("wal").join(stream);
    let segs = common::files_under(&seg_dir);
    assert!(!segs.is_empty());
    let seg_bytes: u64 = segs
        .iter()
        .map(|k| std::fs::metadata(seg_dir.join(k)).unwrap().len())
        .sum();
    assert_eq!(
        (u(&w["segments"]), u(&w["bytes"])),
        (segs.len() as u64, seg_bytes),
        "{w}"
    );

    let bases: Vec<String> = env
        .list()
        .into_iter()
        .filter(|r| r["kind"] == "base")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(u(&w["bases"]), bases.len() as u64, "{w}");
    assert_eq!(snapshot_row(&st, &bases[0])["kind"], "base");
    let manifest = env.manifest(&bases[0]);
    let base = &manifest["sources"][0];
    assert_eq!(base["replication"]["stream"], stream);
    assert_eq!(w["path"], base["path"]);
    let base_txid = u(&base["replication"]["txid"]);
    assert_eq!(u(&w["first_txid"]), base_txid + 1, "{w}");
    assert_eq!(u(&w["last_txid"]), base_txid + rows, "{w}");
    let t = |k: &str| -> jiff::Timestamp { w[k].as_str().unwrap().parse().unwrap() };
    assert!(
        started <= t("first_commit") && t("first_commit") <= t("last_commit") && t("last_commit") <= ended,
        "{w}"
    );
}

#[test]
fn a_lost_pack_is_reported_not_fatal() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 500, 200, true);
    env.snapshot(&[&db]);
    let packs = common::files_under(&env.repo.join("data"));
    assert_eq!(packs.len(), 1, "{packs:?}");
    std::fs::remove_file(env.repo.join("data").join(&packs[0])).unwrap();

    let out = env.ok(["--json", "stats"]);
    let st = out.json();
    assert!(u(&st["missing_references"]) >= 1, "{st}");
    assert!(out.stderr.contains("page map unreadable"), "{}", out.stderr);
    assert_eq!(u(&st["repository"]["packs"]["objects"]), 0);
    let text = env.ok(["stats"]);
    assert!(text.stdout.contains("lifeboat verify"), "{}", text.stdout);
}
