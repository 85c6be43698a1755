//! Kernel module loading for the discovery agent, which has no modprobe and no udev: reads
//! depmod's text index (`modules.alias`, `modules.dep`, `modules.softdep`), matches the modaliases
//! of the devices present in sysfs against it the way modprobe does, and inserts the matching
//! modules with `finit_module`, dependencies first, until no new device needs a driver.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Scanning rounds before the loader gives up: each round's drivers may create devices of their
/// own (virtio_pci → virtio devices, ahci → SCSI disks) that need drivers in the next one; real
/// chains are two or three deep, so hitting this bound means something keeps creating devices.
const MAX_ROUNDS: usize = 6;
/// How often the settle wait looks at sysfs, and how long it waits at most for devices created
/// by a round's drivers to stop appearing.
const SETTLE_POLL: Duration = Duration::from_millis(100);
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Errors reading the module index and inserting modules.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("cannot read {path}: {source}; the image must ship a module tree indexed by depmod")]
    Read { path: PathBuf, source: io::Error },
    #[error("{file} line {line}: {reason}; regenerate it with depmod")]
    Parse {
        file: &'static str,
        line: usize,
        reason: &'static str,
    },
    #[error("module {module} is not in modules.dep; add it to discovery-image/modules.list")]
    Unknown { module: String },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("finit_module of {path} failed: {source}")]
    Insert { path: PathBuf, source: io::Error },
}

/// One module as `modules.dep` lists it.
#[derive(Debug, Clone)]
struct Module {
    /// Path of the `.ko`, relative to the module directory as depmod writes it.
    path: PathBuf,
    /// Names of every module it needs, transitively, in `modules.dep` order.
    deps: Vec<String>,
}

/// depmod's index of one kernel's module tree (`/lib/modules/<version>`).
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    /// Alias globs, normalised, in `modules.alias` order, each with the module it names.
    aliases: Vec<(String, String)>,
    modules: HashMap<String, Module>,
    /// Module → names (modules or aliases) that modprobe loads before it (`softdep ... pre:`).
    softdeps_pre: HashMap<String, Vec<String>>,
}

impl ModuleIndex {
    /// Reads the index depmod wrote into `dir`; `modules.softdep` is optional, the others are not.
    pub fn load(dir: &Path) -> Result<Self, ModulesError> {
        let read = |name: &str, optional: bool| {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(error) if optional && error.kind() == io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(source) => Err(ModulesError::Read { path, source }),
            }
        };
        Self::parse(
            &read("modules.alias", false)?,
            &read("modules.dep", false)?,
            &read("modules.softdep", true)?,
        )
    }

    fn parse(alias: &str, dep: &str, softdep: &str) -> Result<Self, ModulesError> {
        Ok(Self {
            aliases: parse_aliases(alias)?,
            modules: parse_deps(dep)?,
            softdeps_pre: parse_softdeps(softdep)?,
        })
    }

    /// Modules whose alias globs match `modalias`, each once, in `modules.alias` order.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        let wanted = normalise_alias(modalias);
        let mut found: Vec<String> = Vec::new();
        for (glob, module) in &self.aliases {
            if !found.contains(module) && glob_match(glob.as_bytes(), wanted.as_bytes()) {
                found.push(module.clone());
            }
        }
        found
    }

    /// The `.ko` files to insert, in order, so that `module` loads: its dependencies and their
    /// pre-softdeps first, `module` last. Paths are relative to the module directory; the list
    /// is empty when the index does not know `module`.
    pub fn load_order(&self, module: &str) -> Vec<PathBuf> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.push_load_order(&normalise_name(module), &mut seen, &mut order);
        order
    }

    fn push_load_order(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<PathBuf>) {
        // Marking before recursing keeps a (malformed) dependency cycle from recursing forever.
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some(module) = self.modules.get(name) else {
            return;
        };
        for pre in self.softdeps_pre.get(name).into_iter().flatten() {
            for target in self.resolve(pre) {
                self.push_load_order(&target, seen, order);
            }
        }
        // depmod lists users before what they use, so the reverse is a load order; recursing
        // makes the order right even where a list is not sorted that way.
        for dep in module.deps.iter().rev() {
            self.push_load_order(dep, seen, order);
        }
        order.push(module.path.clone());
    }

    /// A softdep names a module or, like `crct10dif`, an alias of one or more.
    fn resolve(&self, name: &str) -> Vec<String> {
        let module = normalise_name(name);
        if self.modules.contains_key(&module) {
            vec![module]
        } else {
            self.modules_for(name)
        }
    }
}

