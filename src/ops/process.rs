//! The standard `process_*` metrics (as Prometheus client libraries name them), read from `/proc/self` at
//! scrape time: resident and virtual memory, CPU time, open file descriptors against their limit, threads.
//! Nothing is counted on the request path. Elsewhere than Linux, nothing is listed.

use std::fmt::Write;

/// The process metrics in the text exposition format, or an empty string where `/proc` is not available.
pub fn exposition() -> String {
    let mut out = String::with_capacity(1024);
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return out };
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return out };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name; vsize 23, rss 24.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let page = rustix::param::page_size() as u64;
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        let cpu = (utime + stime) as f64 / ticks;
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            format!("{cpu}"),
        );
    }
    if let Some(vsize) = field(23) {
        metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsize.to_string());
    }
    if let Some(rss) = field(24) {
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", (rss * page).to_string());
    }
    if let Some(threads) = field(20) {
        metric("process_threads", "gauge", "Number of OS threads in the process.", threads.to_string());
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor, open while it is read, is not counted.
        let open = fds.count().saturating_sub(1);
        metric("process_open_fds", "gauge", "Number of open file descriptors.", open.to_string());
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = limit.current {
        metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", max.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_metrics_are_read_from_proc() {
        // A descriptor this test holds open while the metrics are read: at least it is counted (standard
        // streams may be closed where the tests run).
        let fd = std::fs::File::open("/proc/self/stat").unwrap();
        let text = exposition();
        let value = |name: &str| -> f64 {
            let line =
                text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6, "{text}");
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 1.0, "the file above: {text}");
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        drop(fd);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }
}
