//! Every stable error code, with its event name and class, in one table.

use super::ErrorKind;

/// One table gives the enum, its event names, its kinds and the full list:
/// a code cannot be added without all four.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $code:ident = $event:literal, $kind:ident; )*) => {
        /// What failed, as a stable name: the event printed with
        /// `--json` and in logs, and the class that decides the exit code.
        ///
        /// Event names are an interface: codes are added, never renamed.
        /// Compare codes (`e.code == ErrorCode::RepoInUse`), not event
        /// strings; more codes will come, so a `match` needs a wildcard arm.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $code, )*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code),*];

            /// The stable event name, `area.name`, e.g. `repo.in_use`.
            pub const fn event(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $event,)*
                }
            }

            /// The class of failure, which decides the exit code. An error
            /// keeps it unless its site had to choose another
            /// ([`super::Error::code_keeping_kind`]).
            pub const fn kind(self) -> ErrorKind {
                match self {
                    $(ErrorCode::$code => ErrorKind::$kind,)*
                }
            }
        }
    };
}

error_codes! {
    /// A usage error with no more specific code.
    ErrorUsage = "error.usage", Usage;
    /// Bad data with no more specific code.
    ErrorBadData = "error.bad_data", BadData;
    /// A missing input with no more specific code.
    ErrorNoInput = "error.no_input", NoInput;
    /// An output that cannot be created, with no more specific code.
    ErrorCantCreate = "error.cant_create", CantCreate;
    /// A read or write failed, with no more specific code.
    ErrorIo = "error.io", Io;
    /// A resource is held elsewhere, with no more specific code.
    ErrorBusy = "error.busy", Busy;
    /// A configuration error with no more specific code.
    ErrorConfig = "error.config", Config;

    /// Another agent answers on the status socket this agent would serve.
    AgentSocketInUse = "agent.socket_in_use", Busy;
    /// Another `lifeboat agent` already runs with this state directory.
    AgentBusy = "agent.busy", Busy;
    /// A signal ended a job's run (the agent stopping, or killed from outside).
    AgentJobKilled = "agent.job_killed", Busy;
    /// A job's child process could not be started.
    AgentJobNotStarted = "agent.job_not_started", Io;
    /// A job's run outlasted its `timeout` and was stopped.
    AgentJobTimeout = "agent.job_timeout", Busy;

    /// Two sources in `lifeboat.toml` have the same name.
    ConfigDuplicateName = "config.duplicate_name", Config;
    /// `lifeboat.toml` does not parse or holds a wrong value.
    ConfigInvalid = "config.invalid", Config;
    /// No `lifeboat.toml` was found and nothing to back up was named.
    ConfigNotFound = "config.not_found", Config;

    /// A hook command (a source's `before` or `after`, or a `[[hook]]`)
    /// failed or could not start; temporary.
    HookFailed = "hook.failed", Busy;
    /// A hook command ran past its timeout and was killed with its
    /// process group; temporary.
    HookTimedOut = "hook.timed_out", Busy;
    /// The drill's scratch directory lies inside a source or the
    /// repository.
    DrillScratchOverlaps = "drill.scratch_overlaps", Usage;
    /// The drill's scratch directory exists and is not empty.
    DrillScratchNotEmpty = "drill.scratch_not_empty", CantCreate;

    /// Prune found a snapshot referencing blobs no index file lists.
    PruneMissingBlob = "prune.missing_blob", BadData;

    /// Another replicator already follows this database.
    ReplicateBusy = "replicate.busy", Busy;
    /// The replicated database file is gone (moved or deleted).
    ReplicateDbMissing = "replicate.db_missing", NoInput;
    /// The file to replicate is not a SQLite database.
    ReplicateNotSqlite = "replicate.not_sqlite", BadData;
    /// The database to replicate is not in WAL mode.
    ReplicateNotWal = "replicate.not_wal", Config;
    /// Pinning the log for a base failed (usually the service held its
    /// write lock); temporary. SQLite's answer decides the kind.
    ReplicatePinBusy = "replicate.pin_busy", Busy;
    /// The database lies on a filesystem whose locks and fsync cannot be
    /// trusted for replication.
    ReplicateUnsupportedFilesystem = "replicate.unsupported_filesystem", Config;

    /// A repository URL that cannot be parsed.
    RepoBadUrl = "repo.bad_url", Config;
    /// `init` found a repository (or other content) already there.
    RepoExists = "repo.exists", CantCreate;
    /// The repository was written by another format version.
    RepoFormatVersion = "repo.format_version", Config;
    /// An index file is damaged, so prune would delete live data.
    RepoIndexDamaged = "repo.index_damaged", BadData;
    /// Another process holds the repository's writer lock.
    RepoInUse = "repo.in_use", Busy;
    /// An AWS S3 location with no region from any source.
    RepoNoRegion = "repo.no_region", Config;
    /// Something other than a regular file sits where a repository object
    /// belongs.
    RepoNotAFile = "repo.not_a_file", BadData;
    /// No repository at the location given.
    RepoNotFound = "repo.not_found", NoInput;
    /// A pack the index names is missing from the store.
    RepoPackMissing = "repo.pack_missing", BadData;
    /// A prune marked data for deletion while a long write ran.
    RepoRacedPrune = "repo.raced_prune", Busy;

    /// `reset` found the database open in another process.
    ResetDatabaseInUse = "reset.database_in_use", Busy;
    /// `reset` found a file that is not a SQLite database.
    ResetNotSqlite = "reset.not_sqlite", BadData;

    /// The time or txid asked for is after the newest replicated commit.
    RestoreAfterHistory = "restore.after_history", NoInput;
    /// The time or txid asked for is before the oldest base or snapshot.
    RestoreBeforeHistory = "restore.before_history", NoInput;
    /// A link or file in the restored tree blocks carrying a nested source
    /// over.
    RestoreCarryBlocked = "restore.carry_blocked", CantCreate;
    /// A database to be replaced is open in another process.
    RestoreDatabaseInUse = "restore.database_in_use", Busy;
    /// A file to be replaced is open in another process.
    RestoreFileInUse = "restore.file_in_use", Busy;
    /// The commits asked for fall in a gap of the replicated stream.
    RestoreGap = "restore.gap", BadData;
    /// `--include` matches nothing in the directories restored.
    RestoreIncludeMatchesNothing = "restore.include_matches_nothing", Usage;
    /// `PRAGMA integrity_check` failed on a restored database.
    RestoreIntegrityFailed = "restore.integrity_failed", BadData;
    /// Another source's folder lies inside one this restore replaces.
    RestoreNestedSource = "restore.nested_source", CantCreate;
    /// The repository holds no replicated database (of that name).
    RestoreNoReplica = "restore.no_replica", NoInput;
    /// The repository holds no snapshot yet.
    RestoreNoSnapshot = "restore.no_snapshot", NoInput;
    /// `--only` names a source the repository does not have; `NoInput`
    /// when it is only the snapshot chosen by id that lacks it.
    RestoreNoSuchSource = "restore.no_such_source", Usage;
    /// The backup's schema version is newer than the service supports.
    RestoreSchemaVersionTooNew = "restore.schema_version_too_new", Config;
    /// A link inside the target directory lies on a source's path.
    RestoreTargetHasLink = "restore.target_has_link", CantCreate;
    /// The target is not empty and `--force` was not given.
    RestoreTargetNotEmpty = "restore.target_not_empty", CantCreate;
    /// The state at the time asked for is not known: commits were made
    /// while the replicator was not watching.
    RestoreUncertain = "restore.uncertain", BadData;
    /// A manifest whose paths could write outside the target.
    RestoreUnsafeManifest = "restore.unsafe_manifest", BadData;
    /// `-o` was given with a selection of more or fewer than one database.
    RestoreWhichDatabase = "restore.which_database", Usage;

    /// The `schema_version` query in the configuration failed.
    SnapshotBadSchemaQuery = "snapshot.bad_schema_query", Config;
    /// The database file cannot be whole (its size disagrees with its
    /// header).
    SnapshotDatabaseDamaged = "snapshot.database_damaged", BadData;
    /// SQLite was built without the `sqlite_dbpage` table.
    SnapshotNoDbpage = "snapshot.no_dbpage", Config;
    /// `--only` names no configured source.
    SnapshotNoSuchSource = "snapshot.no_such_source", Usage;
    /// A `[[sqlite]]` source is not a SQLite database.
    SnapshotNotSqlite = "snapshot.not_sqlite", BadData;
    /// A database's `-wal` was removed or replaced while it was open, so
    /// its snapshot's frames are gone; temporary.
    SnapshotWalReplaced = "snapshot.wal_replaced", Busy;

    /// The bucket refused the credentials (HTTP 403).
    StorageAccessDenied = "storage.access_denied", Config;
    /// The endpoint's host does not resolve.
    StorageBadEndpoint = "storage.bad_endpoint", Config;
    /// Any other failure from the bucket.
    StorageFailed = "storage.failed", Io;
    /// No credentials to sign requests with.
    StorageNoCredentials = "storage.no_credentials", Config;
    /// The bucket does not exist at the endpoint.
    StorageNoSuchBucket = "storage.no_such_bucket", Config;
    /// No such object in the bucket.
    StorageNotFound = "storage.not_found", NoInput;
    /// A download ended before its range did; temporary.
    StorageShortRead = "storage.short_read", Busy;
    /// TLS failed talking to the endpoint.
    StorageTls = "storage.tls", Config;
    /// The endpoint did not answer properly; temporary.
    StorageUnavailable = "storage.unavailable", Busy;
    /// An upload the store does not report at its full size; temporary.
    StorageUploadUnconfirmed = "storage.upload_unconfirmed", Busy;
    /// The endpoint rejected the region.
    StorageWrongRegion = "storage.wrong_region", Config;
}

