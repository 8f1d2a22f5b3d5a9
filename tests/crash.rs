//! SIGKILL during a snapshot: the repository stays consistent, lists no
//! partial snapshot, passes `verify --read-data`, and the next snapshot and
//! restore work.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, blake3_file, create_db, s};

#[test]
fn sigkill_during_snapshot_leaves_a_consistent_repository() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("big.db");
    // ~70 MiB of pages compressing about 2:1: several 16 MiB packs.
    create_db(&db, 120_000, 512, true);
    let db_size = std::fs::metadata(&db).unwrap().len();
    assert!(db_size > 50 << 20, "fixture is big ({db_size} bytes)");
    let db_hash = blake3_file(&db);

    // How long a full snapshot takes on this machine, in a throwaway
    // repository, so the kills below land throughout one. Only where they
    // land depends on this; what is asserted does not.
    let full = {
        let scratch = Env::new();
        let t0 = Instant::now();
        scratch.snapshot(&[&db]);
        t0.elapsed()
    };
    // This host's staging area: `<repo>/tmp` locally, the per-host working
    // directory for S3. `init` creates it, so counting its files means something.
    let staging = env.staging_dir();
    assert!(staging.is_dir(), "staging area {} exists", staging.display());
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;

    let fractions = [0.0, 0.03, 0.1, 0.25, 0.45, 0.65, 0.85, 0.97, 1.02];
    let mut completed = 0;
    for (i, f) in fractions.iter().enumerate() {
        let delay = full.mul_f64(*f) + Duration::from_millis((jitter >> (i * 3)) % 25);
        let mut c = env.command();
        c.arg("--repo")
            .arg(&env.repo_arg)
            .arg("snapshot")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn lifeboat snapshot");
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1;
        }
        eprintln!(
            "kill {i} after {delay:?} (full snapshot {full:?}): {}; staging files {}, pack files {}",
            if status.success() { "had finished" } else { "killed" },
            common::files_under(&staging).len(),
            common::files_under(&env.repo.join("data")).len()
        );
        // Right after each kill, the repository is already consistent.
        env.ok(["verify"]);
        let n = env.list().len();
        assert!(
            n >= completed && n <= i + 1,
            "after kill {i}: {n} snapshots listed, {completed} completed"
        );
    }

    env.ok(["verify", "--read-data"]);
    // Every snapshot listed is whole: its manifest describes the full database.
    for snap in env.list() {
        let id = snap["id"].as_str().unwrap();
        let m = env.manifest(id);
        assert_eq!(m["sources"][0]["size"].as_u64(), Some(db_size), "snapshot {id}");
        assert_eq!(
            m["sources"][0]["blake3"].as_str(),
            Some(db_hash.as_str()),
            "snapshot {id}"
        );
    }
    let before = env.list().len();

    // The lock of a killed writer does not block the next one.
    let id = env.snapshot(&[&db]);
    assert_eq!(env.list().len(), before + 1);
    assert!(staging.is_dir(), "staging area {} still exists", staging.display());
    assert!(
        common::files_under(&staging).is_empty(),
        "killed writers' staging files are cleaned up"
    );
    env.ok(["verify", "--read-data"]);
    let out = env.path("restored.db");
    env.ok(["restore", &id, "-o", s(&out)]);
    assert_eq!(blake3_file(&out), db_hash, "restored byte-identical");
    assert_eq!(common::row_stats(&out), (120_000, 1, 120_000, 0));
}
