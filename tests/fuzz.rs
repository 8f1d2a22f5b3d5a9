//! Every parser of stored bytes against arbitrary and mutated input: the
//! envelope, the repository config, pack headers, index files, page maps,
//! manifests, WAL segments, marks, operations-log records and lifeboat.toml.
//! Each must answer Ok or an error for any input: never panic, never hang,
//! never allocate without bound. Seeds are real objects from a repository
//! the binary writes; mutations flip, cut, splice and grow them, and for
//! objects that carry their own hash the hash is recomputed so mutations
//! reach the parser behind it.
//!
//! No nightly toolchain here, so no cargo-fuzz: a seeded generator, a fixed
//! number of cases per parser (LIFEBOAT_FUZZ_CASES, default 3000) so the
//! suite's time is bounded, and on failure the input is written to
//! target/fuzz-failures/ and named in the panic, to replay.

mod common;
// lifeboat.toml is parsed by the binary's CLI layer, not the library; the
// parser is compiled in here on its own to be fuzzed.
#[path = "../src/cli/config.rs"]
#[allow(dead_code)]
mod config;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::{Env, Rng, s};
use lifeboat::codec;

fn cases() -> usize {
    std::env::var("LIFEBOAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// One mutation of `seed`: bytes flipped, a cut, a splice of random bytes,
/// a run of interesting values (0, 0xFF, lengths near u32::MAX), or a
/// duplicated slice.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.pick(3) {
        match rng.pick(6) {
            0 if !v.is_empty() => {
                let i = rng.pick(v.len());
                v[i] ^= 1 << rng.pick(8);
            }
            1 => v.truncate(rng.pick(v.len() + 1)),
            2 => {
                let at = rng.pick(v.len() + 1);
                let n = rng.pick(16);
                let junk = rng.bytes(n);
                v.splice(at..at, junk);
            }
            3 if v.len() >= 4 => {
                let at = rng.pick(v.len() - 3);
                let value: u32 = match rng.pick(4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => u32::MAX / 2 + 1,
                    _ => 1 << rng.pick(31),
                };
                v[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            4 if !v.is_empty() => {
                let a = rng.pick(v.len());
                let b = (a + rng.pick(64)).min(v.len());
                let copy = v[a..b].to_vec();
                let at = rng.pick(v.len() + 1);
                v.splice(at..at, copy);
            }
            _ if !v.is_empty() => {
                let i = rng.pick(v.len());
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

/// Feed `parse` arbitrary bytes and mutations of each seed; fail on the
/// first panic, saving the input.
fn fuzz(name: &str, seeds: &[Vec<u8>], parse: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seed to mutate");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let n = cases();
    for case in 0..n {
        let input = if case % 5 == 0 {
            let len = rng.pick(512);
            rng.bytes(len)
        } else {
            let seed = &seeds[rng.pick(seeds.len())];
            mutate(&mut rng, seed)
        };
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{name}-{case}"));
            std::fs::write(&file, &input).unwrap();
            panic!(
                "{name}: the parser panicked on case {case}; input saved as {}",
                file.display()
            );
        }
    }
    // The seeds themselves parse: the mutations start from valid input.
    for seed in seeds {
        parse(seed);
    }
}

/// Envelope-encode again after a mutation of the decoded body, so the
/// mutation reaches the parser instead of the zstd frame check.
fn enveloped(body: &[u8]) -> Vec<u8> {
    codec::encode(body, 1)
}

/// Real objects of every kind, from a repository the binary wrote: two
/// snapshots (a database, a directory), a forget, a prune (a mark), and the
/// operations log.
struct Seeds {
    config: Vec<Vec<u8>>,
    index: Vec<Vec<u8>>,
    manifests: Vec<Vec<u8>>,
    packs: Vec<Vec<u8>>,
    pagemaps: Vec<Vec<u8>>,
    marks: Vec<Vec<u8>>,
    log: Vec<Vec<u8>>,
}

fn objects(dir: &Path) -> Vec<Vec<u8>> {
    common::files_under(dir)
        .into_iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

fn decoded(raw: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    raw.iter().map(|r| codec::decode(r, "seed").unwrap()).collect()
}

fn seeds(env: &Env) -> Seeds {
    let db = env.path("svc/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    common::create_db(&db, 500, 200, true);
    let etc = env.path("etc");
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    std::fs::write(etc.join("server.toml"), "port = 8080\n").unwrap();
    std::fs::write(etc.join("tls/key.pem"), "-----BEGIN-----\n".repeat(40)).unwrap();
    std::os::unix::fs::symlink("key.pem", etc.join("tls/current.pem")).unwrap();
    env.snapshot(&[&db, &etc]);
    common::open(&db)
        .execute_batch("UPDATE t SET pad = hex(randomblob(100)) WHERE id % 3 = 0")
        .unwrap();
    env.snapshot(&[&db, &etc]);
    env.ok(["forget", "--keep-last", "1", "--prune"]);
    let packs = objects(&env.repo.join("data"));
    // Page maps are blobs inside packs: read them back through the
    // library, by the manifests' ids.
    let loc = lifeboat::repo::RepoLocation::parse(&env.repo_arg, &Default::default()).unwrap();
    let repo = lifeboat::repo::Repository::open(&loc).unwrap().indexed().unwrap();
    let mut pagemaps = Vec::new();
    for snap in repo.snapshots().unwrap() {
        for src in &snap.manifest.sources {
            if let lifeboat::repo::manifest::Source::Sqlite(d) = src {
                let mut dec = codec::Decoder::default();
                pagemaps.push(repo.read_blob(&d.pagemap, &mut dec).unwrap());
            }
        }
    }
    Seeds {
        config: vec![std::fs::read(env.repo.join("config")).unwrap()],
        index: decoded(objects(&env.repo.join("index"))),
        manifests: decoded(objects(&env.repo.join("snapshots"))),
        packs,
        pagemaps,
        marks: decoded(objects(&env.repo.join("marks"))),
        log: decoded(objects(&env.repo.join("log"))),
    }
}

#[test]
fn every_parser_of_stored_bytes_survives_arbitrary_input() {
    let _serial = common::serial();
    let env = Env::new();
    if env.is_s3() {
        return; // parsers, not backends: once is enough
    }
    let seeds = seeds(&env);

    let mut envelopes: Vec<Vec<u8>> = seeds.index.iter().map(|b| enveloped(b)).collect();
    envelopes.push(codec::encode_raw(b"raw body"));
    fuzz("envelope", &envelopes, |b| {
        let _ = codec::decode(b, "fuzz");
        let _ = codec::Decoder::default().decode_vec(b.to_vec(), "fuzz");
    });
    fuzz("config", &seeds.config, |b| {
        let _ = lifeboat::repo::config::RepoConfig::from_bytes(b, "fuzz");
    });
    fuzz("pack_header", &seeds.packs, |b| {
        let _ = lifeboat::repo::pack::parse_header(b, "fuzz");
        if b.len() >= 8 {
            let _ = lifeboat::repo::pack::header_tail_len(&b[b.len() - 8..], "fuzz");
        }
        let _ = lifeboat::repo::pack::parse_header_tail(b, b.len() as u64 + 100, "fuzz");
    });
    fuzz("index", &seeds.index, |b| {
        let _ = lifeboat::repo::index::IndexFile::from_bytes(b, "fuzz");
    });
    fuzz("pagemap", &seeds.pagemaps, |b| {
        let _ = lifeboat::repo::pagemap::PageMap::from_bytes(b, "fuzz");
        let _ = lifeboat::repo::pagemap::PageMap::from_bytes_without_cvs(b, "fuzz");
    });
    fuzz("manifest", &seeds.manifests, |b| {
        if let Ok(m) = lifeboat::repo::manifest::Manifest::from_json(b, "fuzz") {
            let _ = m.check_layout("fuzz");
        }
    });
    fuzz("mark", &seeds.marks, |b| {
        let _ = lifeboat::repo::mark::Mark::from_bytes(b, "fuzz");
    });
    fuzz("oplog_record", &seeds.log, |b| {
        let _ = lifeboat::oplog::OpRecord::from_json(b, "fuzz");
    });
    fuzz("segment", &segment_seeds(), |b| {
        // Mutate the body, then seal it again with its hash, so the
        // decoder's structural checks see the mutation.
        let mut body = b.to_vec();
        let hash = blake3::hash(&body);
        body.extend_from_slice(hash.as_bytes());
        let _ = lifeboat::repo::segment::Segment::decode(&enveloped(&body), "fuzz");
        let _ = lifeboat::repo::segment::Segment::decode(&enveloped(b), "fuzz");
    });
    let toml_seed = format!(
        "[repository]\nurl = \"{}\"\n[restore]\nmax_schema_version = 4\n[[sqlite]]\npath = \"{}\"\nschema_version = \"SELECT 1\"\n[[directory]]\npath = \"{}\"\nexclude = [\"*.tmp\"]\nfull_only = true\nbefore = \"true\"\nafter = \"true\"\nhook_timeout = \"1m\"\n[retention]\nkeep_daily = 7\n[[hook]]\non = [\"snapshot.failure\", \"any_error\"]\nrun = \"true\"\ntimeout = \"30s\"\npolicy = \"fail\"\n",
        s(&env.repo),
        s(&env.path("svc/state.db")),
        s(&env.path("etc"))
    );
    let config_file = env.path("fuzz.toml");
    fuzz("lifeboat_toml", &[toml_seed.into_bytes()], |b| {
        std::fs::write(&config_file, b).unwrap();
        let _ = config::Config::load(&config_file);
    });
}

/// Segment bodies (what the envelope holds, less the trailing hash), from
/// the encoder itself: a replicator is not needed to know the layout.
fn segment_seeds() -> Vec<Vec<u8>> {
    use lifeboat::repo::segment::{Segment, SegmentCommit};
    let page_size = 512;
    let seg = Segment {
        page_size,
        compacted: false,
        first_txid: 7,
        last_txid: 8,
        wal_end: [1, 2, 3, 4, 5],
        commits: vec![
            SegmentCommit {
                txid: 7,
                time_ns: 1_700_000_000_000_000_000,
                not_before_ns: 1_699_999_999_000_000_000,
                db_pages: 3,
                pages: 2,
            },
            SegmentCommit {
                txid: 8,
                time_ns: 1_700_000_000_500_000_000,
                not_before_ns: 1_700_000_000_000_000_000,
                db_pages: 4,
                pages: 1,
            },
        ],
        pgnos: vec![1, 3, 4],
        data: (0..3 * page_size as usize).map(|i| (i * 7) as u8).collect(),
    };
    let body = codec::decode(&seg.encode(1), "seed").unwrap();
    vec![body[..body.len() - 32].to_vec()]
}
