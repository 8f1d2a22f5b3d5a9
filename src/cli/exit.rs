//! The one place library errors become messages (one line, or JSON); the
//! exit code of each kind is [`ErrorKind::exit_code`].

use lifeboat::oplog::redact;
use lifeboat::{Error, ErrorKind};

pub const USAGE: i32 = ErrorKind::Usage.exit_code();
pub const DATAERR: i32 = ErrorKind::BadData.exit_code();
pub const TEMPFAIL: i32 = ErrorKind::Busy.exit_code();

pub fn code(kind: ErrorKind) -> i32 {
    kind.exit_code()
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

/// Print the error as one line on stderr whatever `--json` says, and
/// return its code: for a failure after the command's result was printed
/// (a hook with `policy = "fail"`), so stdout stays one JSON value.
pub fn report_line(e: &Error) -> i32 {
    let message = redact(&e.to_string());
    eprintln!("lifeboat: error: {message} (event={})", e.code);
    let _ = LINE_REPORTED.set(e.to_string());
    code(e.kind)
}

static LINE_REPORTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The first error [`report_line`] printed: why a command that returned an
/// exit code rather than an error did not exit 0.
pub fn line_reported() -> Option<&'static str> {
    LINE_REPORTED.get().map(String::as_str)
}

/// Exit code for a completed check that found damage.
pub fn damaged() -> i32 {
    DATAERR
}
