//! Where a repository lives, as given by `--repo`, the config or the default,
//! resolved once: a local directory, or an S3 bucket and prefix with the
//! endpoint and region settled from the URL, the environment or the config.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorCode, Result};
use crate::fsutil::HostDirs;

#[derive(Debug, Clone)]
/// Where a repository lives, resolved once, with its storage settings.
pub struct RepoLocation {
    /// The directory or bucket.
    pub backend: Backend,
    /// True when nothing named it and the per-user default is used; only then
    /// is it created on first write.
    pub is_default: bool,
    /// The `[repository]` settings to open it with.
    pub options: StorageOptions,
}

#[derive(Debug, Clone)]
/// The kind of place a repository lives in.
pub enum Backend {
    /// A local (or mounted) directory.
    Local(PathBuf),
    /// A bucket and prefix on an S3-compatible endpoint.
    S3(S3Target),
}

/// Settings of `[repository]` other than the URL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// Uploads and downloads in flight at once (default 8).
    pub transfers: Option<usize>,
    /// How long one request may keep being retried after temporary failures
    /// (default 60 s; the binary's `LIFEBOAT_RETRY_SECONDS` overrides).
    pub retry_seconds: Option<u64>,
    #[serde(default)]
    /// `[repository.s3]`.
    pub s3: S3Options,
    /// The per-user cache directory an S3 repository's per-host working
    /// directory goes in ([`HostDirs::cache`]); required for a bucket, unused
    /// for a directory. The binary passes [`HostDirs::from_env`]'s.
    #[serde(skip)]
    pub cache_dir: Option<PathBuf>,
    /// What every storage opened with these options counts into: one
    /// operation's totals for its operations log record
    /// ([`crate::oplog::Operation`] hands out options carrying its own).
    /// `None`: each storage counts on its own.
    #[serde(skip)]
    pub meter: Option<std::sync::Arc<super::metered::Meter>>,
}

/// `[repository.s3]`. Credentials and `profile` here override the AWS
/// environment; `endpoint` and `region` apply when neither the URL nor the
/// environment gives one (the order the URL's documentation promises).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL, when neither the URL nor the environment gives one.
    pub endpoint: Option<String>,
    /// Region, when neither the URL nor the environment gives one.
    pub region: Option<String>,
    /// Static access key id.
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<String>,
    /// Session token that goes with temporary static keys.
    pub session_token: Option<String>,
    /// A profile of the shared AWS config and credentials files.
    pub profile: Option<String>,
    /// Integrity checksum sent with every upload and part: `crc32c`
    /// (default) or `none` for servers that reject checksum headers.
    pub checksum: Option<String>,
    /// Objects larger than this go up in parts of exactly this size
    /// (default 32 MiB; at least 5 MiB, S3's minimum part).
    pub part_size_mib: Option<u64>,
    /// Bucket-in-hostname addressing (default: only for AWS's own endpoints).
    pub virtual_host_style: Option<bool>,
    /// Ask the EC2 instance metadata service for credentials (default off:
    /// probing it off EC2 costs seconds).
    #[serde(default)]
    pub instance_metadata: bool,
    /// How long a request may wait for the next bytes of an answer before
    /// it is abandoned and tried again (default 60 s): a server that stops
    /// answering costs this, never a hang.
    pub read_timeout_seconds: Option<u64>,
}

impl StorageOptions {
    /// Uploads and downloads in flight at once: 8 unless set, clamped to 1–64.
    pub fn transfers(&self) -> usize {
        self.transfers.unwrap_or(8).clamp(1, 64)
    }

    /// The time budget of retries for one request.
    pub fn retry_budget(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retry_seconds.unwrap_or(60))
    }

    /// The per-host working directory of the bucket `target`.
    pub fn s3_work_dir(&self, target: &S3Target) -> Result<PathBuf> {
        let cache = self.cache_dir.as_deref().ok_or_else(|| {
            Error::config(
                target.display(),
                "no per-user cache directory for the repository's working files",
            )
            .fix("set StorageOptions::cache_dir (lifeboat::HostDirs::from_env() gives the usual one)")
        })?;
        Ok(target.local_dir(cache))
    }
}

/// A bucket and key prefix on an S3-compatible endpoint.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// The bucket name.
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// Full URL; `None` means AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
}

impl S3Target {
    /// `s3://bucket/prefix` as the operator wrote it, plus the endpoint.
    pub fn display(&self) -> String {
        let url = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        match &self.endpoint {
            Some(ep) => format!("{url} at {ep}"),
            None => url,
        }
    }

    /// The URL to give `--repo` to reach this repository again.
    pub fn url(&self) -> String {
        let base = format!("s3://{}/{}", self.bucket, self.prefix);
        match &self.endpoint {
            Some(ep) => format!("{}?endpoint={ep}&region={}", base.trim_end_matches('/'), self.region),
            None => format!("{}?region={}", base.trim_end_matches('/'), self.region),
        }
    }

    /// The endpoint, or AWS's regional one when none is set.
    pub fn endpoint_or_aws(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
    }

    /// Per-host working directory for this repository: staging, the metadata
    /// cache and the host's writer lock. `<cache>/lifeboat/s3/<hash>`, where
    /// `cache` is the per-user cache directory (`$XDG_CACHE_HOME`).
    pub fn local_dir(&self, cache: &Path) -> PathBuf {
        let key = format!("{}\n{}\n{}", self.endpoint_or_aws(), self.bucket, self.prefix);
        let hash = blake3::hash(key.as_bytes()).to_hex();
        cache.join("lifeboat/s3").join(&hash.as_str()[..24])
    }
}