impl ErrorCode {
    /// The code an error of `kind` has until a more specific one is named.
    pub const fn of_kind(kind: ErrorKind) -> ErrorCode {
        match kind {
            ErrorKind::Usage => ErrorCode::ErrorUsage,
            ErrorKind::BadData => ErrorCode::ErrorBadData,
            ErrorKind::NoInput => ErrorCode::ErrorNoInput,
            ErrorKind::CantCreate => ErrorCode::ErrorCantCreate,
            ErrorKind::Io => ErrorCode::ErrorIo,
            ErrorKind::Busy => ErrorCode::ErrorBusy,
            ErrorKind::Config => ErrorCode::ErrorConfig,
        }
    }

    /// The exit code (sysexits.h) of an error with this code: its kind's.
    pub const fn exit_code(self) -> i32 {
        self.kind().exit_code()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_unique_and_shaped_area_dot_name() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let event = code.event();
            assert!(seen.insert(event), "{event} is the event of two codes");
            let (area, name) = event.split_once('.').unwrap_or_else(|| panic!("{event} has no area"));
            let shaped = |s: &str| {
                s.starts_with(|c: char| c.is_ascii_lowercase())
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            assert!(shaped(area) && shaped(name), "{event} is not area.name");
        }
    }

    #[test]
    fn each_kind_defaults_to_a_code_of_that_kind() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::of_kind(code.kind()).kind(), code.kind());
        }
    }

    /// docs/ARCHITECTURE.md, in "Errors, exit codes, events", lists every
    /// error event with its kind and exit code, beside the table of exit
    /// codes by kind.
    #[test]
    fn architecture_doc_lists_every_code_with_its_kind() {
        let doc = include_str!("../../docs/ARCHITECTURE.md");
        let section = doc
            .split("\n## Errors, exit codes, events\n")
            .nth(1)
            .expect("the errors section");
        let section = section.split("\n## ").next().unwrap();
        let rows = section.lines().filter_map(|line| {
            let cells: Vec<&str> = line
                .strip_prefix('|')?
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            Some(cells)
        });
        let mut exit_of_kind = std::collections::BTreeMap::new();
        let mut listed = std::collections::BTreeMap::new();
        for cells in rows {
            match cells.as_slice() {
                [event, kind, exit, ..] if event.contains('.') => {
                    listed.insert(event.to_string(), (kind.to_string(), exit.to_string()));
                }
                [kind, exit, ..] => {
                    let exit = exit.split(' ').next().unwrap();
                    exit_of_kind.insert(kind.to_string(), exit.to_string());
                }
                _ => {}
            }
        }
        let coded: std::collections::BTreeMap<String, (String, String)> = ErrorCode::ALL
            .iter()
            .map(|c| {
                let kind = format!("{:?}", c.kind());
                let exit = exit_of_kind.get(&kind).cloned().unwrap_or_default();
                (c.event().to_string(), (kind, exit))
            })
            .collect();
        let events: std::collections::BTreeSet<&String> = listed.keys().chain(coded.keys()).collect();
        let wrong: Vec<String> = events
            .into_iter()
            .filter(|e| listed.get(*e) != coded.get(*e))
            .map(|e| format!("{e}: documented {:?}, coded {:?}", listed.get(e), coded.get(e)))
            .collect();
        assert!(
            wrong.is_empty(),
            "docs/ARCHITECTURE.md error events:\n{}",
            wrong.join("\n")
        );
    }
}
