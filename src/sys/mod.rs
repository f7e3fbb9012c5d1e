//! What the proxy asks of the kernel and the C library: the open-file
//! limit, malloc's arenas, giving freed heap back, whether a process has
//! exited ([`process`]) and which connections its network namespace holds
//! ([`sockets`]).

pub mod process;
pub mod sockets;

pub use process::ProcessWatch;

/// Raises the soft limit on open files to the hard limit, as servers do:
/// each watched container holds a pidfd, beside up to 4096 connections, and
/// the usual soft limit is 1024. Returns the limit now in force.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            log::warn!("cannot raise the open-file limit: {error}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// glibc's malloc gives threads arenas of their own, up to 8 per core, and
/// each arena keeps its freed memory for reuse. Two are enough for this
/// proxy and save about a MiB of resident memory at N=1000 (one would save
/// a little more, but would put every thread behind one lock whenever its
/// thread cache misses). `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas() {
    const M_ARENA_MAX: std::ffi::c_int = -8;
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable; called before any other thread starts.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas() {}

/// How often freed heap is given back to the kernel.
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// glibc keeps what bursts free (the container list at start-up and on a
/// resync, a wave of prefetches, a spike of connections) for reuse, and
/// gives back only what sits at the top of the main heap. `malloc_trim`
/// returns every whole free page: 2.3-3.5 MiB of about 20 MiB of RSS after
/// a bench load at N=1000. Its cost is one walk of
/// the two arenas' free chunks every 10 s, on a runtime worker: 0.06-0.33
/// ms under load at N=1000, short enough not
/// to need a thread of its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn spawn_heap_trimmer() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(HEAP_TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only releases free memory; safe at any time.
            unsafe {
                malloc_trim(0);
            }
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn spawn_heap_trimmer() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut limit = getrlimit(Resource::Nofile);
        let hard = limit.maximum;
        limit.current = Some(256.min(hard.unwrap_or(256)));
        setrlimit(Resource::Nofile, limit).unwrap();
        assert_eq!(raise_open_file_limit(), hard);
    }
}
