//! File trees described for "byte-identical" and "untouched" comparisons,
//! and where `restore --to` puts a source.

#![allow(unused_imports)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;

// ------------------------------------------------------------ file trees

/// One path of a tree as compared: type, permission bits, owner, mtime and
/// content (BLAKE3 for files, the target for symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    pub content: String,
}

pub fn node(p: &Path) -> Node {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    let ft = m.file_type();
    let (kind, content) = if ft.is_symlink() {
        (
            "symlink",
            std::fs::read_link(p).expect("readlink").display().to_string(),
        )
    } else if ft.is_dir() {
        ("dir", String::new())
    } else {
        ("file", blake3_file(p))
    };
    Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        content,
    }
}

/// Every path under `root` (itself as ""), never following symlinks.
pub fn describe(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    if std::fs::symlink_metadata(root).is_err() {
        return out;
    }
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let p = e.path();
            let n = node(&p);
            let is_dir = n.kind == "dir";
            out.insert(r.clone(), n);
            if is_dir {
                walk(&p, &r, out);
            }
        }
    }
    let n = node(root);
    let is_dir = n.kind == "dir";
    out.insert(String::new(), n);
    if is_dir {
        walk(root, "", &mut out);
    }
    out
}

/// Sum of the sizes of every file under `dir` (apparent sizes).
pub fn tree_bytes(dir: &Path) -> u64 {
    describe_sizes(dir)
}

fn describe_sizes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let m = std::fs::symlink_metadata(e.path()).expect("stat");
        if m.is_dir() {
            total += describe_sizes(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

/// Files directly in `dir` whose names start with `prefix`.
pub fn entries_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Files (recursively) under `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    describe(dir)
        .into_iter()
        .filter(|(_, n)| n.kind != "dir")
        .map(|(k, _)| k)
        .collect()
}

/// Copy a directory tree (files and directories only), e.g. a repository.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// `describe` without the operations log (`log/`): a refused or failed
/// command appends a record there by design, and changes nothing else.
pub fn describe_without_log(root: &Path) -> BTreeMap<String, Node> {
    let mut d = describe(root);
    d.retain(|k, _| k != "log" && !k.starts_with("log/"));
    d
}

/// Where `restore --to DIR` puts a source captured at `original`: under DIR
/// at its absolute path.
pub fn under(dir: &Path, original: &Path) -> PathBuf {
    let abs = std::path::absolute(original).expect("absolute path");
    dir.join(abs.strip_prefix("/").expect("absolute"))
}