/// What [`load_for_present_devices`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules this call inserted, in insertion order (already loaded ones are not listed).
    pub loaded: Vec<String>,
    /// Modules that could not be loaded; the others were still tried.
    pub failures: Vec<LoadFailure>,
    /// Scanning rounds it took.
    pub rounds: usize,
}

/// A module that did not load, and why.
#[derive(Debug)]
pub struct LoadFailure {
    pub module: String,
    pub error: ModulesError,
}

/// Loads the drivers for every device present in sysfs (mounted at `sysfs`, normally `/sys`)
/// plus the `always` list (modules that no device asks for, such as `ipmi_devintf`), inserting
/// `.ko` files from `modules_dir`. Scans again after each round that loaded something, since new
/// drivers create new devices, until a round loads nothing or the round bound is hit.
pub fn load_for_present_devices(
    index: &ModuleIndex,
    modules_dir: &Path,
    sysfs: &Path,
    always: &[&str],
) -> LoadReport {
    load_rounds(
        index,
        modules_dir,
        sysfs,
        always,
        &mut finit_module,
        &mut || {
            settle(sysfs);
        },
    )
}

/// The round logic, with the syscall and the wait passed in so tests can fake both.
fn load_rounds(
    index: &ModuleIndex,
    modules_dir: &Path,
    sysfs: &Path,
    always: &[&str],
    insert: &mut dyn FnMut(&Path) -> Result<(), ModulesError>,
    settle: &mut dyn FnMut(),
) -> LoadReport {
    let mut report = LoadReport::default();
    // Every module is tried once: a failure will not heal by retrying, and an EEXIST says it is
    // there already.
    let mut tried: HashSet<String> = HashSet::new();
    for round in 1..=MAX_ROUNDS {
        report.rounds = round;
        let mut wanted: Vec<String> = Vec::new();
        if round == 1 {
            wanted.extend(always.iter().map(|name| normalise_name(name)));
        }
        for modalias in present_modaliases(sysfs) {
            wanted.extend(index.modules_for(&modalias));
        }
        let mut progressed = false;
        for module in wanted {
            let order = index.load_order(&module);
            if order.is_empty() {
                if tried.insert(module.clone()) {
                    report.failures.push(LoadFailure {
                        error: ModulesError::Unknown {
                            module: module.clone(),
                        },
                        module,
                    });
                }
                continue;
            }
            for relative in order {
                let name = module_name(&relative);
                if !tried.insert(name.clone()) {
                    continue;
                }
                match insert(&modules_dir.join(&relative)) {
                    Ok(()) => {
                        report.loaded.push(name);
                        progressed = true;
                    }
                    Err(ModulesError::Insert { source, .. })
                        if source.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(error) => report.failures.push(LoadFailure {
                        module: name,
                        error,
                    }),
                }
            }
        }
        if !progressed {
            break;
        }
        settle();
    }
    report
}

/// Inserts one module file, without parameters.
fn finit_module(path: &Path) -> Result<(), ModulesError> {
    let file = File::open(path).map_err(|source| ModulesError::Open {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: the descriptor stays open for the whole call (`file` outlives it) and the
    // parameter string is a NUL-terminated literal; the kernel reads nothing else of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            0_i32,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(ModulesError::Insert {
            path: path.to_owned(),
            source: io::Error::last_os_error(),
        })
    }
}

/// Waits until the devices a round's drivers create have appeared: until two looks at sysfs a
/// poll apart agree, or [`SETTLE_MAX`] has passed. Most probing has finished when finit_module
/// returns (the kernel waits for a module's async work), so this is usually one poll.
fn settle(sysfs: &Path) {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last = present_modaliases(sysfs);
    loop {
        thread::sleep(SETTLE_POLL);
        let now = present_modaliases(sysfs);
        if now == last || Instant::now() >= deadline {
            return;
        }
        last = now;
    }
}

