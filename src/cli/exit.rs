//! The one place library errors become exit codes (sysexits.h) and messages.

use lifeboat::oplog::redact;
use lifeboat::{Error, ErrorKind};

pub const USAGE: i32 = 64;
pub const DATAERR: i32 = 65;
pub const NOINPUT: i32 = 66;
pub const CANTCREAT: i32 = 73;
pub const IOERR: i32 = 74;
pub const TEMPFAIL: i32 = 75;
pub const CONFIG: i32 = 78;

pub fn code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Usage => USAGE,
        ErrorKind::BadData => DATAERR,
        ErrorKind::NoInput => NOINPUT,
        ErrorKind::CantCreate => CANTCREAT,
        ErrorKind::Io => IOERR,
        ErrorKind::Busy => TEMPFAIL,
        ErrorKind::Config => CONFIG,
    }
}

/// Print the error (one line, or one JSON object on stdout) and return its code.
pub fn report(e: &Error, json: bool) -> i32 {
    let code = code(e.kind);
    // An error may quote a URL or an argument holding a secret (an endpoint
    // with credentials in it): shown redacted, as the operations log keeps it.
    let message = redact(&e.to_string());
    tracing::debug!(event = e.code.event(), kind = ?e.kind, "{message}");
    if json {
        let v = serde_json::json!({
            "error": {
                "message": message,
                "kind": e.kind,
                "event": e.code.event(),
                "exit_code": code,
                "subject": redact(&e.subject),
                "fix": redact(&e.fix),
            }
        });
        println!("{v}");
    } else {
        eprintln!("lifeboat: error: {message} (event={})", e.code);
    }
    code
}

/// Exit code for a completed check that found damage.
pub fn damaged() -> i32 {
    DATAERR
}
