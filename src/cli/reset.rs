//! `lifeboat reset`: move a service's SQLite state aside, over
//! [`lifeboat::reset::reset`].

use std::path::PathBuf;

use lifeboat::Result;

use super::Ctx;
use super::output::print_json;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without --confirm this is a dry run that prints what would be removed.
Only SQLite databases are touched: the config's [[sqlite]] paths inside DIR (or, with no config,
DIR's *.db, *.sqlite, *.sqlite3, *.db3 files) and their -wal, -shm, -journal and .lock sidecars.
A file that does not start with the SQLite header stops the reset before anything is removed.
TLS material, configuration and other files stay. Removed files are moved into
DIR/.lifeboat-reset-<time>/ so a mistaken reset can be undone.")]
pub struct Args {
    /// The service's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Really do it.
    #[arg(long)]
    confirm: bool,
}

impl Args {
    /// Whether this run really resets (and so is logged), not a dry run.
    pub fn confirmed(&self) -> bool {
        self.confirm
    }
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    // With a config, exactly its databases (inside DIR); without one, DIR is scanned.
    let dbs: Option<Vec<PathBuf>> = ctx.config()?.map(|c| {
        c.sqlite
            .iter()
            .map(|s| std::path::absolute(&s.path).unwrap_or(s.path.clone()))
            .collect()
    });
    let dir = std::path::absolute(&args.data_dir).unwrap_or(args.data_dir.clone());
    let report = lifeboat::reset::reset(&dir, dbs.as_deref(), args.confirm)?;
    if ctx.json {
        print_json(&report);
        return Ok(0);
    }
    if report.files.is_empty() {
        println!("nothing to reset in {}", report.data_dir);
    } else if report.dry_run {
        for f in &report.files {
            println!("would remove {f}");
        }
        for db in &report.in_use {
            println!("open now: {db}; --confirm refuses until the service is stopped");
        }
        println!("dry run: nothing changed; add --confirm to reset");
    } else {
        for f in &report.files {
            println!("removed {f}");
        }
        if let Some(d) = &report.moved_to {
            println!("moved into {d} (delete it once you are sure)");
        }
    }
    Ok(0)
}
