//! `lifeboat status`: one screen saying how current the backups are. The
//! stored part comes from the repository ([`lifeboat::status::collect`]);
//! the live part (jobs, next runs, the replicators' lag) from the running
//! agent over its socket ([`super::agent_socket`]), when one answers.

use std::path::PathBuf;

use serde::Serialize;

use lifeboat::Result;
use lifeboat::status::{RepoStatus, SourceStatus};

use super::Ctx;
use super::agent_socket::{self, AgentStatus, Answer, DatabaseState, JobState};
use super::exit;
use super::output::{bytes, print_json, when};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
What it shows, per repository:
  sources      each configured source (without any, every source the repository holds):
               its last snapshot (id, kind, age) and, for a replicated database, the newest
               commit the repository can restore (txid, age); AGE is that of the newer of the two
  size         objects and bytes in the repository (one listing; nothing is read)
  last drill   the newest `lifeboat drill` record and whether every check passed
  agent        whether `lifeboat agent` answers on its socket; if it does, its jobs with their
               last run, result and next run, and each replicator's live lag

When the socket does not answer, the agent's agent-status.json beside it is used if that agent
still runs. Without a running agent everything comes from the repository, and the jobs are not
shown. A socket left by an agent that died is ignored (and left for the next agent to replace).

Monitoring: with --max-age the command is a check. It exits 65 when a source was never backed
up or its newest point is older than the age given, when the last drill failed, or when an agent
job's last run failed; each reason is one line under `problems` (--json: \"problems\", \"ok\").
Exit 66 when there is no repository. Example, for a service backed up daily:
  lifeboat status --max-age 26h || alert \"backups are late\"")]
pub struct Args {
    /// Check mode: exit 65 when a source's newest point is older than this (e.g. 26h, 2d),
    /// was never taken, or the last drill or an agent job failed.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// The agent's socket. Default: <state dir>/agent.sock, the agent's state dir being
    /// $XDG_STATE_HOME/lifeboat/agent (~/.local/state/lifeboat/agent).
    #[arg(long, value_name = "PATH", env = "LIFEBOAT_AGENT_SOCKET")]
    pub socket: Option<PathBuf>,
}

/// The agent as `status` found it.
#[derive(Debug, Serialize)]
struct AgentOut {
    /// An agent answered.
    running: bool,
    /// The socket asked.
    socket: String,
    /// Where its state came from: `socket`, or `status file` (the agent's
    /// agent-status.json) when the socket did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'static str>,
    /// Why an agent that seems to be there did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<String>,
}

/// A source, with the agent's live view of its replication when it has one.
#[derive(Debug, Serialize)]
struct SourceOut<'a> {
    #[serde(flatten)]
    stored: &'a SourceStatus,
    live_replication: Option<&'a DatabaseState>,
}

/// `lifeboat status --json`.
#[derive(Debug, Serialize)]
struct StatusOut<'a> {
    repository: RepositoryOut<'a>,
    checked_at: &'a str,
    agent: AgentOut,
    sources: Vec<SourceOut<'a>>,
    last_drill: &'a Option<lifeboat::status::DrillSummary>,
    /// The agent's jobs; empty when no agent answers.
    jobs: &'a [JobState],
    problems: &'a [String],
    /// No problem.
    ok: bool,
}

