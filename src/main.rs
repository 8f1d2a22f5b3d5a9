mod cli;

fn main() {
    // Like other Unix tools, end quietly when a reader such as `head` closes
    // our stdout, instead of panicking on the failed print. Every write that
    // matters (repository, restore) finishes before results are printed.
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::main());
}
