//! A fault-injecting HTTP/1.1 proxy for the S3 tests: it sits between
//! `lifeboat` and the s3s-fs server and, at a chosen rate, makes requests
//! fail the ways object stores and networks do. Plain std threads, no
//! dependencies.
//!
//! Each client connection is served in a loop (keep-alive); each request is
//! forwarded on a fresh upstream connection with `Connection: close`, the
//! reply read to EOF and relayed with an exact `Content-Length`. Signatures
//! stay valid because the request, `Host` included, is forwarded unchanged.
//!
//! Whether a request is faulted is drawn from a seeded xorshift generator,
//! and the kinds are dealt in turn, so any dozen faults include every kind.
//! Which request gets which fault still depends on thread timing (transfers
//! run in parallel), so tests assert on the counts of faults injected, never
//! on their order.
//! Tests can also script faults for particular requests ([`FaultProxy::rule`])
//! and hold matching requests until released ([`FaultProxy::hold`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the proxy can do to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Close the connection without forwarding or answering.
    Drop,
    /// Answer 500 InternalError without forwarding.
    InternalError,
    /// Answer 503 SlowDown / ServiceUnavailable without forwarding.
    Unavailable,
    /// Answer 429 SlowDown without forwarding.
    TooManyRequests,
    /// Wait 200–500 ms, then forward normally.
    Latency,
    /// Forward; relay the headers with the full `Content-Length` but only
    /// half the body, then close. (A reply without a body is dropped
    /// instead, and counted as [`Fault::LostReply`].)
    Truncate,
    /// Forward (the server acts on the request) but close without
    /// answering: the client never learns that its write happened.
    LostReply,
    /// Close the connection right after the request's headers, without
    /// reading its body, as a server rejecting a request early does: the
    /// client may still be sending when the connection goes.
    Reset,
    /// Answer 200 OK whose body is an S3 `<Error>`, without forwarding: how
    /// S3 reports a CompleteMultipartUpload that failed after it began
    /// answering. Only by rule.
    ErrorIn200,
    /// Forward, then relay the answer with one byte of its body flipped,
    /// length unchanged: damage in transit that only a content check
    /// catches. Only by rule.
    Corrupt,
    /// Read the request, then never answer (for two minutes, or until the
    /// client hangs up): a server that stops talking. Only by rule, never
    /// drawn at random (it would make every fault test slow).
    Stall,
}

pub const ALL_FAULTS: [Fault; 8] = [
    Fault::Drop,
    Fault::InternalError,
    Fault::Unavailable,
    Fault::TooManyRequests,
    Fault::Latency,
    Fault::Truncate,
    Fault::LostReply,
    Fault::Reset,
];

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Request target: path and query, e.g. `/bucket/prefix/data/ab/ab…`.
    pub target: String,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

impl Seen {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
    /// ListObjects (a GET on the bucket with `list-type=`).
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.query().contains("list-type=")
    }
}

/// A scripted fault: the next `times` requests with this method whose
/// target contains `contains` get `fault`, whatever the random rate says.
struct Rule {
    method: String,
    contains: String,
    fault: Fault,
    times: usize,
}

struct Hold {
    method: String,
    contains: String,
}

#[derive(Default)]
struct HoldState {
    rule: Option<Hold>,
    /// Requests waiting now.
    waiting: usize,
    /// Bumped by every release; a held request waits for a change.
    generation: u64,
    /// What held requests do when released: forward (one at a time) or drop.
    forward: bool,
}

struct State {
    upstream: String,
    /// Faults per thousand requests.
    permille: AtomicU64,
    rng: Mutex<u64>,
    /// Random faults take the kinds in turn (from a seeded start), so a
    /// run with a dozen faults has had every kind.
    turn: AtomicU64,
    rules: Mutex<Vec<Rule>>,
    counts: Mutex<BTreeMap<Fault, u64>>,
    seen: Mutex<Vec<Seen>>,
    hold: Mutex<HoldState>,
    hold_cv: Condvar,
    /// Released held requests are forwarded one at a time.
    serial: Mutex<()>,
    stop: AtomicBool,
}

pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub port: u16,
    state: Arc<State>,
}

impl FaultProxy {
    /// Start a proxy to `upstream` (`http://host:port`) injecting faults into
    /// `percent` % of requests, drawn from a generator seeded with `seed`.
    pub fn start(upstream: &str, percent: u32, seed: u64) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("the proxy forwards to a plain http:// endpoint")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            upstream,
            permille: AtomicU64::new(percent as u64 * 10),
            // xorshift must not start at 0.
            rng: Mutex::new(seed ^ 0x9E37_79B9_7F4A_7C15 | 1),
            turn: AtomicU64::new(seed % ALL_FAULTS.len() as u64),
            rules: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Vec::new()),
            hold: Mutex::new(HoldState::default()),
            hold_cv: Condvar::new(),
            serial: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(&st, conn));
            }
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            state,
        }
    }

    /// Change the random fault rate (percent of requests).
    pub fn set_percent(&self, percent: u32) {
        self.state.permille.store(percent as u64 * 10, Ordering::SeqCst);
    }

    /// The next `times` requests `method` whose target contains `contains`
    /// get `fault`.
    pub fn rule(&self, method: &str, contains: &str, fault: Fault, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            method: method.to_string(),
            contains: contains.to_string(),
            fault,
            times,
        });
    }

    /// Hold every request `method` whose target contains `contains` until
    /// [`FaultProxy::release`].
    pub fn hold(&self, method: &str, contains: &str) {
        let mut h = self.state.hold.lock().unwrap();
        h.rule = Some(Hold {
            method: method.to_string(),
            contains: contains.to_string(),
        });
    }

    /// Requests being held now.
    pub fn held(&self) -> usize {
        self.state.hold.lock().unwrap().waiting
    }

    /// Stop holding. Requests held so far are forwarded one at a time
    /// (`forward`), or their connections are dropped unanswered and the
    /// requests never reach the server.
    pub fn release(&self, forward: bool) {
        let mut h = self.state.hold.lock().unwrap();
        h.rule = None;
        h.forward = forward;
        h.generation += 1;
        self.state.hold_cv.notify_all();
    }

    /// Faults injected so far, by kind.
    pub fn faults(&self) -> BTreeMap<Fault, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    pub fn total_faults(&self) -> u64 {
        self.faults().values().sum()
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Forget the requests seen so far (fault counts are kept).
    pub fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.release(false);
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl State {
    /// The fault for this request: a scripted rule first, else the dice;
    /// with a random number for the fault's details. One draw per request
    /// (two when faulted), so for a given seed the n-th request's fate does
    /// not depend on how threads interleave.
    fn decide(&self, method: &str, target: &str) -> (Option<Fault>, u64) {
        {
            let mut rules = self.rules.lock().unwrap();
            if let Some(i) = rules
                .iter()
                .position(|r| r.times > 0 && r.method == method && target.contains(&r.contains))
            {
                rules[i].times -= 1;
                let f = rules[i].fault;
                if rules[i].times == 0 {
                    rules.remove(i);
                }
                return (Some(f), 0);
            }
        }
        let permille = self.permille.load(Ordering::SeqCst);
        let mut rng = self.rng.lock().unwrap();
        if permille == 0 || xorshift(&mut rng) % 1000 >= permille {
            return (None, 0);
        }
        let turn = self.turn.fetch_add(1, Ordering::SeqCst);
        (
            Some(ALL_FAULTS[(turn % ALL_FAULTS.len() as u64) as usize]),
            xorshift(&mut rng),
        )
    }

    fn count(&self, f: Fault) {
        *self.counts.lock().unwrap().entry(f).or_default() += 1;
    }

    /// Wait while this request is held; `Some(forward)` if it was.
    fn wait_if_held(&self, method: &str, target: &str) -> Option<bool> {
        let mut h = self.hold.lock().unwrap();
        let matches = h
            .rule
            .as_ref()
            .is_some_and(|r| r.method == method && target.contains(&r.contains));
        if !matches {
            return None;
        }
        let generation = h.generation;
        h.waiting += 1;
        while h.generation == generation {
            h = self.hold_cv.wait(h).unwrap();
        }
        h.waiting -= 1;
        Some(h.forward)
    }
}

/// xorshift64*: small, seedable, good enough to pick requests.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

struct Request {
    method: String,
    target: String,
    /// Header lines as received, minus hop-by-hop ones.
    headers: Vec<(String, String)>,
    /// The body exactly as framed by the client (chunked stays chunked).
    body: Vec<u8>,
    length: usize,
    chunked: bool,
    expect_continue: bool,
}

struct Response {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn serve(st: &State, client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(300)));
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut out = client;
    loop {
        let Ok(Some(mut req)) = read_head(&mut reader) else {
            return;
        };
        let (mut fault, n) = st.decide(&req.method, &req.target);
        if fault == Some(Fault::Reset) {
            st.count(Fault::Reset);
            st.seen.lock().unwrap().push(Seen {
                method: req.method.clone(),
                target: req.target.clone(),
                fault,
            });
            // Closing with the body unread makes the kernel reset the
            // connection.
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        if read_body(&mut reader, &mut out, &mut req).is_err() {
            return;
        }
        let held = st.wait_if_held(&req.method, &req.target);
        match held {
            Some(false) => fault = Some(Fault::Drop),
            Some(true) => fault = None,
            None => {}
        }
        let index = {
            let mut seen = st.seen.lock().unwrap();
            seen.push(Seen {
                method: req.method.clone(),
                target: req.target.clone(),
                fault,
            });
            seen.len() - 1
        };
        let set_fault = |f: Fault| {
            st.seen.lock().unwrap()[index].fault = Some(f);
        };
        let head = req.method == "HEAD";
        match fault {
            Some(Fault::Drop) => {
                if held.is_none() {
                    st.count(Fault::Drop);
                }
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Some(f @ (Fault::InternalError | Fault::Unavailable | Fault::TooManyRequests)) => {
                st.count(f);
                let (status, reason, code, message) = match f {
                    Fault::InternalError => (
                        500,
                        "Internal Server Error",
                        "InternalError",
                        "We encountered an internal error. Please try again.",
                    ),
                    Fault::Unavailable if n % 2 == 0 => (
                        503,
                        "Service Unavailable",
                        "SlowDown",
                        "Please reduce your request rate.",
                    ),
                    Fault::Unavailable => (
                        503,
                        "Service Unavailable",
                        "ServiceUnavailable",
                        "Service is unable to handle request.",
                    ),
                    _ => (429, "Too Many Requests", "SlowDown", "Please reduce your request rate."),
                };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>faultproxy-{n:x}</RequestId></Error>"
                );
                let mut msg = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: faultproxy-{n:x}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                if !head {
                    msg.extend_from_slice(body.as_bytes());
                }
                if out.write_all(&msg).and_then(|()| out.flush()).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Latency) => {
                st.count(Fault::Latency);
                std::thread::sleep(Duration::from_millis(200 + n % 301));
            }
            Some(Fault::ErrorIn200) => {
                st.count(Fault::ErrorIn200);
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>faultproxy-{n:x}</RequestId></Error>"
                );
                let msg = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if out.write_all(msg.as_bytes()).and_then(|()| out.flush()).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Stall) => {
                st.count(Fault::Stall);
                // Until the client gives up: its next read sees EOF or a
                // reset, or two minutes pass.
                let _ = out.set_read_timeout(Some(Duration::from_secs(120)));
                let mut buf = [0u8; 1];
                let _ = reader.read(&mut buf);
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            _ => {}
        }
        let resp = {
            let _one_at_a_time = held.map(|_| st.serial.lock().unwrap());
            forward(&st.upstream, &req)
        };
        let Ok(mut resp) = resp else {
            // The server itself failed us: say so as a gateway would.
            let _ = out.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        };
        match fault {
            Some(Fault::LostReply) => {
                st.count(Fault::LostReply);
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Truncate) if resp.body.len() < 2 => {
                st.count(Fault::LostReply);
                set_fault(Fault::LostReply);
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Corrupt) if !resp.body.is_empty() => {
                st.count(Fault::Corrupt);
                let mid = resp.body.len() / 2;
                resp.body[mid] ^= 0xff;
            }
            Some(Fault::Truncate) => {
                st.count(Fault::Truncate);
                let mut msg = response_head(&resp, head);
                msg.extend_from_slice(&resp.body[..resp.body.len() / 2]);
                let _ = out.write_all(&msg);
                let _ = out.flush();
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            _ => {}
        }
        let mut msg = response_head(&resp, head);
        if !head {
            msg.extend_from_slice(&resp.body);
        }
        if out.write_all(&msg).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "expect",
];

/// Status line and headers with an exact `Content-Length` for the body (for
/// HEAD, the server's, which describes the object).
fn response_head(resp: &Response, head: bool) -> Vec<u8> {
    let mut s = format!("{}\r\n", resp.status_line);
    let mut server_length = None;
    for (k, v) in &resp.headers {
        if k.eq_ignore_ascii_case("content-length") {
            server_length = Some(v.clone());
        }
        if HOP_BY_HOP.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            continue;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    let no_body = resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status);
    if head {
        if let Some(n) = server_length {
            s.push_str(&format!("Content-Length: {n}\r\n"));
        }
    } else if !no_body {
        s.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Read a request's line and headers; `None` when the client closed the
/// connection between requests.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    // Tolerate stray blank lines between requests.
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::other(format!("bad request line {line:?}")));
    };
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
        length: 0,
        chunked: false,
        expect_continue: false,
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else { continue };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            req.length = v.parse().map_err(std::io::Error::other)?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            req.chunked = true;
        } else if k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue") {
            req.expect_continue = true;
        }
        let keep = ["connection", "keep-alive", "proxy-connection", "expect"]
            .iter()
            .all(|h| !k.eq_ignore_ascii_case(h));
        if keep {
            req.headers.push((k, v));
        }
    }
    Ok(Some(req))
}

