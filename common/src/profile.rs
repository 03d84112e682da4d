//! On-demand CPU profiles for the admin port (`--profiling`), so a hot
//! path can be looked at in a running server without rebuilding it.

use std::time::Duration;

/// Samples every thread of the process at 99 Hz for `duration` and returns
/// the result as a flame graph (SVG). Blocks the calling thread; only one
/// profile can run at a time.
pub fn cpu_flamegraph(duration: Duration) -> Result<String, String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler: {e}"))?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(|e| format!("cannot build the profile: {e}"))?;
    if report.data.is_empty() {
        return Err(format!("no CPU samples in {} s: the process was idle", duration.as_secs()));
    }
    let mut svg = Vec::new();
    report.flamegraph(&mut svg).map_err(|e| format!("cannot draw the flame graph: {e}"))?;
    String::from_utf8(svg).map_err(|e| format!("flame graph is not UTF-8: {e}"))
}
