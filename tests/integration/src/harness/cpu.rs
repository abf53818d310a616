//! CPU time of processes from `/proc`, so benchmarks can say where the time went: wall time
//! on a shared machine is noisy, CPU seconds per component much less so.

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) of a process, including its children that have exited and
/// were waited for; `None` once the process is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds of a process and all its live descendants (e.g. a postmaster and its
/// backends; backends that exited are in the postmaster's own children times).
pub fn tree_seconds(pid: u32) -> f64 {
    let mut total = process_seconds(pid).unwrap_or(0.0);
    for child in children(pid) {
        total += tree_seconds(child);
    }
    total
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_up_in_the_process_cpu_time() {
        let pid = std::process::id();
        let before = process_seconds(pid).expect("own /proc entry");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut x = 0u64;
        // Spin until the counter shows 0.2 s more (a wrong field would never move).
        while tree_seconds(pid) - before < 0.2 {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time did not move from {before}"
            );
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }
}
