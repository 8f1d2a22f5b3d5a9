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
    /// Counting items, not bytes.
    items: bool,
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
                items: false,
                total: 0,
                started: Instant::now(),
                last_line: Instant::now(),
                bar: None,
            }),
            done: AtomicU64::new(0),
        }
    }
}

impl Phase {
    fn amount(&self, n: u64) -> String {
        if self.items {
            n.to_string()
        } else {
            super::output::bytes(n)
        }
    }

    fn rate(&self, n: u64) -> String {
        let per_s = (n as f64 / self.started.elapsed().as_secs_f64().max(0.001)) as u64;
        format!("{}/s", self.amount(per_s))
    }
}

impl CliProgress {
    fn start(&self, what: &str, total: u64, items: bool) {
        self.done.store(0, Ordering::Relaxed);
        let mut st = self.state.lock().expect("progress");
        st.what = what.to_string();
        st.items = items;
        st.total = total;
        st.started = Instant::now();
        st.last_line = Instant::now();
        if let Mode::Bar = self.mode {
            let bar = ProgressBar::new(total);
            let template = if items {
                "{msg:24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}"
            } else {
                "{msg:24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("template")
                    .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            st.bar = Some(bar);
        }
    }
}

impl Progress for CliProgress {
    fn begin(&self, what: &str, total: u64) {
        self.start(what, total, false);
    }

    fn begin_items(&self, what: &str, total: u64) {
        self.start(what, total, true);
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
                        st.amount(done),
                        st.amount(st.total),
                        st.rate(done)
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
                    st.amount(done),
                    st.started.elapsed().as_secs_f64()
                );
            }
            Mode::Lines => {
                eprintln!(
                    "{}: {} in {:.1}s, {}",
                    st.what,
                    st.amount(done),
                    st.started.elapsed().as_secs_f64(),
                    st.rate(done)
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
