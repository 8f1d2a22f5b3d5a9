//! The operator's configuration file (`lifeboat.toml`): which repository, and
//! which databases, directories and files make up the service's state. Unknown
//! keys are errors, never silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use lifeboat::error::{Error, ErrorCode, Result};
use lifeboat::forget::{RuleSet, RuleSets, WalWindow};
use lifeboat::repo::manifest::SnapshotKind;
use lifeboat::retention::{Count, KeepWithin, Policy};
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
    /// `[[hook]]`: commands run on events (`snapshot.failure`, ...).
    #[serde(default)]
    pub hook: Vec<HookConfig>,
    /// `[drill]` and `[[drill.check]]`: how `lifeboat drill` proves a
    /// backup restores.
    #[serde(default)]
    pub drill: DrillConfig,
    /// Where this config was read from.
    #[serde(skip)]
    pub path: PathBuf,
    /// The file's text, to name the line of a value found wrong after
    /// parsing (values carry their byte span, `toml::Spanned`).
    #[serde(skip)]
    pub text: String,
    /// The time zone cron schedules (and, later, calendar rules) are read
    /// in, e.g. "Europe/Berlin" (default: the system's).
    pub timezone: Option<String>,
    /// `[[job]]`: what `lifeboat agent` runs, and when.
    #[serde(default)]
    pub job: Vec<JobConfig>,
    /// `[agent]`: how `lifeboat agent` runs them.
    #[serde(default)]
    pub agent: AgentConfig,
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
///
/// The `keep_*` rules at the top are the rule set of every snapshot that no
/// `[retention.tag.NAME]` and no `[retention.KIND]` set covers (see
/// `lifeboat::forget::RuleSets` for the order). Each value carries its span
/// so an error can name its line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// `--keep-last`.
    pub keep_last: Option<Spanned<i64>>,
    /// `--keep-hourly`.
    pub keep_hourly: Option<Spanned<i64>>,
    /// `--keep-daily`.
    pub keep_daily: Option<Spanned<i64>>,
    /// `--keep-weekly`.
    pub keep_weekly: Option<Spanned<i64>>,
    /// `--keep-monthly`.
    pub keep_monthly: Option<Spanned<i64>>,
    /// `--keep-yearly`.
    pub keep_yearly: Option<Spanned<i64>>,
    /// e.g. "7d" or "1y2m" (restic's units: y, m = months, d, h).
    pub keep_within: Option<Spanned<String>>,
    /// `--keep-tag` lists: `"a,b"` keeps snapshots with both.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// How far back every commit stays restorable, e.g. "24h" (the default
    /// when there are snapshot rules) or "unlimited".
    pub keep_wal: Option<Spanned<String>>,
    /// How old a prune's mark must be before its packs are deleted, e.g. "1h".
    pub grace: Option<String>,
    /// Repack packs at least this percent unused.
    pub repack_unused: Option<f64>,
    /// `[retention.full]`: the rules of full snapshots.
    pub full: Option<Spanned<RuleSetConfig>>,
    /// `[retention.partial]`: the rules of partial snapshots.
    pub partial: Option<Spanned<RuleSetConfig>>,
    /// `[retention.base]`: the rules of replication bases (besides the WAL
    /// window, which keeps its own).
    pub base: Option<Spanned<RuleSetConfig>>,
    /// `[retention.tag.NAME]`: the rules of snapshots tagged NAME, before
    /// their kind's; among several, the first name in byte order.
    #[serde(default)]
    pub tag: std::collections::BTreeMap<String, Spanned<RuleSetConfig>>,
}

/// One rule set below `[retention]`: `[retention.partial]`,
/// `[retention.tag.release]`. The same rules as the top level; `keep_wal` is
/// the repository's and refused here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetConfig {
    /// `--keep-last`.
    pub keep_last: Option<Spanned<i64>>,
    /// `--keep-hourly`.
    pub keep_hourly: Option<Spanned<i64>>,
    /// `--keep-daily`.
    pub keep_daily: Option<Spanned<i64>>,
    /// `--keep-weekly`.
    pub keep_weekly: Option<Spanned<i64>>,
    /// `--keep-monthly`.
    pub keep_monthly: Option<Spanned<i64>>,
    /// `--keep-yearly`.
    pub keep_yearly: Option<Spanned<i64>>,
    /// e.g. "7d".
    pub keep_within: Option<Spanned<String>>,
    /// `--keep-tag` lists.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Accepted by the parser only to say where it belongs.
    pub keep_wal: Option<Spanned<toml::Value>>,
}

