//! The operator's configuration file (`lifeboat.toml`): which repository, and
//! which databases, directories and files make up the service's state. Unknown
//! keys are errors, never silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use lifeboat::error::{Error, ErrorCode, Result};
use lifeboat::snapshot::{SourceKind, SourceSpec};

/// A whole `lifeboat.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[repository]`: where backups go and how storage behaves.
    #[serde(default)]
    pub repository: Option<RepositoryConfig>,
    /// `[restore]`.
    #[serde(default)]
    pub restore: RestoreConfig,
    /// `[[sqlite]]`: the databases.
    #[serde(default)]
    pub sqlite: Vec<SqliteConfig>,
    /// `[[directory]]`: the directory trees.
    #[serde(default)]
    pub directory: Vec<DirectoryConfig>,
    /// `[[file]]`: single files.
    #[serde(default)]
    pub file: Vec<FileConfig>,
    /// `[replicate]`.
    #[serde(default)]
    pub replicate: ReplicateConfig,
    /// `[retention]`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[drill]` and `[[drill.check]]`: how `lifeboat drill` proves a
    /// backup restores.
    #[serde(default)]
    pub drill: DrillConfig,
    /// Where this config was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[repository]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A directory path, `file://` URL or `s3://BUCKET/PREFIX` URL.
    pub url: Option<String>,
    /// Uploads and downloads in flight at once.
    pub transfers: Option<usize>,
    /// How long one request may be retried after temporary failures.
    pub retry_seconds: Option<u64>,
    /// S3 endpoint, region, credentials and upload settings.
    #[serde(default)]
    pub s3: lifeboat::storage::location::S3Options,
}

impl RepositoryConfig {
    /// The storage settings as the library takes them (the environment's
    /// are applied by `Ctx::storage_options`).
    pub fn storage_options(&self) -> lifeboat::storage::StorageOptions {
        lifeboat::storage::StorageOptions {
            transfers: self.transfers,
            retry_seconds: self.retry_seconds,
            s3: self.s3.clone(),
            ..Default::default()
        }
    }
}

/// `[restore]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Refuse backups whose schema version is newer than this.
    pub max_schema_version: Option<i64>,
}

/// `[replicate]`: how `lifeboat replicate` ships the WAL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateConfig {
    /// Repositories to ship to (default: the repository).
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Longest a commit waits before it is in the replicas, e.g. "1s".
    pub sync_interval: Option<String>,
    /// PASSIVE checkpoint at least this often, e.g. "1m".
    pub checkpoint_interval: Option<String>,
    /// The service's `wal_autocheckpoint` (1000): a tenth before this many
    /// WAL pages the log is checkpointed and let go, so the service's own
    /// checkpoint can restart it.
    pub checkpoint_pages: Option<u32>,
    /// WAL pages after which it is truncated.
    pub truncate_pages: Option<u32>,
    /// Where positions and unshipped segments are kept.
    pub state_dir: Option<PathBuf>,
    /// How often a new base is folded from the segments, e.g. "1h": restores
    /// replay at most this much history.
    pub snapshot_interval: Option<String>,
}

/// `[retention]`: what `forget` keeps when no rule is given on its command
/// line, and how `prune` deletes. Counts are restic's: -1 means unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// `--keep-last`.
    pub keep_last: Option<i64>,
    /// `--keep-hourly`.
    pub keep_hourly: Option<i64>,
    /// `--keep-daily`.
    pub keep_daily: Option<i64>,
    /// `--keep-weekly`.
    pub keep_weekly: Option<i64>,
    /// `--keep-monthly`.
    pub keep_monthly: Option<i64>,
    /// `--keep-yearly`.
    pub keep_yearly: Option<i64>,
    /// e.g. "7d" or "1y2m" (restic's units: y, m = months, d, h).
    pub keep_within: Option<String>,
    /// `--keep-tag` lists: `"a,b"` keeps snapshots with both.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// How far back every commit stays restorable, e.g. "24h" (the default
    /// when there are snapshot rules) or "unlimited".
    pub keep_wal: Option<String>,
    /// How old a prune's mark must be before its packs are deleted, e.g. "1h".
    pub grace: Option<String>,
    /// Repack packs at least this percent unused.
    pub repack_unused: Option<f64>,
}

