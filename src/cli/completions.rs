//! `lifeboat completions SHELL`: the shell's completion script on stdout,
//! generated from the same clap definitions the binary parses with, so it
//! knows every subcommand and flag of this version.

use clap::CommandFactory;
use clap_complete::Shell;

use lifeboat::Result;

use super::Ctx;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Install, for example:
  bash  lifeboat completions bash > /etc/bash_completion.d/lifeboat
        (or ~/.local/share/bash-completion/completions/lifeboat)
  zsh   lifeboat completions zsh > \"${fpath[1]}/_lifeboat\"    (then restart zsh)
  fish  lifeboat completions fish > ~/.config/fish/completions/lifeboat.fish")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells a script is generated for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(_: &Ctx, args: Args) -> Result<i32> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "lifeboat", &mut out);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|_| stdout.flush())
        .map_err(|e| lifeboat::Error::io(std::path::Path::new("stdout"), e))?;
    Ok(0)
}
