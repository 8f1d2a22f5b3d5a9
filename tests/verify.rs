//! `verify` finds damage, names the snapshot and the file it damages, and
//! exits 65; restore refuses damaged data without leaving anything behind.

mod common;

use std::path::{Path, PathBuf};

use common::{Env, create_db, s};

fn packs(repo: &Path) -> Vec<PathBuf> {
    common::files_under(&repo.join("data"))
        .into_iter()
        .map(|rel| repo.join("data").join(rel))
        .collect()
}

/// Invert one byte `at` the given fraction of the file's length.
fn flip_byte(p: &Path, fraction: f64) {
    let mut data = std::fs::read(p).unwrap();
    let at = (data.len() as f64 * fraction) as usize;
    data[at] ^= 0xff;
    std::fs::write(p, data).unwrap();
}

fn problems(env: &Env, read_data: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["--json", "verify"];
    if read_data {
        args.push("--read-data");
    }
    let out = env.run(args).expect_code(65);
    out.json()["problems"].as_array().cloned().unwrap()
}

#[test]
fn flipped_byte_in_a_database_page_is_found_by_read_data() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 2000, 600, true);
    let id = env.snapshot(&[&db]);
    env.ok(["verify", "--read-data"]);
    let p = packs(&env.repo);
    assert_eq!(p.len(), 1, "{p:?}");
    // Pages come first in the pack, the page map and header last.
    flip_byte(&p[0], 0.4);

    let out = env.run(["verify", "--read-data"]).expect_code(65);
    assert!(
        out.stdout.contains(&format!("DAMAGED snapshot {}", &id[..8])),
        "names the snapshot:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("app.db"), "names the database:\n{}", out.stdout);
    let probs = problems(&env, true);
    assert!(
        probs
            .iter()
            .any(|p| p["snapshot"] == id.as_str() && p["file"] == "app.db"),
        "{probs:?}"
    );

    let target = env.path("out/app.db");
    let out = env.run(["restore", &id, "-o", s(&target)]).expect_code(65);
    assert!(!out.stderr.is_empty());
    assert!(!env.path("out").exists(), "a failed restore leaves nothing behind");
}

#[test]
fn flipped_byte_in_a_file_chunk_names_the_file() {
    let _serial = common::serial();
    let env = Env::new();
    let docs = env.path("docs");
    std::fs::create_dir(&docs).unwrap();
    // Incompressible, so the chunks fill the pack.
    let mut big = Vec::with_capacity(2 << 20);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while big.len() < 2 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(docs.join("big.bin"), &big).unwrap();
    std::fs::write(docs.join("small.txt"), "small").unwrap();
    let id = env.snapshot(&[&docs]);
    let p = packs(&env.repo);
    assert_eq!(p.len(), 1);
    flip_byte(&p[0], 0.4);

    let out = env.run(["verify", "--read-data"]).expect_code(65);
    assert!(
        out.stdout
            .contains(&format!("DAMAGED snapshot {}: docs/big.bin", &id[..8])),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("small.txt"),
        "an undamaged file is not reported:\n{}",
        out.stdout
    );

    let to = env.path("restored");
    env.run(["restore", &id, "--to", s(&to)]).expect_code(65);
    assert!(!to.exists(), "a failed restore removes what it created");
}

#[test]
fn deleted_pack_is_found_by_plain_verify() {
    let _serial = common::serial();
    let env = Env::new();
    let db = env.path("a.db");
    create_db(&db, 500, 100, true);
    let id1 = env.snapshot(&[&db]);
    let first: Vec<PathBuf> = packs(&env.repo);
    let file = env.path("b.txt");
    std::fs::write(&file, "second snapshot's own data\n".repeat(1000)).unwrap();
    let id2 = env.snapshot(&[&file]);
    let second: Vec<PathBuf> = packs(&env.repo).into_iter().filter(|p| !first.contains(p)).collect();
    assert_eq!(second.len(), 1, "the second snapshot wrote one pack");
    std::fs::remove_file(&second[0]).unwrap();

    let out = env.run(["verify"]).expect_code(65);
    assert!(
        out.stdout.contains(&format!("DAMAGED snapshot {}: b.txt", &id2[..8])),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&format!("snapshot {}", &id1[..8])),
        "the intact snapshot is not reported:\n{}",
        out.stdout
    );
    let probs = problems(&env, false);
    assert!(!probs.is_empty());
    assert!(
        probs
            .iter()
            .all(|p| p["snapshot"] == id2.as_str() && p["file"] == "b.txt"),
        "{probs:?}"
    );
    env.run(["verify", "--read-data"]).expect_code(65);

    // The intact snapshot still restores; the damaged one does not.
    let ok = env.path("a-restored.db");
    env.ok(["restore", &id1, "-o", s(&ok)]);
    assert_eq!(common::blake3_file(&ok), common::blake3_file(&db));
    let to = env.path("b-out");
    let out = env.run(["restore", &id2, "--to", s(&to)]);
    assert_eq!(
        out.code, 65,
        "restoring a snapshot whose pack is gone is damage:\n{}",
        out.stderr
    );
    assert!(!to.exists());
    // A database whose pack is gone, likewise.
    std::fs::remove_file(&first[0]).unwrap();
    let out = env.run(["restore", &id1, "-o", s(&env.path("a-again.db"))]);
    assert_eq!(out.code, 65, "{}", out.stderr);
}
