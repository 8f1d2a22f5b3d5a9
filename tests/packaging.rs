//! What an operator installs besides the binary: shell completions, man
//! pages and the systemd units in contrib/. Each is checked against the
//! command list `lifeboat --help` gives, so a command added later is
//! covered without touching this file.

mod common;

use std::path::Path;

use common::{Env, s};

/// `lifeboat [path..] --help`'s subcommands (without `help`).
fn subcommands(env: &Env, path: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let out = env.run_bare(&args).expect_code(0);
    let Some(section) = out.stdout.split("\nCommands:\n").nth(1) else {
        return Vec::new();
    };
    section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        // A description wrapped onto a second line is indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// Every command path, nested ones included (`log prune`).
fn every_command(env: &Env) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        for sub in subcommands(env, &refs) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p.clone());
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn every_command_has_help_that_renders() {
    let env = Env::bare();
    let commands = every_command(&env);
    for needed in ["status", "completions", "man", "snapshot"] {
        assert!(commands.iter().any(|c| c == &[needed]), "{needed} in {commands:?}");
    }
    assert!(
        commands.iter().any(|c| c.len() == 2),
        "nested commands found: {commands:?}"
    );
    for c in &commands {
        let mut args: Vec<&str> = c.iter().map(String::as_str).collect();
        args.push("--help");
        let out = env.run_bare(&args).expect_code(0);
        let usage = format!("Usage: lifeboat {}", c.join(" "));
        assert!(out.stdout.contains(&usage), "{usage}:\n{}", out.stdout);
    }
}

#[test]
fn completion_scripts_know_every_command() {
    let env = Env::bare();
    let top = subcommands(&env, &[]);
    for shell in ["bash", "zsh", "fish"] {
        let script = env.run_bare(["completions", shell]).expect_code(0).stdout;
        for c in &top {
            let entry = match shell {
                "bash" => format!("cmd=\"lifeboat__subcmd__{}\"", c.replace('-', "__")),
                "zsh" => format!("\n'{c}:"),
                _ => format!("-a \"{c}\""),
            };
            assert!(script.contains(&entry), "{shell} script lacks {entry}");
        }
        // The shell itself reads the script without a syntax error, when it
        // is installed here.
        let file = env.path(&format!("completion.{shell}"));
        std::fs::write(&file, &script).unwrap();
        match std::process::Command::new(shell).arg("-n").arg(&file).output() {
            Ok(o) => assert!(o.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("{shell} not installed: syntax not checked")
            }
            Err(e) => panic!("{shell}: {e}"),
        }
    }
    env.run_bare(["completions", "powershell"]).expect_code(64);
}

#[test]
fn man_writes_one_page_per_command_that_man_renders() {
    let env = Env::bare();
    let dir = env.path("man1");
    std::fs::create_dir_all(&dir).unwrap();
    let out = env.run_bare(["--json", "man", "--dir", s(&dir)]).expect_code(0);
    let listed = out.json()["pages"].as_array().unwrap().len();
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let mut want: Vec<String> = every_command(&env)
        .iter()
        .map(|c| format!("lifeboat-{}.1", c.join("-")))
        .collect();
    want.push("lifeboat.1".into());
    want.sort();
    assert_eq!(pages, want, "no temporary file is left beside them");
    assert_eq!(listed, want.len());
    for p in &pages {
        let text = std::fs::read_to_string(dir.join(p)).unwrap();
        let name = p.trim_end_matches(".1");
        let th = format!(".TH {name} 1 ");
        assert!(text.contains(&th) && text.contains("lifeboat 0."), "{p}: no {th}");
    }
    // Without --dir the main page goes to stdout, the same page.
    let main = env.run_bare(["man"]).expect_code(0).stdout;
    assert_eq!(main, std::fs::read_to_string(dir.join("lifeboat.1")).unwrap());
    render_with_man(&dir.join("lifeboat-status.1"), "--max-age");
    // A directory that is not there is missing input, and nothing is made.
    let missing = env.path("nowhere");
    env.run_bare(["man", "--dir", s(&missing)]).expect_code(66);
    assert!(!missing.exists());
}

/// `man -l PAGE` shows the NAME section and `expect`, when man is installed.
fn render_with_man(page: &Path, expect: &str) {
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "man -l: {}", String::from_utf8_lossy(&o.stderr));
            assert!(text.contains("NAME") && text.contains(expect), "{text}");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("man not installed: page not rendered"),
        Err(e) => panic!("man: {e}"),
    }
}

/// contrib/systemd as shipped, with ExecStart pointing at the binary under
/// test (verify checks that the command exists).
fn units_under_test(env: &Env) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let dir = env.path("units");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "lifeboat-agent.service",
        "lifeboat-snapshot.service",
        "lifeboat-snapshot.timer",
    ] {
        let text = std::fs::read_to_string(src.join(name)).unwrap();
        assert!(
            text.contains("/usr/local/bin/lifeboat") || name.ends_with(".timer"),
            "{name}"
        );
        std::fs::write(dir.join(name), text.replace("/usr/local/bin/lifeboat", common::BIN)).unwrap();
    }
    dir
}

#[test]
fn the_systemd_units_verify_and_the_agent_is_hardened() {
    let env = Env::bare();
    let dir = units_under_test(&env);
    let agent = std::fs::read_to_string(dir.join("lifeboat-agent.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(agent.contains(line), "lifeboat-agent.service lacks {line:?}");
    }
    // The arguments the units run are ones the binary accepts.
    let exec = |unit: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        let line = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        line.split_whitespace().skip(1).map(String::from).collect()
    };
    let mut snapshot = exec("lifeboat-snapshot.service");
    snapshot.push("--help".into());
    env.run_bare(&snapshot).expect_code(0);

    let units: Vec<String> = [
        "lifeboat-agent.service",
        "lifeboat-snapshot.service",
        "lifeboat-snapshot.timer",
    ]
    .iter()
    .map(|u| s(&dir.join(u)).to_string())
    .collect();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output();
    let o = match verify {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze not installed: units not verified");
            return;
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    };
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // systemd's own score of the sandbox: 0 (locked down) to 10 (none).
    let o = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&units[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() && !text.contains("Overall exposure level") {
        // systemd before 250 has no --offline.
        eprintln!(
            "systemd-analyze security --offline: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for lifeboat-agent.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}
