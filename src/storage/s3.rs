//! Repository in an S3-compatible bucket (AWS S3, R2, MinIO, Garage, B2, s3s),
//! through OpenDAL: request signing, the AWS credential chain and multipart
//! uploads are the crate's; this file adds what a backup needs on top:
//! uploads checked after they land, fixed-size parts, errors that name the
//! endpoint and bucket with the fix, and a count of every request sent.
//!
//! The trait is synchronous; a small tokio runtime owned by the backend runs
//! each call. Several threads may call at once (parallel transfers).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opendal::{HttpTransport, HttpTransporter, OperationContext, Operator};

use super::location::{S3Options, S3Target, StorageOptions};
use super::{RequestCounter, Storage};
use crate::error::{Error, ErrorCode, ErrorKind, IoContext, Result};

/// Objects in an S3-compatible bucket, through OpenDAL.
pub struct S3Storage {
    op: Operator,
    rt: tokio::runtime::Runtime,
    target: S3Target,
    local_dir: PathBuf,
    staging: PathBuf,
    part_size: usize,
    transfers: usize,
    counter: Arc<RequestCounter>,
}

/// The smallest part S3 accepts (all but the last part).
const MIN_PART: u64 = 5 << 20;
const DEFAULT_PART_MIB: u64 = 32;
/// A ranged read longer than this is fetched as parts of this size, up to
/// `transfers` of them at once: one stream from a server is bound by its
/// round trips, several fill the link (and the server's cores).
const READ_PART: u64 = 4 << 20;
/// `read_ranges` reads two ranges with one request when at most this many
/// bytes lie between them: dropping them costs less than a round trip.
const MERGE_GAP: u64 = 1 << 20;

impl S3Storage {
    /// Build the client for `target` (no request is sent) and create this
    /// host's working directory for it.
    pub fn connect(target: &S3Target, options: &StorageOptions) -> Result<S3Storage> {
        let opts = &options.s3;
        let display = target.display();
        let part_size = opts.part_size_mib.unwrap_or(DEFAULT_PART_MIB) << 20;
        let checksum = opts.checksum.as_deref().unwrap_or("crc32c");
        if !matches!(checksum, "crc32c" | "none") {
            return Err(Error::config(&display, format!("unknown checksum `{checksum}`"))
                .fix("set [repository.s3] checksum to \"crc32c\" (default) or \"none\""));
        }
        if part_size < MIN_PART {
            return Err(Error::config(&display, "part_size_mib must be at least 5")
                .fix("raise [repository.s3] part_size_mib to 5 or more"));
        }
        let read_timeout = Duration::from_secs(opts.read_timeout_seconds.unwrap_or(60).max(1));
        let op = build_operator(target, opts).map_err(|e| {
            Error::config(&display, format!("cannot set up the S3 client: {e}"))
                .fix("check the endpoint, region and credentials settings")
        })?;
        let counter = Arc::new(RequestCounter::default());
        let transport = CountingTransport {
            inner: opendal_http_transport_reqwest::ReqwestTransport::new(http_client(read_timeout).map_err(|e| {
                Error::config(&display, format!("cannot set up HTTPS: {e}")).fix("report this as a bug")
            })?),
            counter: counter.clone(),
        };
        let op = op.with_context(OperationContext::new().with_http_transport(HttpTransporter::new(transport)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lifeboat-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, &display, format!("cannot start the I/O runtime: {e}")))?;
        let local_dir = options.s3_work_dir(target)?;
        let staging = local_dir.join("staging");
        crate::fsutil::create_private_dir_all(&staging)
            .map_err(|e| Error::io(&staging, e).fix("check $XDG_CACHE_HOME (or ~/.cache) is writable"))?;
        Ok(S3Storage {
            op,
            rt,
            target: target.clone(),
            local_dir,
            staging,
            part_size: part_size as usize,
            transfers: options.transfers(),
            counter,
        })
    }