/// `[[sqlite]]`: one database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file (relative to the config file).
    pub path: PathBuf,
    /// The source's name in snapshots (default: the file name).
    pub name: Option<String>,
    /// SQL returning one integer, e.g. `SELECT max(version) FROM schema_migrations`.
    pub schema_version: Option<String>,
    /// Captured by `--kind full` only.
    #[serde(default)]
    pub full_only: bool,
}

/// `[[directory]]`: one directory tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The directory (relative to the config file).
    pub path: PathBuf,
    /// The source's name in snapshots (default: the directory's name).
    pub name: Option<String>,
    /// Globs relative to the directory, left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Captured by `--kind full` only (large, re-creatable data).
    #[serde(default)]
    pub full_only: bool,
}

/// `[[file]]`: one file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file (relative to the config file).
    pub path: PathBuf,
    /// The source's name in snapshots (default: the file name).
    pub name: Option<String>,
    /// Captured by `--kind full` only.
    #[serde(default)]
    pub full_only: bool,
}

/// `[drill]`: the copy of the service a drill starts on the restored
/// scratch copy, and its smoke checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Shell command starting the service on `$LIFEBOAT_DRILL_DIR`.
    pub start: Option<String>,
    /// Shell command stopping it (default: SIGTERM to its process group).
    pub stop: Option<String>,
    /// Each check's time limit unless it gives its own, e.g. "30s".
    pub timeout: Option<String>,
    /// How long each step of stopping the service may take, e.g. "10s".
    pub stop_timeout: Option<String>,
    /// Where scratch copies go (relative to the config file); default
    /// `$XDG_CACHE_HOME/lifeboat/drill/<time>-<unique>`.
    pub scratch: Option<PathBuf>,
    /// `[[drill.check]]`: the smoke checks, run in order.
    #[serde(default)]
    pub check: Vec<DrillCheckConfig>,
}

/// `[[drill.check]]`: one smoke check; exactly one of `sql`, `http` and
/// `command`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheckConfig {
    /// How the drill log names it.
    pub name: Option<String>,
    /// A query on `database`; its first column is compared with `expect`.
    pub sql: Option<String>,
    /// The restored database `sql` runs on: a source name, or an original
    /// absolute path.
    pub database: Option<String>,
    /// What the query's first column must be (a string or a number).
    pub expect: Option<toml::Value>,
    /// A URL the started service must answer.
    pub http: Option<String>,
    /// The status it must answer with (default 200).
    pub expect_status: Option<u16>,
    /// A shell command that must exit 0.
    pub command: Option<String>,
    /// This check's time limit, e.g. "5s".
    pub timeout: Option<String>,
}

