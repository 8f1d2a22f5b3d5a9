//! Progress on stderr: a bar with bytes, rate and ETA on a terminal; a plain
//! line every few seconds otherwise (logs, CI, cron mail); nothing with -q.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use lifeboat::progress::Progress;

pub struct CliProgress {
    mode: Mode,
    state: Mutex<Phase>,
    done: AtomicU64,
}

enum Mode {
    Quiet,
    Bar,
    Lines,
}

struct Phase {
    what: String,
    total: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl CliProgress {
    pub fn new(quiet: bool) -> CliProgress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        CliProgress {
            mode,
            state: Mutex::new(Phase {
                what: String::new(),
                total: 0,
                started: Instant::now(),
                last_line: Instant::now(),
                bar: None,
            }),
            done: AtomicU64::new(0),
        }
    }
}

fn rate(bytes: u64, since: Instant) -> String {
    let s = since.elapsed().as_secs_f64().max(0.001);
    format!("{}/s", super::output::bytes((bytes as f64 / s) as u64))
}

impl Progress for CliProgress {
    fn begin(&self, what: &str, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        let mut st = self.state.lock().expect("progress");
        st.what = what.to_string();
        st.total = total;
        st.started = Instant::now();
        st.last_line = Instant::now();
        if let Mode::Bar = self.mode {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            st.bar = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                if let Some(b) = &self.state.lock().expect("progress").bar {
                    b.set_position(done);
                }
            }
            Mode::Lines => {
                let mut st = self.state.lock().expect("progress");
                if st.last_line.elapsed() >= LINE_EVERY {
                    st.last_line = Instant::now();
                    let pct = (done * 100)
                        .checked_div(st.total)
                        .map(|p| format!(" ({p}%)"))
                        .unwrap_or_default();
                    eprintln!(
                        "{}: {} of {}{pct}, {}",
                        st.what,
                        super::output::bytes(done),
                        super::output::bytes(st.total),
                        rate(done, st.started)
                    );
                }
            }
        }
    }

    fn end(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let mut st = self.state.lock().expect("progress");
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                if let Some(b) = st.bar.take() {
                    b.finish_and_clear();
                }
                eprintln!(
                    "{}: {} in {:.1}s",
                    st.what,
                    super::output::bytes(done),
                    st.started.elapsed().as_secs_f64()
                );
            }
            Mode::Lines => {
                eprintln!(
                    "{}: {} in {:.1}s, {}",
                    st.what,
                    super::output::bytes(done),
                    st.started.elapsed().as_secs_f64(),
                    rate(done, st.started)
                );
            }
        }
    }

    fn warn(&self, message: &str) {
        if !matches!(self.mode, Mode::Quiet) {
            eprintln!("lifeboat: warning: {message}");
        }
        tracing::info!(event = "warning", "{message}");
    }
}
