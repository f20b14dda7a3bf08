//! Memory and CPU of a process from `/proc`, and the file-descriptor limit.
//!
//! RSS is `VmRSS` of `/proc/<pid>/status`; CPU is `utime + stime` of
//! `/proc/<pid>/stat` (all threads, in clock ticks of `USER_HZ`, which
//! Linux fixes at 100 for `/proc`), so a window of 60 s resolves 0.017 % of
//! a core. `perf` is not needed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Linux reports `/proc/<pid>/stat` times in units of `USER_HZ` = 100.
const TICKS_PER_SEC: f64 = 100.0;

/// `VmRSS` and `VmHWM` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{path} has no {name}"))?;
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: cannot read {line:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The number of threads of `pid`.
pub fn threads(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{path} has no Threads"))
}

/// CPU time (user + system, all threads) `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu(&text).with_context(|| format!("cannot parse {path}: {text:?}"))
}

fn parse_stat_cpu(text: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: the
    // fields after it start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// What a process used over a window.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub window_s: f64,
    pub rss_mean_mib: f64,
    pub rss_max_mib: f64,
    /// Peak RSS over the process's life (`VmHWM`).
    pub rss_hwm_mib: f64,
    /// Percent of one core over the window.
    pub cpu_percent: f64,
}

/// Samples `pid` every second over `window` (RSS) and takes the CPU time
/// used between its ends. Fails if the process exits.
pub fn measure(pid: u32, window: Duration) -> anyhow::Result<Usage> {
    measure_many(&[pid], window).map(|mut u| u.remove(0))
}

/// [`measure`] for several processes over the same window.
pub fn measure_many(pids: &[u32], window: Duration) -> anyhow::Result<Vec<Usage>> {
    let start = Instant::now();
    let cpu0: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_, _>>()?;
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
    loop {
        for (i, pid) in pids.iter().enumerate() {
            rss[i].push(rss_kib(*pid)?.0 as f64 / 1024.0);
        }
        let left = window.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let used = cpu_seconds(*pid)? - cpu0[i];
        out.push(Usage {
            window_s: elapsed,
            rss_mean_mib: crate::stats::mean(&rss[i]),
            rss_max_mib: crate::stats::max(&rss[i]),
            rss_hwm_mib: rss_kib(*pid)?.1 as f64 / 1024.0,
            cpu_percent: 100.0 * used / elapsed,
        });
    }
    Ok(out)
}

/// The pid of the first process whose `comm` is `name` (e.g. `dockerd`).
pub fn pid_of(name: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.filter_map(Result::ok).find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// The pid of the running `program` (the file name of its first argument)
/// that has `arg` among its arguments, e.g. the agent started with a given
/// `--config` path.
pub fn pid_with_arg(program: &str, arg: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.filter_map(Result::ok).find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let first = Path::new(std::str::from_utf8(args.first()?).ok()?);
        let is_program = first.file_name().is_some_and(|f| f == program);
        (is_program && args.contains(&arg.as_bytes())).then_some(pid)
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children inherit it,
/// so a `berth server` spawned afterwards can hold as many sessions).
/// Returns the new soft limit.
pub fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("setrlimit(RLIMIT_NOFILE, {hard})"))?;
    }
    Ok(hard)
}

/// Checks that `limit` file descriptors are enough for `sessions` sessions
/// (one socket each, plus slack for the process itself).
pub fn check_nofile(limit: u64, sessions: usize) -> anyhow::Result<()> {
    let need = sessions as u64 + 512;
    if limit < need {
        bail!(
            "{sessions} sessions need about {need} file descriptors, but RLIMIT_NOFILE is {limit}: raise the hard limit (ulimit -Hn, or LimitNOFILE= in the unit) and run again"
        );
    }
    Ok(())
}

/// The `some` stall totals (µs) of `/proc/pressure/{cpu,io}` (PSI): how
/// long some task waited for a CPU or for I/O. `None` without PSI.
pub fn pressure_us() -> Option<(u64, u64)> {
    let read = |what: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/pressure/{what}")).ok()?;
        text.lines()
            .find(|l| l.starts_with("some"))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((read("cpu")?, read("io")?))
}

/// Facts about the machine for the report.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_total_mib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpuModel": cpu_model,
        "memTotalMib": mem_total_mib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadAverage": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let line = "1234 (berth agent) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 300 18446744073709551615";
        assert_eq!(parse_stat_cpu(line), Some(3.0));
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let (rss, hwm) = rss_kib(pid).expect("own status");
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_seconds(pid).expect("own stat") >= 0.0);
    }
}