    fn subject(&self, key: &str) -> String {
        let key = key.trim_matches('/');
        let prefix = if self.target.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.target.prefix)
        };
        format!("s3://{}/{prefix}{key}", self.target.bucket)
    }

    /// Turn an OpenDAL error into one line naming the endpoint and bucket,
    /// with a fix, classified for the exit code and the retry wrapper.
    fn error(&self, key: &str, e: opendal::Error) -> Error {
        let endpoint = self.target.endpoint_or_aws();
        let bucket = &self.target.bucket;
        // Classify on what the server said (its error code and message) and
        // on the transport's causes, never on OpenDAL's context block: that
        // holds the URL, and a bucket named `tls-certs` is not a TLS failure.
        let said = short(&e).to_ascii_lowercase();
        let causes = std::error::Error::source(&e)
            .map(error_chain)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let subject = self.subject(key);
        match e.kind() {
            opendal::ErrorKind::NotFound => Error::no_input(subject, "no such object").code(ErrorCode::StorageNotFound),
            opendal::ErrorKind::PermissionDenied => Error::config(
                subject,
                format!("access denied by {endpoint} (HTTP 403): the credentials are wrong or may not use bucket {bucket}"),
            )
            .fix("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or [repository.s3]) and the key's permissions on the bucket")
            .code(ErrorCode::StorageAccessDenied),
            opendal::ErrorKind::ConfigInvalid if said.contains("nosuchbucket") => Error::config(
                format!("s3://{bucket}"),
                format!("bucket {bucket} does not exist at {endpoint}"),
            )
            .fix("create the bucket, or correct the bucket name or endpoint in the repository URL")
            .code(ErrorCode::StorageNoSuchBucket),
            _ if said.contains("authorizationheadermalformed") || said.contains("region") && !e.is_temporary() => {
                Error::config(
                    subject,
                    format!("{endpoint} rejected region {}: {}", self.target.region, short(&e)),
                )
                .fix("give the server's region with ?region= (Garage: its s3_region setting), AWS_REGION or [repository.s3] region")
                .code(ErrorCode::StorageWrongRegion)
            }
            _ if said.contains("signing credential") || causes.contains("signing credential") => Error::config(
                subject,
                format!("no S3 credentials to sign requests to {endpoint} with"),
            )
            .fix("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or [repository.s3] access_key_id and secret_access_key)")
            .code(ErrorCode::StorageNoCredentials),
            _ if causes.contains("dns error") || causes.contains("failed to lookup address") => Error::config(
                subject,
                format!("cannot resolve the host of endpoint {endpoint}"),
            )
            .fix("check the endpoint URL (?endpoint=, AWS_ENDPOINT_URL or [repository.s3] endpoint)")
            .code(ErrorCode::StorageBadEndpoint),
            _ if causes.contains("certificate") || causes.contains("tls") || causes.contains("invalid http version")
                || causes.contains("corruptmessage")
                // rustls, handshaking with a server that answered in plain HTTP.
                || causes.contains("received corrupt message") => Error::config(
                subject,
                format!("TLS failure talking to {endpoint}"),
            )
            .fix("check the endpoint's scheme (http:// or https://) and that its certificate is valid for that host")
            .code(ErrorCode::StorageTls),
            _ if e.is_temporary() || causes.contains("connection refused") || causes.contains("connect") => Error::busy(
                subject,
                format!("{endpoint} did not answer properly: {}", short(&e)),
            )
            .fix(format!("check that {endpoint} is the right endpoint and is up, then retry"))
            .code(ErrorCode::StorageUnavailable)
            .temporary(),
            _ => Error::new(ErrorKind::Io, subject, format!("{endpoint}: {}", short(&e))).code(ErrorCode::StorageFailed),
        }
    }

    fn block_on<T>(&self, key: &str, fut: impl IntoFuture<Output = opendal::Result<T>>) -> Result<T> {
        self.rt.block_on(fut.into_future()).map_err(|e| self.error(key, e))
    }

    /// Run a download as a task on the runtime's workers, which also drive
    /// the connections. Polled by `block_on` instead, on the calling thread,
    /// every chunk of the body (a few KiB at a time from a slow server) would
    /// wake that thread: tens of thousands of context switches per GiB.
    /// Here it is woken once, with the whole body.
    fn on_runtime<T: Send + 'static>(
        &self,
        key: &str,
        fut: impl Future<Output = opendal::Result<T>> + Send + 'static,
    ) -> Result<T> {
        match self.rt.block_on(self.rt.spawn(fut)) {
            Ok(r) => r.map_err(|e| self.error(key, e)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::new(
                ErrorKind::Io,
                self.subject(key),
                format!("download stopped: {e}"),
            )),
        }
    }

    /// A body that ended before the range did. A transport fault (or a
    /// truncated object); either way reading again may help, and the caller
    /// checks hashes.
    fn short_read(&self, key: &str, offset: u64, len: u64, got: usize) -> Error {
        Error::busy(
            self.subject(key),
            format!("wanted {len} bytes at offset {offset}, got {got}"),
        )
        .code(ErrorCode::StorageShortRead)
        .temporary()
    }

    /// `ranges` with one GET from the start of the first to the end of the
    /// last, streamed: each range is cut from the body as it arrives and
    /// handed to `each` before more is read, so TCP flow control holds the
    /// server back rather than a buffer here growing to the whole span.
    fn stream_ranges(
        &self,
        key: &str,
        ranges: &[(u64, u64)],
        each: &mut dyn FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let (start, end) = (first.0, last.0 + last.1);
        let (op, path) = (self.op.clone(), key.to_string());
        let mut body = self.on_runtime(key, async move {
            Ok(Streamed {
                stream: op.reader(&path).await?.into_stream(start..end).await?,
                held: opendal::Buffer::new(),
                at: start,
            })
        })?;
        for &(offset, len) in ranges {
            let data;
            (body, data) = self.on_runtime(key, body.take(offset, len))?;
            if data.len() as u64 != len {
                return Err(self.short_read(key, offset, len, data.len()));
            }
            each(data)?;
        }
        Ok(())
    }

    /// Upload `data` in one PUT or, when larger than a part, in parts of
    /// exactly `part_size` (R2 rejects unequal parts), several at once.
    async fn upload(&self, key: &str, file: &Path, size: u64) -> std::result::Result<(), UploadError> {
        let mut f = std::fs::File::open(file).map_err(UploadError::Local)?;
        if size <= self.part_size as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).map_err(UploadError::Local)?;
            self.op.write(key, buf).await.map_err(UploadError::Remote)?;
            return Ok(());
        }
        let mut w = self
            .op
            .writer_with(key)
            .chunk(self.part_size)
            .concurrent(self.transfers.min(4))
            .await
            .map_err(UploadError::Remote)?;
        let result = async {
            loop {
                let mut buf = vec![0u8; self.part_size];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = f.read(&mut buf[filled..]).map_err(UploadError::Local)?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                w.write(buf).await.map_err(UploadError::Remote)?;
            }
            w.close().await.map_err(UploadError::Remote)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = w.abort().await;
        }
        result
    }
}