#[derive(Debug, Serialize)]
struct RepositoryOut<'a> {
    location: &'a str,
    objects: u64,
    bytes: u64,
    snapshots: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let max_age = match &args.max_age {
        Some(v) => Some(super::flag_value("--max-age", v, parse_age)?),
        None => None,
    };
    // Where the agent of this configuration keeps its socket.
    let state_dir = ctx.config()?.map(|c| super::agent::state_dir(ctx, c));
    let socket = agent_socket::socket_path(ctx.dirs(), state_dir.as_deref(), args.socket.as_deref());
    let (answer, via) = match agent_socket::query(&socket, agent_socket::CLIENT_TIMEOUT) {
        // An agent that serves no socket still keeps its status file.
        Answer::NotRunning => match agent_socket::read_status_file(&socket) {
            Some(st) => (Answer::Running(st), "status file"),
            None => (Answer::NotRunning, ""),
        },
        a => (a, "socket"),
    };
    let repo = ctx.open_repo()?;
    let configured = ctx
        .config()?
        .map(|c| c.sources(lifeboat::repo::manifest::SnapshotKind::Full))
        // A config that names no source (only a repository, say) shows
        // what the repository holds.
        .filter(|sources| !sources.is_empty());
    let st = lifeboat::status::collect(&repo, configured.as_deref(), jiff::Timestamp::now())?;

    let live = match &answer {
        Answer::Running(a) => Some(a),
        _ => None,
    };
    let mut problems = lifeboat::status::problems(&st, max_age);
    if let Some(a) = live {
        problems.extend(agent_problems(a));
    }
    let mut agent = agent_out(&socket, &answer);
    agent.via = agent.running.then_some(via);
    let out = StatusOut {
        repository: RepositoryOut {
            location: &st.location,
            objects: st.objects.total.objects,
            bytes: st.objects.total.bytes,
            snapshots: st.snapshots,
        },
        checked_at: &st.checked_at,
        agent,
        sources: st
            .sources
            .iter()
            .map(|s| SourceOut {
                stored: s,
                live_replication: live.and_then(|a| a.replication.databases.iter().find(|r| r.name == s.name)),
            })
            .collect(),
        last_drill: &st.last_drill,
        jobs: live.map(|a| a.jobs.as_slice()).unwrap_or_default(),
        problems: &problems,
        ok: problems.is_empty(),
    };
    if ctx.json {
        print_json(&out);
    } else {
        print_text(&st, &out);
    }
    Ok(if max_age.is_some() && !problems.is_empty() {
        exit::DATAERR
    } else {
        0
    })
}

/// An age as monitoring states it: whole days (`2d`, 24 hours each) or
/// anything `parse_duration` takes (`26h`, `90m`).
fn parse_age(what: &str, v: &str) -> Result<std::time::Duration> {
    match v.trim().strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        Some(days) if days > 0 => Ok(std::time::Duration::from_secs(days * 86_400)),
        _ => lifeboat::duration::parse_duration(what, v).map_err(|e| e.fix("write it like 26h, 90m or 2d")),
    }
}

fn agent_out(socket: &std::path::Path, answer: &Answer) -> AgentOut {
    let mut out = AgentOut {
        running: false,
        socket: socket.display().to_string(),
        via: None,
        error: None,
        pid: None,
        started: None,
        config: None,
    };
    match answer {
        Answer::Running(a) => {
            out.running = true;
            out.pid = Some(a.pid);
            out.started = Some(a.started.clone());
            out.config = a.config.clone();
        }
        Answer::Unanswered(why) => out.error = Some(why.clone()),
        Answer::NotRunning => {}
    }
    out
}

/// What the agent knows went wrong: a job whose last run failed, gaps in
/// a replicated stream, a replicator that is not running.
fn agent_problems(a: &AgentStatus) -> Vec<String> {
    let mut out = Vec::new();
    for j in &a.jobs {
        if let Some(code) = j.last_exit_code.filter(|c| *c != 0) {
            out.push(format!(
                "job {}: last run ({}) failed, exit {code}; `lifeboat log` has its record",
                j.name,
                j.last_start.as_deref().unwrap_or("-"),
            ));
        }
    }
    let r = &a.replication;
    for d in r.databases.iter().filter(|d| d.gaps > 0) {
        out.push(format!(
            "replication of {}: {} gap(s) in the stream since the agent started",
            d.name, d.gaps
        ));
    }
    if !r.running && !r.databases.is_empty() {
        out.push("replication: the agent's replicator is not running".into());
    }
    out
}