impl DrillConfig {
    /// The checks as the library runs them; an error names the config file
    /// and the check (78).
    pub fn checks(&self, path: &Path) -> Result<Vec<lifeboat::drill::Check>> {
        use lifeboat::drill::{Check, CheckKind};
        let default_timeout = match &self.timeout {
            Some(t) => drill_duration(path, "[drill] timeout", t)?,
            None => lifeboat::drill::DEFAULT_CHECK_TIMEOUT,
        };
        let mut out = Vec::new();
        for (i, c) in self.check.iter().enumerate() {
            let at = format!("[[drill.check]] #{}", i + 1);
            let bad = |problem: String, fix: &str| {
                Error::config(path.display(), format!("{at}: {problem}"))
                    .fix(fix.to_string())
                    .code(ErrorCode::ConfigInvalid)
            };
            let kinds = [c.sql.is_some(), c.http.is_some(), c.command.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(bad(
                    "needs exactly one of `sql`, `http` and `command`".into(),
                    "write one check per [[drill.check]]",
                ));
            }
            if c.sql.is_none() && (c.database.is_some() || c.expect.is_some()) {
                return Err(bad(
                    "`database` and `expect` belong to a `sql` check".into(),
                    "remove them or add `sql`",
                ));
            }
            if c.http.is_none() && c.expect_status.is_some() {
                return Err(bad(
                    "`expect_status` belongs to an `http` check".into(),
                    "remove it or add `http`",
                ));
            }
            let timeout = match &c.timeout {
                Some(t) => drill_duration(path, &format!("{at} timeout"), t)?,
                None => default_timeout,
            };
            let kind = if let Some(query) = &c.sql {
                let Some(database) = c.database.clone() else {
                    return Err(bad(
                        "a `sql` check needs `database`".into(),
                        "name the restored database: `database = \"app.db\"` (a source name) or its original path",
                    ));
                };
                let expect = match &c.expect {
                    None => None,
                    Some(toml::Value::String(s)) => Some(s.clone()),
                    Some(toml::Value::Integer(n)) => Some(n.to_string()),
                    Some(toml::Value::Float(f)) => Some(f.to_string()),
                    Some(toml::Value::Boolean(b)) => Some(u8::from(*b).to_string()),
                    Some(other) => {
                        return Err(bad(
                            format!("`expect = {other}` is not a string or a number"),
                            "write what the first column must read, e.g. `expect = \"3\"`",
                        ));
                    }
                };
                CheckKind::Sql {
                    database,
                    query: query.clone(),
                    expect,
                }
            } else if let Some(url) = &c.http {
                let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(bad(
                        format!("`http = \"{url}\"` is not an http(s) URL"),
                        "write it like http://127.0.0.1:8080/up",
                    ));
                }
                CheckKind::Http {
                    url: url.clone(),
                    expect_status: c.expect_status.unwrap_or(200),
                }
            } else {
                CheckKind::Command {
                    command: c.command.clone().unwrap_or_default(),
                }
            };
            let name = c.name.clone().unwrap_or_else(|| match &kind {
                CheckKind::Sql { database, query, .. } => format!("{database}: {query}"),
                CheckKind::Http { url, .. } => format!("GET {url}"),
                CheckKind::Command { command } => command.clone(),
            });
            out.push(Check { name, kind, timeout });
        }
        Ok(out)
    }

    /// The service to start, if `start` is set.
    pub fn service(&self, path: &Path) -> Result<Option<lifeboat::drill::Service>> {
        if self.start.is_none() && self.stop.is_some() {
            return Err(Error::config(path.display(), "[drill] has `stop` but no `start`")
                .fix("add the command that starts the service, or remove `stop`")
                .code(ErrorCode::ConfigInvalid));
        }
        let stop_timeout = match &self.stop_timeout {
            Some(t) => drill_duration(path, "[drill] stop_timeout", t)?,
            None => lifeboat::drill::DEFAULT_STOP_TIMEOUT,
        };
        Ok(self.start.clone().map(|start| lifeboat::drill::Service {
            start,
            stop: self.stop.clone(),
            stop_timeout,
        }))
    }
}

fn drill_duration(path: &Path, what: &str, value: &str) -> Result<std::time::Duration> {
    lifeboat::duration::parse_duration(what, value).map_err(|e| {
        Error::config(path.display(), format!("{what}: {}", e.problem))
            .fix(e.fix)
            .code(ErrorCode::ConfigInvalid)
    })
}

/// The places searched, in order, when `--config` is not given.
pub fn search_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("LIFEBOAT_CONFIG").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    v.push(PathBuf::from("./lifeboat.toml"));
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| lifeboat::fsutil::HostDirs::from_env().home.join(".config"));
    v.push(xdg.join("lifeboat/lifeboat.toml"));
    v.push(PathBuf::from("/etc/lifeboat/lifeboat.toml"));
    v
}

impl Config {
    /// A config holding credentials that other local users can read is
    /// allowed (the operator may want it so) but said: those keys can
    /// delete or read every backup.
    fn warn_if_secrets_are_readable(&self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let s3 = self.repository.as_ref().map(|r| &r.s3);
        let holds_secrets = s3.is_some_and(|o| o.secret_access_key.is_some() || o.session_token.is_some());
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
        if holds_secrets && mode & 0o044 != 0 {
            tracing::warn!(
                event = "config.secrets_readable",
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the configuration holds S3 credentials and other users can read it; `chmod 600` it"
            );
        }
    }