enum UploadError {
    Local(std::io::Error),
    Remote(opendal::Error),
}

/// A body being streamed by `stream_ranges`, moved into each task that reads
/// from it and handed back with the range read.
struct Streamed {
    stream: opendal::BufferStream,
    /// Received, not yet handed over; starts at offset `at` of the object.
    held: opendal::Buffer,
    at: u64,
}

impl Streamed {
    /// The `len` bytes at `offset` (at or after `at`), dropping those
    /// before it; fewer if the body ends first.
    async fn take(mut self, offset: u64, len: u64) -> opendal::Result<(Streamed, Vec<u8>)> {
        let mut skip = (offset - self.at) as usize;
        let mut data = Vec::with_capacity(len as usize);
        loop {
            let dropped = skip.min(self.held.len());
            self.held.split_to(dropped);
            skip -= dropped;
            let wanted = (len as usize - data.len()).min(self.held.len());
            for chunk in self.held.split_to(wanted) {
                data.extend_from_slice(&chunk);
            }
            if data.len() as u64 == len {
                break;
            }
            let next =
                std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut self.stream), cx));
            match next.await {
                Some(chunk) => self.held = chunk?,
                None => break,
            }
        }
        self.at = offset + data.len() as u64;
        Ok((self, data))
    }
}

