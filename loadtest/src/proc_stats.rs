//! Server-side resource readings from /proc (the server must run on this machine).

/// Resident memory of the processes `pids` (a server may be several), in bytes; `None`
/// without PIDs or when one cannot be read.
pub fn rss_bytes(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_of(p)).sum()
}

/// CPU time (user + system) the processes `pids` have used, in seconds.
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_of(p)).sum()
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture Conclave targets.
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let one = super::rss_bytes(&[pid]).unwrap();
        assert!(one > 0);
        assert!(super::rss_bytes(&[pid, pid]).unwrap() >= 2 * one - 1_000_000);
        assert!(super::cpu_seconds(&[pid]).unwrap() >= 0.0);
        assert_eq!(super::rss_bytes(&[]), None);
        assert_eq!(super::rss_bytes(&[pid, u32::MAX]), None);
    }
}