impl RetentionConfig {
    /// The top-level rules, as a rule set of their own.
    fn top_level(&self) -> RuleSetConfig {
        RuleSetConfig {
            keep_last: self.keep_last.clone(),
            keep_hourly: self.keep_hourly.clone(),
            keep_daily: self.keep_daily.clone(),
            keep_weekly: self.keep_weekly.clone(),
            keep_monthly: self.keep_monthly.clone(),
            keep_yearly: self.keep_yearly.clone(),
            keep_within: self.keep_within.clone(),
            keep_tags: self.keep_tags.clone(),
            keep_wal: None,
        }
    }
}

/// `[[hook]]`: a command run when an event happens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The events it runs on.
    pub on: Vec<HookEvent>,
    /// The command, run through `sh -c` with the event in `LIFEBOAT_*`
    /// environment variables.
    pub run: String,
    /// How long it may run before it is killed with its process group
    /// (default 1m).
    pub timeout: Option<String>,
    /// `ignore` (default): a failing hook is logged; `fail`: it also makes
    /// a command that succeeded exit 75.
    #[serde(default)]
    pub policy: HookPolicy,
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
    /// Run (through `sh -c`) right before this source is captured, e.g.
    /// `docker compose stop web worker`; failing, it fails the snapshot.
    pub before: Option<String>,
    /// Run right after this source is captured, even when the capture
    /// failed, e.g. `docker compose start web worker`.
    pub after: Option<String>,
    /// How long `before` and `after` may each run (default 5m).
    pub hook_timeout: Option<String>,
    /// Captured by `--kind full` only.
    #[serde(default)]
    pub full_only: bool,
    /// Whether `lifeboat agent` and a plain `lifeboat replicate` ship its
    /// every commit (default true).
    pub replicate: Option<bool>,
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
    /// Run (through `sh -c`) right before this source is captured, e.g.
    /// `docker compose stop web worker`; failing, it fails the snapshot.
    pub before: Option<String>,
    /// Run right after this source is captured, even when the capture
    /// failed, e.g. `docker compose start web worker`.
    pub after: Option<String>,
    /// How long `before` and `after` may each run (default 5m).
    pub hook_timeout: Option<String>,
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
    /// Run (through `sh -c`) right before this source is captured, e.g.
    /// `docker compose stop web worker`; failing, it fails the snapshot.
    pub before: Option<String>,
    /// Run right after this source is captured, even when the capture
    /// failed, e.g. `docker compose start web worker`.
    pub after: Option<String>,
    /// How long `before` and `after` may each run (default 5m).
    pub hook_timeout: Option<String>,
    /// Captured by `--kind full` only.
    #[serde(default)]
    pub full_only: bool,
}

/// `[[job]]`: one scheduled command of `lifeboat agent`. Schedule and
/// command line keep their place in the file, so a wrong one is reported
/// at its line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The job's name, unique; operations log records carry it.
    pub name: String,
    /// A cron expression (5 fields, or 6 with seconds first) in `timezone`,
    /// or a duration such as "15m" (every 15 minutes).
    pub schedule: toml::Spanned<String>,
    /// A lifeboat command line without the program name, e.g.
    /// "snapshot --kind partial".
    pub run: toml::Spanned<String>,
    /// Start each run up to this much later, at random, e.g. "5m".
    pub jitter: Option<String>,
    /// Stop a run that takes longer (SIGTERM, then SIGKILL), e.g. "2h".
    pub timeout: Option<String>,
    /// Run again this many times after a temporary failure (default 3).
    pub retries: Option<u32>,
    /// Wait between tries (default "1m").
    pub retry_delay: Option<String>,
    /// The exit codes that count as temporary (default [75]).
    pub retry_on: Option<Vec<i32>>,
}

/// `[agent]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// How long a job or the replicator gets to stop after SIGTERM before
    /// SIGKILL (default "30s").
    pub stop_grace: Option<String>,
    /// Where the agent keeps its schedule state and `agent-status.json`
    /// (default `$XDG_STATE_HOME/lifeboat/agent`).
    pub state_dir: Option<PathBuf>,
}