/// The source chain of an error, joined, for classification and messages.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// What an operator can act on, in one line: the S3 error code and message
/// when the server sent one, else the root cause of a transport failure
/// ("Connection refused"); OpenDAL's request context only makes lines long.
fn short(e: &opendal::Error) -> String {
    let text = e.to_string();
    let line = if let Some(code) = field(&text, "code") {
        match field(&text, "message").filter(|m| !m.is_empty()) {
            Some(m) => format!("{code}: {m}"),
            None => code,
        }
    } else {
        let mut root = None;
        let mut cur = std::error::Error::source(e);
        while let Some(s) = cur {
            root = Some(s.to_string());
            cur = s.source();
        }
        root.unwrap_or_else(|| text.split(", context:").next().unwrap_or(&text).to_string())
    };
    let line = line.lines().next().unwrap_or_default().to_string();
    if line.len() > 300 {
        format!("{}…", &line[..line.floor_char_boundary(300)])
    } else {
        line
    }
}

/// `name: "value"` out of OpenDAL's debug rendering of an S3 error body.
fn field(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("{name}: \""))? + name.len() + 3;
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_string())
}

fn http_client(read_timeout: Duration) -> std::result::Result<reqwest::Client, reqwest::Error> {
    // ring rather than aws-lc: one C build less; the provider is process-wide.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // Per read, not per request: a 16 MiB upload on a slow link is fine,
        // a server that stops answering is not.
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

fn build_operator(t: &S3Target, o: &S3Options) -> opendal::Result<Operator> {
    let mut b = opendal::services::S3::default()
        .bucket(&t.bucket)
        .root(&format!("/{}", t.prefix))
        .region(&t.region)
        .endpoint(&t.endpoint_or_aws());
    if o.virtual_host_style.unwrap_or(t.endpoint.is_none()) {
        b = b.enable_virtual_host_style();
    }
    match o.checksum.as_deref().unwrap_or("crc32c") {
        "none" => {}
        algo => b = b.checksum_algorithm(algo),
    }
    if let Some(p) = &o.profile {
        b = b.profile(p);
    }
    if let (Some(ak), Some(sk)) = (&o.access_key_id, &o.secret_access_key) {
        b = b.access_key_id(ak).secret_access_key(sk);
        if let Some(token) = &o.session_token {
            b = b.session_token(token);
        }
    }
    if !o.instance_metadata {
        b = b.disable_ec2_metadata();
    }
    Operator::new(b)
}

/// Counts every request by kind before handing it to reqwest.
struct CountingTransport {
    inner: opendal_http_transport_reqwest::ReqwestTransport,
    counter: Arc<RequestCounter>,
}

impl HttpTransport for CountingTransport {
    async fn fetch(&self, req: http::Request<opendal::Buffer>) -> opendal::Result<http::Response<opendal::HttpBody>> {
        let c = &self.counter;
        let slot = match *req.method() {
            http::Method::GET if req.uri().query().is_some_and(|q| q.contains("list-type=")) => &c.list,
            http::Method::GET => &c.get,
            http::Method::HEAD => &c.head,
            http::Method::DELETE => &c.delete,
            _ => &c.put,
        };
        slot.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch(req).await
    }
}

impl S3Storage {
    /// The bucket and prefix, for messages.
    pub fn location(&self) -> String {
        self.target.display()
    }

    /// Where writers on this host stage files before uploading them: in
    /// the host's working directory for the repository.
    pub fn staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }

    /// The writer lock file of this host, in its working directory for the
    /// repository. Writers on other hosts are not excluded, and need not
    /// be: every object they write is named by its content (docs/FORMAT.md,
    /// "Concurrent writers").
    pub fn lock_file(&self) -> PathBuf {
        self.local_dir.join("lock")
    }

    /// The requests this backend sends, counted on the wire.
    pub fn counter(&self) -> Arc<RequestCounter> {
        Arc::clone(&self.counter)
    }

    /// How many transfers callers should run at once.
    pub fn transfers(&self) -> usize {
        self.transfers
    }
}

