//! This process and the machine it runs on, as figures: the `process_*`
//! metrics at every scrape, and the gateway's `/health/memory` and
//! `/health/cpu`. sysinfo reads them (from /proc on Linux).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};
use serde::Serialize;
use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Figures of this process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessFigures {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// CPU time used since the start, seconds (all cores).
    pub cpu_seconds: f64,
    /// Open file descriptors, when readable.
    pub open_fds: Option<usize>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: u64,
}

/// Figures of the machine (or container).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SystemFigures {
    /// Memory in all, bytes.
    pub total_memory_bytes: u64,
    /// Memory available to new work, bytes.
    pub available_memory_bytes: u64,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// Logical cores this process may use.
    pub cores: usize,
}

/// Reads this process's figures; one per process, shared by the metrics
/// registry and the health endpoints.
pub struct ProcessMonitor {
    pid: Pid,
    system: Mutex<System>,
    /// The CPU time and instant of the last CPU-percentage reading.
    last_cpu: Mutex<Option<(Instant, f64)>>,
}

impl std::fmt::Debug for ProcessMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMonitor")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Default for ProcessMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessMonitor {
    /// A monitor of the current process.
    pub fn new() -> Self {
        Self {
            pid: Pid::from_u32(std::process::id()),
            system: Mutex::new(System::new()),
            last_cpu: Mutex::new(None),
        }
    }

    /// The process's figures now; `None` if the platform cannot tell.
    pub fn process(&self) -> Option<ProcessFigures> {
        let mut system = self.system.lock().unwrap_or_else(|p| p.into_inner());
        let kind = ProcessRefreshKind::nothing().with_memory().with_cpu().without_tasks();
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&[self.pid]), true, kind);
        let process = system.process(self.pid)?;
        Some(ProcessFigures {
            rss_bytes: process.memory(),
            virtual_bytes: process.virtual_memory(),
            cpu_seconds: process.accumulated_cpu_time() as f64 / 1000.0,
            open_fds: process.open_files(),
            start_time_seconds: process.start_time(),
        })
    }

    /// The machine's figures now.
    pub fn system(&self) -> SystemFigures {
        let mut system = self.system.lock().unwrap_or_else(|p| p.into_inner());
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let load = System::load_average();
        SystemFigures {
            total_memory_bytes: system.total_memory(),
            available_memory_bytes: system.available_memory(),
            load_average: [load.one, load.five, load.fifteen],
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// CPU used by this process since the previous reading (or, the first
    /// time, since it started), as a percentage of one core.
    pub fn cpu_percent(&self) -> Option<f64> {
        let figures = self.process()?;
        let now = Instant::now();
        let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let (since, cpu_then) = match *last {
            Some(previous) => previous,
            None => {
                let started = std::time::UNIX_EPOCH + Duration::from_secs(figures.start_time_seconds);
                let running = std::time::SystemTime::now().duration_since(started).unwrap_or_default();
                (now.checked_sub(running).unwrap_or(now), 0.0)
            }
        };
        *last = Some((now, figures.cpu_seconds));
        let wall = now.duration_since(since).as_secs_f64();
        Some(if wall > 0.0 {
            ((figures.cpu_seconds - cpu_then).max(0.0) / wall) * 100.0
        } else {
            0.0
        })
    }
}

impl Collector for ProcessMonitor {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = self.process() else {
            return Ok(());
        };
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                figures.rss_bytes as i64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                figures.virtual_bytes as i64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, seconds",
                figures.start_time_seconds as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(fds) = figures.open_fds {
            let gauge = ConstGauge::new(fds as i64);
            let metric =
                encoder.encode_descriptor("process_open_fds", "Open file descriptors", None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let cpu = ConstCounter::new(figures.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "CPU time used by the process, seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_are_this_process_s() {
        let monitor = ProcessMonitor::new();
        let figures = monitor.process().unwrap();
        assert!(figures.rss_bytes > 1 << 20, "{figures:?}");
        assert!(figures.virtual_bytes >= figures.rss_bytes);
        assert!(figures.open_fds.unwrap() >= 3, "stdin, stdout and stderr at least");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(figures.start_time_seconds <= now && figures.start_time_seconds > now - 3600);

        // Burn a tenth of a CPU second: the next reading sees it.
        monitor.cpu_percent().unwrap();
        let before = monitor.process().unwrap().cpu_seconds;
        let mut x = 0u64;
        while monitor.process().unwrap().cpu_seconds - before < 0.1 {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let percent = monitor.cpu_percent().unwrap();
        assert!(percent > 0.0 && percent.is_finite(), "{percent}");

        let system = monitor.system();
        assert!(system.total_memory_bytes >= system.available_memory_bytes);
        assert!(system.available_memory_bytes > 0);
        assert!(system.cores >= 1);
        assert!(system.load_average.iter().all(|l| *l >= 0.0));
    }

    #[test]
    fn the_exposition_has_the_process_metrics() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessMonitor::new()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
