//! The kernel's view of the CPUs and memory: `/proc/cpuinfo` for flags and for sockets, cores
//! and threads when SMBIOS lists no processors, `/proc/meminfo` for `MemTotal` when it lists no
//! memory modules, and `/proc/sys/kernel/arch` for the architecture.
//!
//! The architecture comes from `proc/sys/kernel/arch` (what `uname -m` prints; Linux 6.1 and
//! later) so that a fixture carries its own. On an older kernel it falls back to the
//! architecture the agent was built for, which is the running kernel's unless the agent runs in
//! a compat mode, but only when the root is `/`: a fixture's machine is not this one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Problem, clean_text, read_bounded};
use crate::api::Processor;

/// What `/proc/cpuinfo` says, already counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CpuInfo {
    pub architecture: Option<String>,
    /// Flags every logical CPU has, sorted.
    pub flags: Vec<String>,
    /// Distinct `physical id`s (1 when the kernel prints none but lists CPUs).
    pub sockets: u32,
    /// Distinct (`physical id`, `core id`) pairs, or logical CPUs when there are no core ids.
    pub cores: u32,
    /// Logical CPUs.
    pub threads: u32,
    /// One entry per socket, for when SMBIOS has none.
    pub processors: Vec<Processor>,
}

pub(super) fn read(root: &Path, problems: &mut Vec<String>) -> CpuInfo {
    let path = root.join("proc/cpuinfo");
    let text = match read_bounded(&path, problems) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => {
            problems.push(not_found(&path).to_string());
            String::new()
        }
        Err(problem) => {
            problems.push(problem.to_string());
            String::new()
        }
    };
    let mut info = parse(&text);
    info.architecture = architecture(root, problems);
    info
}

/// `MemTotal` in bytes.
pub(super) fn read_mem_total(root: &Path, problems: &mut Vec<String>) -> Option<u64> {
    let path = root.join("proc/meminfo");
    let bytes = match read_bounded(&path, problems) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            problems.push(not_found(&path).to_string());
            return None;
        }
        Err(problem) => {
            problems.push(problem.to_string());
            return None;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map(str::trim);
    let kib = value
        .and_then(|v| v.strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    if kib.is_none() {
        problems.push(
            Problem::BadValue {
                path,
                value: value.unwrap_or_default().to_owned(),
                expected: "a MemTotal line in kB",
            }
            .to_string(),
        );
    }
    kib.map(|kib| kib.saturating_mul(1024))
}

fn not_found(path: &Path) -> Problem {
    Problem::Unreadable {
        path: path.to_owned(),
        source: std::io::ErrorKind::NotFound.into(),
    }
}

fn architecture(root: &Path, problems: &mut Vec<String>) -> Option<String> {
    let path = root.join("proc/sys/kernel/arch");
    if let Some(arch) = super::read_attr(&path) {
        return Some(arch);
    }
    if root == Path::new("/") {
        return Some(std::env::consts::ARCH.to_owned());
    }
    problems.push(Problem::NoArchitecture { path }.to_string());
    None
}

/// Counts `/proc/cpuinfo`: blocks of `key : value` lines, one block per logical CPU.
fn parse(text: &str) -> CpuInfo {
    #[derive(Default)]
    struct Socket {
        cores: BTreeSet<String>,
        threads: u32,
        model: Option<String>,
        vendor: Option<String>,
    }
    let mut sockets: BTreeMap<String, Socket> = BTreeMap::new();
    let mut flags: Option<BTreeSet<String>> = None;
    let mut threads = 0u32;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let field = |name: &str| {
            block.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim())
            })
        };
        if field("processor").is_none() {
            continue; // e.g. the per-machine trailer some architectures print
        }
        threads = threads.saturating_add(1);
        let socket = sockets
            .entry(field("physical id").unwrap_or("0").to_owned())
            .or_default();
        socket.threads = socket.threads.saturating_add(1);
        if let Some(core) = field("core id") {
            socket.cores.insert(core.to_owned());
        }
        socket.model = socket
            .model
            .take()
            .or_else(|| field("model name").and_then(|m| clean_text(m.as_bytes())));
        socket.vendor = socket
            .vendor
            .take()
            .or_else(|| field("vendor_id").map(vendor_name));
        // x86 says `flags`, arm64 `Features`.
        let cpu_flags: BTreeSet<String> = field("flags")
            .or_else(|| field("Features"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        // Only what every CPU has: that is what a workload can count on.
        flags = Some(match flags {
            None => cpu_flags,
            Some(all) => all.intersection(&cpu_flags).cloned().collect(),
        });
    }
    let processors: Vec<Processor> = sockets
        .values()
        .map(|socket| {
            let cores = match socket.cores.len() {
                0 => socket.threads,
                n => super::count(n),
            };
            Processor {
                manufacturer: socket.vendor.clone(),
                product_name: socket.model.clone(),
                serial_number: None,
                speed: None,
                core_count: Some(cores),
                thread_count: Some(socket.threads),
            }
        })
        .collect();
    CpuInfo {
        architecture: None,
        flags: flags.unwrap_or_default().into_iter().collect(),
        sockets: super::count(processors.len()),
        cores: processors
            .iter()
            .filter_map(|p| p.core_count)
            .fold(0, u32::saturating_add),
        threads,
        processors,
    }
}