impl Storage for S3Storage {
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        let (op, path) = (self.op.clone(), key.to_string());
        self.on_runtime(key, async move { Ok(op.read(&path).await?.to_vec()) })
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (op, path, parts) = (self.op.clone(), key.to_string(), self.transfers);
        let data = self.on_runtime(key, async move {
            let reader = if len > READ_PART {
                op.reader_with(&path)
                    .chunk(READ_PART as usize)
                    .concurrent(parts)
                    .await?
            } else {
                op.reader(&path).await?
            };
            let mut data = Vec::with_capacity(len as usize);
            reader.read_into(&mut data, offset..offset + len).await?;
            Ok(data)
        })?;
        if data.len() as u64 != len {
            return Err(self.short_read(key, offset, len, data.len()));
        }
        Ok(data)
    }

    /// One streamed GET per run of ranges less than `MERGE_GAP` apart.
    fn read_ranges(&self, key: &str, ranges: &[(u64, u64)], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        assert!(
            ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
            "read_ranges wants sorted ranges that do not overlap: {key} {ranges:?}"
        );
        let mut rest = ranges;
        while !rest.is_empty() {
            let run = 1 + rest
                .windows(2)
                .take_while(|w| w[1].0 - (w[0].0 + w[0].1) <= MERGE_GAP)
                .count();
            self.stream_ranges(key, &rest[..run], each)?;
            rest = &rest[run..];
        }
        Ok(())
    }

    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        crate::crashpoint::step("s3: put").map_err(|e| Error::new(ErrorKind::Io, self.subject(key), e.to_string()))?;
        self.block_on(key, self.op.write(key, data.to_vec()))?;
        crate::crashpoint::step("s3: put done")
            .map_err(|e| Error::new(ErrorKind::Io, self.subject(key), e.to_string()))?;
        Ok(())
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<bool> {
        match self
            .rt
            .block_on(self.op.write_with(key, data.to_vec()).if_not_exists(true).into_future())
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Upload, then HEAD the object: it is only referenced (by an index
    /// file) once the store reports exactly the bytes sent. The checksum
    /// header (CRC32C by default) has the server reject a body damaged in
    /// transit.
    fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        crate::crashpoint::step("s3: upload")
            .map_err(|e| Error::new(ErrorKind::Io, self.subject(key), e.to_string()))?;
        let size = std::fs::metadata(file).at(file)?.len();
        self.rt.block_on(self.upload(key, file, size)).map_err(|e| match e {
            UploadError::Local(io) => Error::io(file, io),
            UploadError::Remote(e) => self.error(key, e),
        })?;
        match self.size(key)? {
            Some(n) if n == size => {}
            got => {
                return Err(Error::busy(
                    self.subject(key),
                    format!("upload not confirmed: the store reports {got:?} bytes, {size} were sent"),
                )
                .code(ErrorCode::StorageUploadUnconfirmed)
                .temporary());
            }
        }
        std::fs::remove_file(file).at(file)?;
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let entries = match self.rt.block_on(self.op.list_with(&dir).recursive(true).into_future()) {
            Ok(v) => v,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&dir, e)),
        };
        let mut out: Vec<(String, u64)> = entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| {
                (
                    e.path().trim_start_matches('/').to_string(),
                    e.metadata().content_length(),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.rt.block_on(self.op.stat(key)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        crate::crashpoint::step("s3: delete")
            .map_err(|e| Error::new(ErrorKind::Io, self.subject(key), e.to_string()))?;
        self.block_on(key, self.op.delete(key))
    }
}
