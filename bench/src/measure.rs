//! How each side is measured, the same way for Quarry (Rust) and ROCK (Python,
//! `bench/rock_driver.py` does the same with `resource.getrusage` and `/proc/self/status`):
//!
//! - CPU time: `getrusage(RUSAGE_SELF)` user + system, all threads of the process, read before
//!   and after each tick (microsecond resolution, unlike `/proc/<pid>/stat`'s 10 ms ticks);
//! - peak RSS: `VmHWM` from `/proc/self/status` when the child is done;
//! - wall time: a monotonic clock around the tick.
//!
//! Children report with one JSON object per line on stdout ([`emit`]).

use std::time::Duration;

/// User + system CPU time of this process so far (all threads).
pub fn cpu_time() -> Duration {
    let (user, sys) = cpu_times();
    user + sys
}

/// User and system CPU time of this process so far (all threads), apart.
pub fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Peak resident set size of this process (`VmHWM`), KiB.
pub fn peak_rss_kib() -> u64 {
    proc_status_kib("VmHWM:").unwrap_or(0)
}

/// Current resident set size of this process (`VmRSS`), KiB.
pub fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:").unwrap_or(0)
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Raises the soft open-files limit to the hard limit: 10k simulated workers mean 10k pooled
/// connections in the scheduler and as many accepted ones in the simulator.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// Prints one report line for the parent.
pub fn emit(value: serde_json::Value) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Milliseconds as a float, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median of `v` (sorted copy); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile of `v`; 0 when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}