/// The directory relative source paths are resolved against instead of the
/// config file's own (set by `lifeboat agent` for its children).
pub const CONFIG_BASE_ENV: &str = "LIFEBOAT_CONFIG_BASE";
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
        c.text = text;
        c.warn_if_secrets_are_readable(path);
        c.check_names_unique(path)?;
        // A broken drill section is refused when the file is read, so an
        // agent reloading it keeps the old one.
        c.drill.checks(path)?;
        c.drill.service(path)?;
        check_hooks(&c, path)?;
        // The kind and tag rule sets are new: refused whole when broken,
        // by every command. (The top-level rules are read when used, as
        // before: the command line replaces them.)
        c.retention_sets(false)?;
        // `lifeboat agent` runs its jobs on its own copy of the file it
        // checked (so an edit it refused is not what they read), and names
        // the original's directory here for relative paths.
        let base_override = std::env::var_os(CONFIG_BASE_ENV)
            .filter(|b| !b.is_empty())
            .map(PathBuf::from);
        let base = base_override
            .as_deref()
            .unwrap_or(path.parent().unwrap_or(Path::new(".")));
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

/// An event a `[[hook]]` can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HookEvent {
    /// `lifeboat snapshot` published a snapshot.
    #[serde(rename = "snapshot.success")]
    SnapshotSuccess,
    /// `lifeboat snapshot` ended without publishing one.
    #[serde(rename = "snapshot.failure")]
    SnapshotFailure,
    /// A drill found a check failing, or could not run.
    #[serde(rename = "drill.failure")]
    DrillFailure,
    /// A replicated database lost continuity: commits may be missing until
    /// its next base.
    #[serde(rename = "replicate.gap")]
    ReplicateGap,
    /// Any command ended with a non-zero exit code.
    #[serde(rename = "any_error")]
    AnyError,
}

impl HookEvent {
    /// The name hooks are configured and told with (`LIFEBOAT_EVENT`).
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::SnapshotSuccess => "snapshot.success",
            HookEvent::SnapshotFailure => "snapshot.failure",
            HookEvent::DrillFailure => "drill.failure",
            HookEvent::ReplicateGap => "replicate.gap",
            HookEvent::AnyError => "any_error",
        }
    }
}

/// What a failing `[[hook]]` does to the command that fired it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookPolicy {
    /// Logged (`hook.failed`, `hook.timed_out`), nothing more.
    #[default]
    Ignore,
    /// Also makes a command that succeeded exit 75.
    Fail,
}

/// Checked when the config is read, so a broken hook is a configuration
/// error (78) naming the file, before anything runs.
fn check_hooks(c: &Config, path: &Path) -> Result<()> {
    let bad = |what: String, problem: String, fix: &str| {
        Err(Error::config(path.display(), format!("{what}: {problem}"))
            .fix(fix)
            .code(ErrorCode::ConfigInvalid))
    };
    for (i, h) in c.hook.iter().enumerate() {
        let what = format!("[[hook]] {}", i + 1);
        if h.on.is_empty() {
            return bad(
                what,
                "`on` names no event".into(),
                "list events, e.g. on = [\"snapshot.failure\", \"any_error\"]",
            );
        }
        if h.run.trim().is_empty() {
            return bad(what, "`run` is empty".into(), "give the command to run");
        }
        if let Some(t) = &h.timeout {
            lifeboat::duration::parse_duration(&format!("{what} timeout"), t).map_err(|e| in_file(e, path))?;
        }
    }
    let timeouts = c
        .sqlite
        .iter()
        .map(|s| (&s.path, &s.hook_timeout))
        .chain(c.directory.iter().map(|d| (&d.path, &d.hook_timeout)))
        .chain(c.file.iter().map(|f| (&f.path, &f.hook_timeout)));
    for (source, t) in timeouts {
        if let Some(t) = t {
            let what = format!("hook_timeout of {}", source.display());
            lifeboat::duration::parse_duration(&what, t).map_err(|e| in_file(e, path))?;
        }
    }
    Ok(())
}

/// A setting's error, told as a line of the config file at `path`.
fn in_file(e: Error, path: &Path) -> Error {
    Error::config(path.display(), format!("{}: {}", e.subject, e.problem))
        .fix(e.fix)
        .code(ErrorCode::ConfigInvalid)
}