/// Every device modalias under `<sysfs>/bus/*/devices/*/modalias`, sorted so that the load order
/// (and so interface naming) does not depend on directory order. Unreadable entries are skipped:
/// devices come and go while we look.
fn present_modaliases(sysfs: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sysfs.join("bus")) else {
        return found;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for device in devices.flatten() {
            if let Ok(text) = std::fs::read_to_string(device.path().join("modalias")) {
                let modalias = text.trim();
                if !modalias.is_empty() {
                    found.insert(modalias.to_owned());
                }
            }
        }
    }
    found
}

/// Parses `alias <glob> <module>` lines.
fn parse_aliases(text: &str) -> Result<Vec<(String, String)>, ModulesError> {
    let mut aliases = Vec::new();
    for (number, line) in content_lines(text) {
        let mut fields = line.split_ascii_whitespace();
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some("alias"), Some(glob), Some(module), None) => {
                aliases.push((normalise_alias(glob), normalise_name(module)));
            }
            _ => {
                return Err(ModulesError::Parse {
                    file: "modules.alias",
                    line: number,
                    reason: "expected `alias <glob> <module>`",
                });
            }
        }
    }
    Ok(aliases)
}

/// Parses `<path>.ko: <dep>.ko <dep>.ko` lines.
fn parse_deps(text: &str) -> Result<HashMap<String, Module>, ModulesError> {
    let mut modules = HashMap::new();
    for (number, line) in content_lines(text) {
        let Some((path, deps)) = line.split_once(':') else {
            return Err(ModulesError::Parse {
                file: "modules.dep",
                line: number,
                reason: "expected `<module path>: <dependency paths>`",
            });
        };
        let path = PathBuf::from(path.trim());
        let deps = deps
            .split_ascii_whitespace()
            .map(|dep| module_name(Path::new(dep)))
            .collect();
        modules.insert(module_name(&path), Module { path, deps });
    }
    Ok(modules)
}

/// Parses `softdep <module> pre: <names> post: <names>` lines, keeping the `pre:` names: those
/// are what must be there before the module initialises (r8169 refuses a PHY without `realtek`).
/// Names before any `pre:`/`post:` mean nothing to modprobe either.
fn parse_softdeps(text: &str) -> Result<HashMap<String, Vec<String>>, ModulesError> {
    let mut softdeps: HashMap<String, Vec<String>> = HashMap::new();
    for (number, line) in content_lines(text) {
        let mut fields = line.split_ascii_whitespace();
        let (Some("softdep"), Some(module)) = (fields.next(), fields.next()) else {
            return Err(ModulesError::Parse {
                file: "modules.softdep",
                line: number,
                reason: "expected `softdep <module> pre: <names> post: <names>`",
            });
        };
        let mut in_pre = false;
        for field in fields {
            match field {
                "pre:" => in_pre = true,
                "post:" => in_pre = false,
                name if in_pre => softdeps
                    .entry(normalise_name(module))
                    .or_default()
                    .push(name.to_owned()),
                _ => {}
            }
        }
    }
    Ok(softdeps)
}

/// Non-blank, non-comment lines with their 1-based line numbers.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// The module name of a `.ko` path: `kernel/drivers/nvme/host/nvme-core.ko` → `nvme_core`.
fn module_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    // Compressed modules end in `.ko.xz`/`.ko.zst`; the name is what comes before `.ko`.
    let stem = file.split(".ko").next().unwrap_or_default();
    normalise_name(stem)
}

/// The kernel treats `-` and `_` in module names as the same; modprobe writes `_`.
fn normalise_name(name: &str) -> String {
    name.replace('-', "_")
}

/// modprobe compares aliases with `-` read as `_`, except inside `[...]`, where `-` is a range.
fn normalise_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_class = false;
    for c in alias.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            '-' if !in_class => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// fnmatch(3) without flags, as modprobe uses it on aliases: `*` (which also matches `/`), `?`,