/// "3h 12m" for an age in seconds; "in the future" for a negative one
/// (a clock that disagrees with the repository's).
pub fn human_age(secs: i64) -> String {
    if secs < 0 {
        return "in the future".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Seconds from `t` to now.
fn age_of(t: jiff::Timestamp) -> i64 {
    jiff::Timestamp::now().duration_since(t).as_secs()
}

fn ago(secs: Option<i64>) -> String {
    secs.map(|s| format!("{} ago", human_age(s)))
        .unwrap_or_else(|| "-".into())
}

/// Print rows as columns two spaces apart, each as wide as its widest cell.
fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

fn print_text(st: &RepoStatus, out: &StatusOut) {
    println!("repository  {}", st.location);
    println!(
        "size        {} in {} objects, {} snapshots",
        bytes(st.objects.total.bytes),
        st.objects.total.objects,
        st.snapshots
    );
    let a = &out.agent;
    if a.running {
        println!(
            "agent       running, pid {}, since {}",
            a.pid.unwrap_or(0),
            when(a.started.as_deref().unwrap_or("-"))
        );
    } else if let Some(e) = &a.error {
        println!("agent       not answering ({e}); shown from the repository");
    } else {
        println!("agent       not running; shown from the repository");
    }

    println!();
    let mut rows = vec![vec![
        "SOURCE".to_string(),
        "KIND".into(),
        "LAST SNAPSHOT".into(),
        "REPLICATED".into(),
        "LAG".into(),
        "AGE".into(),
    ]];
    if a.running {
        rows[0].push("REPLICATOR".into());
    }
    for s in &out.sources {
        let stored = s.stored;
        let snap = match &stored.last_snapshot {
            Some(l) => format!("{} {} {}", l.id.short(), l.kind, when(&l.time)),
            None => "never".into(),
        };
        // What the repository holds decides; the agent adds what its
        // replicator last said, and when.
        let (replicated, lag) = match (&stored.replication, s.live_replication) {
            (Some(r), _) => (format!("txid {}", r.txid), ago(r.lag_seconds)),
            (None, Some(live)) => (
                live.txid.map(|t| format!("txid {t}")).unwrap_or_else(|| "-".into()),
                "-".into(),
            ),
            (None, None) => ("-".into(), "-".into()),
        };
        let replicator = s.live_replication.map(|live| {
            let event = live.last_event.as_deref().unwrap_or("-");
            let event = event.strip_prefix("replicate.").unwrap_or(event);
            let at = live
                .last_event_at
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(age_of);
            format!("{event} {}", ago(at)).trim_end_matches(" -").to_string()
        });
        let mut row = vec![
            stored.name.clone(),
            stored.kind.clone(),
            snap,
            replicated,
            lag,
            stored
                .age_seconds
                .map(|a| format!("{} ago", human_age(a)))
                .unwrap_or_else(|| "never".into()),
        ];
        if a.running {
            row.push(replicator.unwrap_or_else(|| "-".into()));
        }
        rows.push(row);
    }
    if out.sources.is_empty() {
        println!("no sources: nothing configured and nothing in the repository yet");
    } else {
        table(&rows);
    }

    println!();
    match &st.last_drill {
        None => println!("last drill  none recorded (run `lifeboat drill`)"),
        Some(d) if d.passed => println!(
            "last drill  passed, {} ({} ago)",
            when(&d.time),
            human_age(d.age_seconds)
        ),
        Some(d) => println!(
            "last drill  FAILED, {} ({} ago): {}",
            when(&d.time),
            human_age(d.age_seconds),
            d.failed_checks.join(", ")
        ),
    }

    if a.running {
        println!();
        if out.jobs.is_empty() {
            println!("jobs        none");
        } else {
            let mut rows = vec![vec![
                "JOB".to_string(),
                "SCHEDULE".into(),
                "LAST RUN".into(),
                "RESULT".into(),
                "NEXT RUN".into(),
            ]];
            for j in out.jobs {
                let result = match (j.state.as_str(), j.last_exit_code) {
                    ("running", _) => "running".to_string(),
                    ("retry_wait", _) => "retrying".to_string(),
                    (_, Some(0)) => "ok".into(),
                    (_, Some(c)) => format!("failed ({c})"),
                    (_, None) => "-".into(),
                };
                let opt = |t: &Option<String>| t.as_deref().map(when).unwrap_or_else(|| "-".into());
                rows.push(vec![
                    j.name.clone(),
                    j.schedule.clone(),
                    opt(&j.last_start),
                    result,
                    opt(&j.next_run),
                ]);
            }
            table(&rows);
        }
    }

    if !out.problems.is_empty() {
        println!();
        println!("problems:");
        for p in out.problems {
            println!("  {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_age;

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m 1s");
        assert_eq!(human_age(3 * 3600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(human_age(2 * 86_400 + 5 * 3600), "2d 5h");
        assert_eq!(human_age(-5), "in the future");
    }
}