/// The line (from 1) of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// A wrong value of this file: the error (whose subject names the
    /// setting) becomes a configuration error naming the file and line.
    pub fn error_at(&self, span: std::ops::Range<usize>, e: Error) -> Error {
        let setting = if e.subject.is_empty() {
            e.problem
        } else {
            format!("{}: {}", e.subject, e.problem)
        };
        // As the parser's own errors read: `FILE: line N: ...`.
        Error::config(
            self.path.display(),
            format!("line {}: {setting}", line_at(&self.text, span.start)),
        )
        .fix(e.fix)
        .code(ErrorCode::ConfigInvalid)
    }

    /// `[retention]`'s rule sets for `forget`, every value checked: the
    /// tag sets (in name order), the kind sets, and with `top_level` the
    /// top-level rules as the fallback. A set with no rule, or with
    /// `keep_wal`, is refused.
    pub fn retention_sets(&self, top_level: bool) -> Result<RuleSets> {
        let r = &self.retention;
        let mut sets = RuleSets::default();
        for (tag, set) in &r.tag {
            let name = format!("retention.tag.{tag}");
            sets.tags.push((tag.clone(), self.rule_set(&name, set)?));
        }
        for (kind, set) in [
            (SnapshotKind::Full, &r.full),
            (SnapshotKind::Partial, &r.partial),
            (SnapshotKind::Base, &r.base),
        ] {
            if let Some(set) = set {
                sets.kinds
                    .push((kind, self.rule_set(&format!("retention.{kind}"), set)?));
            }
        }
        if top_level {
            let policy = self.policy("retention", &r.top_level())?;
            if !policy.is_empty() {
                sets.fallback = Some(RuleSet {
                    name: "retention".into(),
                    policy,
                });
            }
        }
        Ok(sets)
    }

    /// `[retention] keep_wal`, if set.
    pub fn retention_keep_wal(&self) -> Result<Option<WalWindow>> {
        self.retention
            .keep_wal
            .as_ref()
            .map(|w| parse_wal_window("[retention] keep_wal", w.get_ref()).map_err(|e| self.error_at(w.span(), e)))
            .transpose()
    }

    fn rule_set(&self, name: &str, set: &Spanned<RuleSetConfig>) -> Result<RuleSet> {
        if let Some(w) = &set.get_ref().keep_wal {
            return Err(self.error_at(
                w.span(),
                Error::config(
                    format!("[{name}] keep_wal"),
                    "the WAL window is the whole repository's, not one rule set's",
                )
                .fix("move keep_wal to [retention]"),
            ));
        }
        let policy = self.policy(name, set.get_ref())?;
        if policy.is_empty() {
            return Err(self.error_at(
                set.span(),
                Error::config(
                    format!("[{name}]"),
                    "holds no rule, so it would keep every snapshot it judges",
                )
                .fix("give it a rule such as keep_daily = 7, or remove the section"),
            ));
        }
        Ok(RuleSet {
            name: name.to_string(),
            policy,
        })
    }

    fn policy(&self, name: &str, set: &RuleSetConfig) -> Result<Policy> {
        let count = |key: &str, n: &Option<Spanned<i64>>| -> Result<Option<Count>> {
            let Some(n) = n else { return Ok(None) };
            match *n.get_ref() {
                -1 => Ok(Some(Count::Unlimited)),
                v => u32::try_from(v).map(|v| Some(Count::N(v))).map_err(|_| {
                    self.error_at(
                        n.span(),
                        Error::config(format!("[{name}] {key}"), format!("{v} is not a count"))
                            .fix("write a number from 0 up, or -1 for unlimited"),
                    )
                }),
            }
        };
        Ok(Policy {
            last: count("keep_last", &set.keep_last)?,
            hourly: count("keep_hourly", &set.keep_hourly)?,
            daily: count("keep_daily", &set.keep_daily)?,
            weekly: count("keep_weekly", &set.keep_weekly)?,
            monthly: count("keep_monthly", &set.keep_monthly)?,
            yearly: count("keep_yearly", &set.keep_yearly)?,
            within: set
                .keep_within
                .as_ref()
                .map(|w| {
                    keep_within(&format!("[{name}] keep_within"), w.get_ref()).map_err(|e| self.error_at(w.span(), e))
                })
                .transpose()?,
            tags: set.keep_tags.clone(),
        })
    }
}

/// A `keep_within` value (`--keep-within`), restic's units.
pub fn keep_within(what: &str, s: &str) -> Result<KeepWithin> {
    lifeboat::retention::parse_duration(s)
        .map_err(|e| Error::config(what, format!("`{s}`: {e}")).fix("write it like 7d, 2h or 1y6m (m means months)"))
}

/// A `keep_wal` value (`--keep-wal`): a duration or `unlimited`.
pub fn parse_wal_window(what: &str, s: &str) -> Result<WalWindow> {
    if s.trim() == "unlimited" {
        return Ok(WalWindow::Unlimited);
    }
    let d =
        lifeboat::duration::parse_duration(what, s).map_err(|e| e.fix("write it like 24h or 7d, or `unlimited`"))?;
    jiff::SignedDuration::try_from(d)
        .map(WalWindow::Within)
        .map_err(|_| Error::config(what, format!("`{s}` is too long")).fix("write it like 24h or 7d, or `unlimited`"))
}