/// `[...]` with ranges and `!`/`^` negation, and `\` escapes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` resumes matching, and the text position it has swallowed up to: on a
    // mismatch the star takes one more byte (classic linear backtracking, only the last star
    // needs to be remembered).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            star = Some((p, t));
            continue;
        }
        if let Some(next) = match_one(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            Some((resume, swallowed)) => {
                p = resume;
                t = swallowed + 1;
                star = Some((resume, swallowed + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether the pattern element at `p` (not `*`) matches `c`; on a match, where the next element
/// starts.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match *pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => match match_class(pattern, p + 1, c) {
            Some((true, next)) => Some(next),
            Some((false, _)) => None,
            // No closing bracket: the `[` is an ordinary character.
            None => (c == b'[').then_some(p + 1),
        },
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        literal => (literal == c).then_some(p + 1),
    }
}

/// Matches `c` against the class whose body starts at `p` (just after `[`); returns whether it
/// matched and where the class ends, or `None` when the class is not closed.
fn match_class(pattern: &[u8], mut p: usize, c: u8) -> Option<(bool, usize)> {
    let negated = matches!(pattern.get(p), Some(b'!' | b'^'));
    if negated {
        p += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut low = *pattern.get(p)?;
        // A `]` right after the opening (and negation) is a member, not the end.
        if low == b']' && !first {
            return Some((matched != negated, p + 1));
        }
        first = false;
        if low == b'\\' {
            p += 1;
            low = *pattern.get(p)?;
        }
        p += 1;
        let mut high = low;
        if pattern.get(p) == Some(&b'-') && pattern.get(p + 1).is_some_and(|&b| b != b']') {
            high = *pattern.get(p + 1)?;
            if high == b'\\' {
                p += 1;
                high = *pattern.get(p + 1)?;
            }
            p += 2;
        }
        if (low..=high).contains(&c) {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpts of the index `depmod` wrote for Debian's 6.1.0-56-amd64 kernel.
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias crypto-crct10dif-pclmul crct10dif_pclmul
alias crct10dif crct10dif_pclmul
alias cpu:type:x86,ven*fam*mod*:feature:*0081* crct10dif_pclmul
alias crypto-crct10dif crct10dif_generic
alias crct10dif crct10dif_generic
alias platform:dmi-ipmi-si ipmi_si
alias pci:v*d*sv*sd*bc0Csc07i01* ipmi_si
alias acpi*:IPI0001:* ipmi_si
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v00008086d00002922sv*sd*bc*sc*i* ahci
alias scsi:t-0x00* sd_mod
alias scsi:t-0x0e* sd_mod
alias scsi:t-0x05* sr_mod
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias pci:v0000106Bd00002005sv*sd*bc*sc*i* nvme
alias mdio:0000000000011100110010?????????? realtek
alias usb:v13FDp3940d0[0-2]*dc*dsc*dp*ic*isc*ip*in* usb_storage
";

    const DEP: &str = "\
kernel/arch/x86/crypto/crct10dif-pclmul.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
kernel/crypto/crct10dif_generic.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crc64_rocksoft_generic.ko: kernel/lib/crc64.ko
kernel/block/t10-pi.ko: kernel/lib/crc64-rocksoft.ko kernel/lib/crc-t10dif.ko kernel/lib/crc64.ko kernel/crypto/crct10dif_common.ko
kernel/lib/crc-t10dif.ko: kernel/crypto/crct10dif_common.ko
kernel/lib/crc64.ko:
kernel/lib/crc64-rocksoft.ko: kernel/lib/crc64.ko
kernel/drivers/char/ipmi/ipmi_msghandler.ko:
kernel/drivers/char/ipmi/ipmi_devintf.ko: kernel/drivers/char/ipmi/ipmi_msghandler.ko
kernel/drivers/char/ipmi/ipmi_si.ko: kernel/drivers/char/ipmi/ipmi_msghandler.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/scsi/sd_mod.ko: kernel/block/t10-pi.ko kernel/lib/crc64-rocksoft.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko kernel/lib/crc-t10dif.ko kernel/lib/crc64.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/nvme/host/nvme-core.ko: kernel/block/t10-pi.ko kernel/lib/crc64-rocksoft.ko kernel/lib/crc-t10dif.ko kernel/lib/crc64.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko kernel/block/t10-pi.ko kernel/lib/crc64-rocksoft.ko kernel/lib/crc-t10dif.ko kernel/lib/crc64.ko kernel/crypto/crct10dif_common.ko
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/net/core/failover.ko:
";

    const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep cifs gcm
softdep crc_t10dif pre: crct10dif
softdep crc64_rocksoft pre: crc64
softdep ipmi_msghandler post: ipmi_devintf
";

    const VIRTIO_NET_PCI: &str = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";
    const E1000_PCI: &str = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00";
    const ICH9_AHCI_PCI: &str = "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(ALIAS, DEP, SOFTDEP).expect("the fixture is depmod output")
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|path| module_name(path)).collect()
    }

    #[test]
    fn glob_star_matches_any_run_including_empty_and_slashes() {
        assert!(glob_match(b"a*c", b"ac"));
        assert!(glob_match(b"a*c", b"a/b/c"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"*0081*", b"x,0080,0081,0082"));
    }

    #[test]
    fn glob_question_mark_matches_exactly_one_byte() {
        assert!(glob_match(b"mdio:01??", b"mdio:0110"));
        assert!(!glob_match(b"mdio:01??", b"mdio:011"));
        assert!(!glob_match(b"mdio:01??", b"mdio:01100"));
    }

    #[test]
    fn glob_class_matches_ranges_members_and_negation() {
        assert!(glob_match(b"d0[0-2]x", b"d01x"));
        assert!(!glob_match(b"d0[0-2]x", b"d03x"));
        assert!(glob_match(b"[abc]", b"b"));
        assert!(glob_match(b"[!0-9]", b"a"));
        assert!(!glob_match(b"[^0-9]", b"5"));
        assert!(glob_match(b"[]a]", b"]"));
        assert!(glob_match(b"[a-]", b"-"));
    }

    #[test]
    fn glob_unclosed_bracket_and_escape_are_literal() {
        assert!(glob_match(b"a[b", b"a[b"));
        assert!(!glob_match(b"a[b", b"ab"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
    }

    #[test]
    fn glob_requires_the_whole_text_to_match() {
        assert!(!glob_match(
            b"virtio:d00000001v",
            b"virtio:d00000001v00001AF4"
        ));
        assert!(!glob_match(b"abc", b"ab"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
    }

    #[test]
    fn modules_for_matches_device_modaliases_like_modprobe() {
        let index = index();
        assert_eq!(index.modules_for(VIRTIO_NET_PCI), ["virtio_pci"]);
        assert_eq!(
            index.modules_for("virtio:d00000001v00001AF4"),
            ["virtio_net"]
        );
        assert_eq!(
            index.modules_for("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert_eq!(index.modules_for(E1000_PCI), ["e1000"]);
        assert_eq!(index.modules_for("scsi:t-0x00"), ["sd_mod"]);
        assert_eq!(index.modules_for("scsi:t-0x05"), ["sr_mod"]);
        assert_eq!(index.modules_for("acpi:IPI0001:"), ["ipmi_si"]);
        assert!(
            index
                .modules_for("pci:v00001B36d00000008sv00001AF4sd00001100bc06sc00i00")
                .is_empty()
        );
    }

    #[test]
    fn modules_for_reads_dashes_as_underscores_outside_classes() {
        let index = index();
        assert_eq!(index.modules_for("platform:dmi_ipmi_si"), ["ipmi_si"]);
        assert_eq!(index.modules_for("platform:dmi-ipmi-si"), ["ipmi_si"]);
        assert_eq!(index.modules_for("scsi:t_0x0e"), ["sd_mod"]);
        // The range inside the class must survive normalisation.
        assert_eq!(
            index.modules_for("usb:v13FDp3940d0150dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
    }

    #[test]
    fn modules_for_lists_a_module_once_when_several_aliases_match() {
        // An Apple NVMe controller matches both the class alias and its own vendor alias.
        let apple = "pci:v0000106Bd00002005sv00000000sd00000000bc01sc08i02";
        assert_eq!(index().modules_for(apple), ["nvme"]);
        // ICH9 AHCI matches the class alias and its device alias.
        assert_eq!(index().modules_for(ICH9_AHCI_PCI), ["ahci"]);
    }

    #[test]
    fn modules_for_returns_every_matching_module_in_alias_order() {
        assert_eq!(
            index().modules_for("crct10dif"),
            ["crct10dif_pclmul", "crct10dif_generic"]
        );
    }

    #[test]
    fn load_order_puts_dependencies_first_and_the_module_last() {
        let order = names(&index().load_order("virtio_net"));
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(
            index().load_order("e1000"),
            [PathBuf::from(
                "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"
            )]
        );
    }

    #[test]
    fn load_order_includes_pre_softdeps_before_their_module() {
        let order = names(&index().load_order("nvme"));
        let position = |name: &str| {
            order
                .iter()
                .position(|entry| entry == name)
                .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
        };
        assert!(position("crct10dif_generic") < position("crc_t10dif"));
        assert!(position("crct10dif_pclmul") < position("crc_t10dif"));
        assert!(position("crc64") < position("crc64_rocksoft"));
        assert!(position("nvme_core") < position("nvme"));
        assert_eq!(order.last().map(String::as_str), Some("nvme"));
        // `post:` softdeps are not loaded first.
        assert!(!names(&index().load_order("ipmi_si")).contains(&"ipmi_devintf".to_owned()));
    }

    #[test]
    fn load_order_loads_every_dependency_before_its_users_for_every_module() {
        let index = index();
        for name in index.modules.keys() {
            let order = names(&index.load_order(name));
            for (at, module) in order.iter().enumerate() {
                for dep in &index.modules[module].deps {
                    let dep_at = order.iter().position(|entry| entry == dep);
                    assert!(
                        dep_at.is_some_and(|dep_at| dep_at < at),
                        "{dep} must come before {module} in {order:?}"
                    );
                }
            }
            assert_eq!(order.len(), order.iter().collect::<HashSet<_>>().len());
        }
    }

    #[test]
    fn load_order_accepts_dashed_names_and_is_empty_for_unknown_modules() {
        assert_eq!(
            names(&index().load_order("nvme-core"))
                .last()
                .map(String::as_str),
            Some("nvme_core")
        );
        assert!(index().load_order("no_such_module").is_empty());
    }

    #[test]
    fn parse_rejects_malformed_lines_with_their_line_number() {
        let error = ModuleIndex::parse(ALIAS, "kernel/a.ko:\nkernel/b.ko kernel/a.ko\n", "")
            .expect_err("a dep line without a colon is malformed");
        assert!(matches!(
            error,
            ModulesError::Parse {
                file: "modules.dep",
                line: 2,
                ..
            }
        ));
        let error = ModuleIndex::parse("alias only-two\n", DEP, "")
            .expect_err("an alias line needs three fields");
        assert!(matches!(
            error,
            ModulesError::Parse {
                file: "modules.alias",
                line: 1,
                ..
            }
        ));
        let error = ModuleIndex::parse(ALIAS, DEP, "options foo bar=1\n")
            .expect_err("modules.softdep holds only softdep lines");
        assert!(matches!(
            error,
            ModulesError::Parse {
                file: "modules.softdep",
                ..
            }
        ));
    }

    #[test]
    fn parse_softdeps_keeps_only_pre_names() {
        let softdeps = parse_softdeps(
            "softdep cifs gcm\nsoftdep a-b pre: x y post: z\nsoftdep c post: p pre: q\n",
        )
        .expect("well-formed softdep lines");
        assert_eq!(
            softdeps.get("a_b").map(Vec::as_slice),
            Some(&["x".to_owned(), "y".to_owned()][..])
        );
        assert_eq!(
            softdeps.get("c").map(Vec::as_slice),
            Some(&["q".to_owned()][..])
        );
        assert!(!softdeps.contains_key("cifs"));
    }

    #[test]
    fn module_name_strips_directories_and_ko_suffixes_and_normalises() {
        assert_eq!(
            module_name(Path::new("kernel/drivers/nvme/host/nvme-core.ko")),
            "nvme_core"
        );
        assert_eq!(
            module_name(Path::new("kernel/lib/crc64-rocksoft.ko.zst")),
            "crc64_rocksoft"
        );
    }

    #[test]
    fn load_reads_the_index_files_and_tolerates_a_missing_softdep_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("modules.alias"), ALIAS).expect("writable temp dir");
        let error = ModuleIndex::load(dir.path()).expect_err("modules.dep is missing");
        assert!(
            matches!(error, ModulesError::Read { ref path, .. } if path.ends_with("modules.dep"))
        );
        std::fs::write(dir.path().join("modules.dep"), DEP).expect("writable temp dir");
        let index = ModuleIndex::load(dir.path()).expect("alias and dep files suffice");
        assert_eq!(
            index.modules_for("virtio:d00000001v00001AF4"),
            ["virtio_net"]
        );
        assert!(index.softdeps_pre.is_empty());
    }

    /// A fake sysfs: `devices` are (bus, device, modalias) triples.
    fn fake_sysfs(root: &Path, devices: &[(&str, &str, &str)]) {
        for (bus, device, modalias) in devices {
            let dir = root.join("bus").join(bus).join("devices").join(device);
            std::fs::create_dir_all(&dir).expect("writable temp dir");
            if !modalias.is_empty() {
                std::fs::write(dir.join("modalias"), format!("{modalias}\n"))
                    .expect("writable temp dir");
            }
        }
    }

    #[test]
    fn present_modaliases_reads_every_bus_trims_and_skips_devices_without_one() {
        let sysfs = tempfile::tempdir().expect("a temporary directory");
        fake_sysfs(
            sysfs.path(),
            &[
                ("pci", "0000:00:02.0", VIRTIO_NET_PCI),
                ("pci", "0000:00:03.0", E1000_PCI),
                ("acpi", "IPI0001:00", "acpi:IPI0001:"),
                ("scsi", "host0", ""),
            ],
        );
        std::fs::create_dir_all(sysfs.path().join("bus/empty")).expect("writable temp dir");
        let found: Vec<String> = present_modaliases(sysfs.path()).into_iter().collect();
        assert_eq!(found, ["acpi:IPI0001:", VIRTIO_NET_PCI, E1000_PCI]);
        assert!(present_modaliases(&sysfs.path().join("absent")).is_empty());
    }

    /// Runs the loader against a fake sysfs whose "kernel" creates `appears` devices when the
    /// named module is inserted and answers EEXIST for `preloaded` and ENODEV for `broken`.
    fn run_fake(
        start: &[(&str, &str, &str)],
        appears: &[(&str, (&str, &str, &str))],
        preloaded: &[&str],
        broken: &[&str],
        always: &[&str],
    ) -> (LoadReport, Vec<PathBuf>, usize) {
        let sysfs = tempfile::tempdir().expect("a temporary directory");
        fake_sysfs(sysfs.path(), start);
        let mut inserted = Vec::new();
        let mut settles = 0;
        let report = load_rounds(
            &index(),
            Path::new("/lib/modules/test"),
            sysfs.path(),
            always,
            &mut |path| {
                inserted.push(path.to_owned());
                let name = module_name(path);
                let fail = |errno| {
                    Err(ModulesError::Insert {
                        path: path.to_owned(),
                        source: io::Error::from_raw_os_error(errno),
                    })
                };
                if preloaded.contains(&name.as_str()) {
                    return fail(libc::EEXIST);
                }
                if broken.contains(&name.as_str()) {
                    return fail(libc::ENODEV);
                }
                for (module, device) in appears {
                    if *module == name {
                        fake_sysfs(sysfs.path(), &[*device]);
                    }
                }
                Ok(())
            },
            &mut || settles += 1,
        );
        (report, inserted, settles)
    }

    #[test]
    fn loader_rescans_until_devices_created_by_new_drivers_have_drivers() {
        let (report, inserted, settles) = run_fake(
            &[
                ("pci", "0000:00:02.0", VIRTIO_NET_PCI),
                ("pci", "0000:00:1f.2", ICH9_AHCI_PCI),
            ],
            &[
                (
                    "virtio_pci",
                    ("virtio", "virtio0", "virtio:d00000001v00001AF4"),
                ),
                ("ahci", ("scsi", "0:0:0:0", "scsi:t-0x00")),
            ],
            &[],
            &["crct10dif_pclmul"],
            &[],
        );
        let loaded = &report.loaded;
        let at = |name: &str| loaded.iter().position(|entry| entry == name);
        assert!(at("ahci").is_some() && at("virtio_pci").is_some());
        assert!(at("virtio_net") > at("virtio_pci"), "{loaded:?}");
        assert!(at("sd_mod") > at("ahci"), "{loaded:?}");
        assert_eq!(report.rounds, 3, "round 3 finds nothing new");
        assert_eq!(settles, 2);
        assert!(
            inserted
                .iter()
                .all(|path| path.starts_with("/lib/modules/test/kernel"))
        );
        // Each module is inserted once, although sd_mod and later rounds need it again.
        assert_eq!(
            inserted.len(),
            inserted.iter().collect::<HashSet<_>>().len()
        );
        let failed: Vec<&str> = report.failures.iter().map(|f| f.module.as_str()).collect();
        assert_eq!(failed, ["crct10dif_pclmul"]);
        assert!(!loaded.contains(&"crct10dif_pclmul".to_owned()));
        assert!(loaded.contains(&"crct10dif_generic".to_owned()));
    }

    #[test]
    fn loader_treats_eexist_as_loaded_already_and_not_as_a_failure() {
        let (report, inserted, _) = run_fake(
            &[("virtio", "virtio0", "virtio:d00000001v00001AF4")],
            &[],
            &["virtio", "virtio_ring"],
            &[],
            &[],
        );
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.loaded, ["failover", "net_failover", "virtio_net"]);
        assert_eq!(inserted.len(), 5);
    }

    #[test]
    fn loader_loads_the_always_list_and_reports_unknown_names() {
        let (report, _, _) = run_fake(&[], &[], &[], &[], &["ipmi-devintf", "not_shipped"]);
        assert_eq!(report.loaded, ["ipmi_msghandler", "ipmi_devintf"]);
        assert_eq!(report.failures.len(), 1);
        assert!(matches!(
            &report.failures[0].error,
            ModulesError::Unknown { module } if module == "not_shipped"
        ));
        assert_eq!(report.rounds, 2);
    }

    #[test]
    fn loader_with_nothing_to_load_stops_after_one_round_without_settling() {
        let (report, inserted, settles) = run_fake(
            &[(
                "pci",
                "0000:00:00.0",
                "pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00",
            )],
            &[],
            &[],
            &[],
            &[],
        );
        assert!(report.loaded.is_empty() && report.failures.is_empty() && inserted.is_empty());
        assert_eq!((report.rounds, settles), (1, 0));
    }

    #[test]
    fn loader_gives_up_after_the_round_bound_when_devices_keep_appearing() {
        // Each round's driver creates the device the next round needs a driver for.
        let chain = [
            ("e1000", ("pci", "b", VIRTIO_NET_PCI)),
            ("virtio_pci", ("virtio", "c", "virtio:d00000001v00001AF4")),
            ("virtio_net", ("virtio", "d", "virtio:d00000002v00001AF4")),
            ("virtio_blk", ("pci", "e", ICH9_AHCI_PCI)),
            ("ahci", ("scsi", "f", "scsi:t-0x00")),
            ("sd_mod", ("acpi", "g", "acpi:IPI0001:")),
        ];
        let (report, _, settles) = run_fake(&[("pci", "a", E1000_PCI)], &chain, &[], &[], &[]);
        assert_eq!(report.rounds, MAX_ROUNDS);
        assert_eq!(settles, MAX_ROUNDS);
        assert!(report.loaded.contains(&"sd_mod".to_owned()));
        assert!(
            !report.loaded.contains(&"ipmi_si".to_owned()),
            "round 7 never runs"
        );
    }
}
