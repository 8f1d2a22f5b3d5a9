//! `lifeboat man`: manual pages generated from the clap definitions, so
//! they say exactly what `--help` says. One page per command
//! (`lifeboat.1`, `lifeboat-snapshot.1`, `lifeboat-log-prune.1`, ...).

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use lifeboat::{Error, Result};

use super::Ctx;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without --dir, the main page (lifeboat.1) goes to stdout: `lifeboat man | man -l -`.
With --dir, every page is written there, each replaced whole or not at all; install with e.g.
  lifeboat man --dir /usr/local/share/man/man1 && mandb")]
pub struct Args {
    /// Write every page (lifeboat.1 and one per subcommand) into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = args.dir else {
        let page = render(&cmd)?;
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&page)
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::io(Path::new("stdout"), e))?;
        return Ok(0);
    };
    if !dir.is_dir() {
        return Err(Error::no_input(dir.display(), "is not a directory").fix("create it first, or name another --dir"));
    }
    let mut written = Vec::new();
    write_pages(&cmd, &dir, &mut written)?;
    if ctx.json {
        super::output::print_json(&serde_json::json!({ "pages": written }));
    } else if !ctx.quiet {
        for p in &written {
            println!("{}", p.display());
        }
    }
    Ok(0)
}

fn render(cmd: &clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    // Every page names the program and version it documents, not the
    // subcommand alone (clap_mangen's default source).
    clap_mangen::Man::new(cmd.clone())
        .source(format!("lifeboat {}", env!("CARGO_PKG_VERSION")))
        .manual("Lifeboat Manual")
        .render(&mut page)
        .map_err(|e| Error::io(Path::new("man page"), e))?;
    Ok(page)
}

/// `cmd`'s page and its subcommands', each written to a temporary file,
/// synced and renamed into place (`fsutil::write_atomic`).
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    lifeboat::fsutil::write_atomic(&path, &render(cmd)?)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
