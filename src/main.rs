mod cli;

fn main() {
    // SIGPIPE stays ignored (Rust's default): a write to a socket the server
    // has closed (an early rejection of an upload, a TLS handshake with a
    // plain-HTTP port) must fail with EPIPE and be reported or retried, not
    // kill the process without a word. Only a print to a closed stdout or
    // stderr ends it by SIGPIPE, as other Unix tools end when a reader such
    // as `head` goes away. Every write that matters (repository, restore)
    // finishes before results are printed.
    end_quietly_on_closed_output();
    bound_malloc();
    std::process::exit(cli::main());
}

/// `println!` panics when stdout is a closed pipe; end by SIGPIPE instead,
/// without a panic message.
fn end_quietly_on_closed_output() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or_default();
        if msg.starts_with("failed printing to std") && msg.contains(&format!("(os error {})", libc::EPIPE)) {
            // SAFETY: restores the default action of SIGPIPE and raises it,
            // which ends the process.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        default_hook(info);
    }));
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