/// Read the body the head announced, exactly as framed.
fn read_body(r: &mut BufReader<TcpStream>, out: &mut TcpStream, req: &mut Request) -> std::io::Result<()> {
    if req.expect_continue {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if req.chunked {
        read_chunked(r, &mut req.body, true)
    } else {
        req.body.resize(req.length, 0);
        r.read_exact(&mut req.body)
    }
}

/// Read a chunked body from `r`. With `raw`, `out` gets the bytes as framed
/// (size lines, data, trailers); otherwise only the data.
fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>, raw: bool) -> std::io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if raw {
            out.extend_from_slice(line.as_bytes());
        }
        let size_text = line.trim().split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_text, 16).map_err(std::io::Error::other)?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if raw {
                    out.extend_from_slice(line.as_bytes());
                }
                if line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = out.len();
        out.resize(start + size, 0);
        r.read_exact(&mut out[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if raw {
            out.extend_from_slice(&crlf);
        }
    }
}

/// Send `req` upstream on a new connection and read the whole reply.
fn forward(upstream: &str, req: &Request) -> std::io::Result<Response> {
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let _ = up.set_nodelay(true);
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    parse_response(&raw, req.method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("upstream reply has no header end"))?;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    let (mut length, mut chunked) = (None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
        headers.push((k, v));
    }
    let rest = &raw[end + 4..];
    let no_body = head || status == 204 || status == 304 || (100..200).contains(&status);
    let body = if no_body {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        read_chunked(&mut std::io::Cursor::new(rest), &mut body, false)?;
        body
    } else if let Some(n) = length {
        rest[..n.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status_line,
        status,
        headers,
        body,
    })
}
