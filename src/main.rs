mod cli;

fn main() {
    // Like other Unix tools, end quietly when a reader such as `head` closes
    // our stdout, instead of panicking on the failed print. Every write that
    // matters (repository, restore) finishes before results are printed.
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    bound_malloc();
    std::process::exit(cli::main());
}

/// glibc gives each thread its own heap arena; with buffers handed between
/// pipeline threads, each arena keeps its own freed memory and the peak
/// grows by tens of MiB. Two arenas keep the footprint near what is in use.
fn bound_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