    /// Two sources of one name would be one source in a snapshot: a
    /// configuration error (78), caught when the file is read.
    fn check_names_unique(&self, path: &Path) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for s in self.sources(lifeboat::repo::manifest::SnapshotKind::Full) {
            if !seen.insert(s.name.clone()) {
                return Err(
                    Error::config(path.display(), format!("two sources are named `{}`", s.name))
                        .fix("give one of them another `name = \"…\"`")
                        .code(ErrorCode::ConfigDuplicateName),
                );
            }
        }
        Ok(())
    }

    /// Read and check the file at `path`; relative source paths are
    /// resolved against its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e).fix("check the --config path"))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            // Lines before the error's start, plus its own: `lines()` of a
            // prefix ending in a newline misses the line the error is on.
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            Error::config(path.display(), format!("{at}{msg}"))
                .fix("see the configuration section of the README")
                .code(ErrorCode::ConfigInvalid)
        })?;
        c.path = path.to_path_buf();
        c.warn_if_secrets_are_readable(path);
        c.check_names_unique(path)?;
        // A broken drill section is refused when the file is read, so an
        // agent reloading it keeps the old one.
        c.drill.checks(path)?;
        c.drill.service(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Relative source paths are relative to the config file.
        for p in c
            .sqlite
            .iter_mut()
            .map(|s| &mut s.path)
            .chain(c.directory.iter_mut().map(|d| &mut d.path))
            .chain(c.file.iter_mut().map(|f| &mut f.path))
        {
            // Absolute and without `..`: sources are recorded by these paths,
            // and an in-place restore on another host recreates them.
            if p.is_relative() {
                *p = lifeboat::fsutil::absolute_normalized(&base.join(&*p));
            }
        }
        if let Some(p) = c.drill.scratch.as_mut().filter(|p| p.is_relative()) {
            *p = lifeboat::fsutil::absolute_normalized(&base.join(&*p));
        }
        Ok(c)
    }

    /// `explicit` if given, else the first existing search path; `None` if none.
    pub fn discover(explicit: Option<&Path>) -> Result<Option<Config>> {
        if let Some(p) = explicit {
            return Config::load(p).map(Some);
        }
        for p in search_paths() {
            if p.is_file() {
                return Config::load(&p).map(Some);
            }
        }
        Ok(None)
    }

    /// The error for a command that needs a config and found none,
    /// naming every place searched.
    pub fn not_found_error() -> Error {
        let tried: Vec<String> = search_paths().iter().map(|p| p.display().to_string()).collect();
        Error::config(
            "lifeboat.toml",
            format!("no configuration found (tried {})", tried.join(", ")),
        )
        .fix("pass --config FILE, or name what to back up on the command line")
        .code(ErrorCode::ConfigNotFound)
    }

    /// The sources of a snapshot of `kind` (a partial one leaves out the
    /// `full_only` sources).
    pub fn sources(&self, kind: lifeboat::repo::manifest::SnapshotKind) -> Vec<SourceSpec> {
        let full = kind != lifeboat::repo::manifest::SnapshotKind::Partial;
        let mut v = Vec::new();
        for s in self.sqlite.iter().filter(|s| full || !s.full_only) {
            v.push(SourceSpec {
                name: s.name.clone().unwrap_or_else(|| file_name(&s.path)),
                path: s.path.clone(),
                kind: SourceKind::Sqlite {
                    schema_query: s
                        .schema_version
                        .clone()
                        .unwrap_or_else(|| lifeboat::sqlite::capture::DEFAULT_SCHEMA_QUERY.into()),
                },
            });
        }
        for d in self.directory.iter().filter(|d| full || !d.full_only) {
            v.push(SourceSpec {
                name: d.name.clone().unwrap_or_else(|| file_name(&d.path)),
                path: d.path.clone(),
                kind: SourceKind::Directory {
                    exclude: d.exclude.clone(),
                },
            });
        }
        for f in self.file.iter().filter(|f| full || !f.full_only) {
            v.push(SourceSpec {
                name: f.name.clone().unwrap_or_else(|| file_name(&f.path)),
                path: f.path.clone(),
                kind: SourceKind::File,
            });
        }
        v
    }
}

/// A source's default name: the last component of its absolute path.
pub fn file_name(p: &Path) -> String {
    std::path::absolute(p)
        .ok()
        .and_then(|a| a.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| p.display().to_string())
}