impl RepoLocation {
    /// A repository location as an operator writes it: a directory path, a
    /// `file://` URL or `s3://BUCKET/PREFIX`.
    ///
    /// ```
    /// use lifeboat::RepoLocation;
    ///
    /// let options = Default::default();
    /// let local = RepoLocation::parse("/var/backups/lifeboat", &options).unwrap();
    /// assert_eq!(local.display(), "/var/backups/lifeboat");
    /// let bucket = RepoLocation::parse("s3://backups/portunus?region=eu-west-1", &options).unwrap();
    /// assert!(bucket.display().starts_with("s3://backups/portunus"));
    /// ```
    pub fn parse(s: &str, options: &StorageOptions) -> Result<RepoLocation> {
        let backend = match s.split_once("://") {
            Some(("s3", rest)) => Backend::S3(parse_s3(s, rest, &options.s3)?),
            Some(("file", rest)) => Backend::Local(absolute(rest)?),
            Some((scheme, _)) => {
                return Err(
                    Error::config(s, format!("repository scheme {scheme}:// is not supported"))
                        .fix("use a local directory path or s3://BUCKET/PREFIX"),
                );
            }
            None => Backend::Local(absolute(s)?),
        };
        Ok(RepoLocation {
            backend,
            is_default: false,
            options: options.clone(),
        })
    }

    /// The per-user default repository, [`HostDirs::default_repo`]
    /// (`$XDG_STATE_HOME/lifeboat/repo` for the binary).
    pub fn default_location(dirs: &HostDirs, options: &StorageOptions) -> RepoLocation {
        RepoLocation {
            backend: Backend::Local(dirs.default_repo()),
            is_default: true,
            options: options.clone(),
        }
    }

    /// A local repository at `path` (tests, the demo).
    pub fn local(path: PathBuf) -> RepoLocation {
        RepoLocation {
            backend: Backend::Local(path),
            is_default: false,
            options: StorageOptions::default(),
        }
    }

    /// The location for messages: a path, or the bucket URL and endpoint.
    pub fn display(&self) -> String {
        match &self.backend {
            Backend::Local(p) => p.display().to_string(),
            Backend::S3(t) => t.display(),
        }
    }

    /// What to pass to `--repo` (quoted for a shell) to reach it again.
    pub fn repo_arg(&self) -> String {
        match &self.backend {
            Backend::Local(p) => p.display().to_string(),
            Backend::S3(t) => format!("'{}'", t.url()),
        }
    }
}

fn absolute(p: &str) -> Result<PathBuf> {
    let path = PathBuf::from(p);
    std::path::absolute(&path).map_err(|e| Error::io(&path, e))
}

/// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]`. The endpoint and region
/// come from the URL, else `opts` (where the binary puts `AWS_ENDPOINT_URL`
/// / `AWS_REGION` / `AWS_DEFAULT_REGION` before `[repository.s3]`'s).
fn parse_s3(whole: &str, rest: &str, opts: &S3Options) -> Result<S3Target> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    let bad = |problem: String| {
        Error::config(whole, problem)
            .fix("write it as s3://BUCKET/PREFIX?endpoint=URL&region=REGION")
            .code(ErrorCode::RepoBadUrl)
    };
    if bucket.is_empty() {
        return Err(bad("no bucket name".into()));
    }
    let (mut endpoint, mut region) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "endpoint" => endpoint = Some(v),
            "region" => region = Some(v),
            other => {
                return Err(bad(format!(
                    "unknown URL parameter `{other}` (known: endpoint, region)"
                )));
            }
        }
    }
    let endpoint = endpoint
        .or_else(|| opts.endpoint.clone())
        .map(|e| e.trim_end_matches('/').to_string());
    if let Some(ep) = &endpoint
        && !(ep.starts_with("http://") || ep.starts_with("https://"))
    {
        return Err(bad(format!("endpoint `{ep}` is not an http:// or https:// URL")));
    }
    let region = region.or_else(|| opts.region.clone());
    let region = match (region, &endpoint) {
        (Some(r), _) => r,
        // MinIO and s3s accept any region in the signature and us-east-1 is
        // their default; Garage checks its own `s3_region`, and a mismatch is
        // reported with that fix (storage.wrong_region).
        (None, Some(_)) => "us-east-1".to_string(),
        (None, None) => {
            return Err(Error::config(whole, "no region for AWS S3")
                .fix("add ?region=REGION to the URL, set AWS_REGION, or set region in [repository.s3]")
                .code(ErrorCode::RepoNoRegion));
        }
    };
    Ok(S3Target {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        endpoint,
        region,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_url_parts_and_precedence() {
        let opts = S3Options {
            region: Some("from-config".into()),
            ..Default::default()
        };
        let t = parse_s3(
            "s3://b/p/q/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=r1",
            "b/p/q/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=r1",
            &opts,
        )
        .unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("b", "p/q"));
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(t.region, "r1");
        assert!(parse_s3("s3://", "", &opts).is_err());
        assert!(parse_s3("s3://b?bogus=1", "b?bogus=1", &opts).is_err());
        assert!(parse_s3("s3://b?endpoint=ftp://x", "b?endpoint=ftp://x", &opts).is_err());
    }
}