/// The CPUID vendor string as the manufacturer SMBIOS would name (matched by qualifiers such
/// as `manufacturer: AMD`); unknown vendors keep the CPUID string.
fn vendor_name(vendor_id: &str) -> String {
    match vendor_id {
        "GenuineIntel" => "Intel".to_owned(),
        "AuthenticAMD" => "AMD".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[test]
    fn recorded_cpuinfo_counts_sockets_cores_and_threads() {
        let mut problems = Vec::new();
        let xeon = read(&fixture("xeon-q35"), &mut problems);
        assert_eq!((xeon.sockets, xeon.cores, xeon.threads), (1, 2, 4));
        assert_eq!(xeon.processors[0].manufacturer.as_deref(), Some("Intel"));
        assert_eq!(xeon.architecture.as_deref(), Some("x86_64"));
        let dell = read(&fixture("dell-epyc"), &mut problems);
        assert_eq!((dell.sockets, dell.cores, dell.threads), (2, 4, 4));
        assert_eq!(
            dell.processors[1].product_name.as_deref(),
            Some("QEMU Virtual CPU version 2.5+")
        );
        assert!(
            dell.flags.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(dell.flags.contains(&"sse2".to_owned()));
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn flags_are_those_every_cpu_has() {
        let info =
            parse("processor : 0\nflags : fpu sse avx512f\n\nprocessor : 1\nflags : sse fpu\n");
        assert_eq!(info.flags, ["fpu", "sse"]);
        assert_eq!((info.sockets, info.cores, info.threads), (1, 2, 2));
    }

    #[test]
    fn arm64_cpuinfo_without_topology_counts_one_socket() {
        let info = parse(
            "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\n\n\
             processor\t: 1\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\n",
        );
        assert_eq!(info.flags, ["asimd", "evtstrm", "fp"]);
        assert_eq!((info.sockets, info.cores, info.threads), (1, 2, 2));
        assert_eq!(info.processors[0].product_name, None);
    }

    #[test]
    fn garbage_cpuinfo_counts_nothing() {
        let info = parse("\u{fffd}\n\n::::\n\nprocessor");
        assert_eq!(info, CpuInfo::default());
    }

    #[test]
    fn mem_total_is_read_in_bytes_and_garbage_is_a_problem() {
        let mut problems = Vec::new();
        assert_eq!(
            read_mem_total(&fixture("dell-epyc"), &mut problems),
            Some(467_616 * 1024)
        );
        assert!(problems.is_empty());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/meminfo"), "MemTotal: lots\n").unwrap();
        assert_eq!(read_mem_total(dir.path(), &mut problems), None);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("which is not a MemTotal line in kB"));
    }

    #[test]
    fn missing_architecture_is_a_problem_for_a_fixture_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Vec::new();
        assert_eq!(architecture(dir.path(), &mut problems), None);
        assert_eq!(problems.len(), 1);
    }
}
