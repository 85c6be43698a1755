//! Disk wiping of the discovery agent: every writable, non-removable disk is wiped in parallel
//! (one thread per disk), fast (discard, then zero the first and last MiB) or with zeroes over
//! the whole device, with progress reports. Blocking std code and block-device ioctls.
//!
//! Block devices are opened with O_EXCL, so a disk that is mounted, or held by RAID, LVM or
//! device-mapper, fails with a clear error instead of being wiped under its user. Regular files
//! are wiped the same way (without discard), which is what the tests use.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::api::StorageDevice;
use crate::api::agent::{DiskOutcome, DiskProgress, DiskResult, WipeMode};

/// One MiB: the span zeroed at each end of a disk in fast mode. The MBR and GPT header, the
/// backup GPT, and the signatures of md RAID (0.90/1.0 at the end, 1.1/1.2 at the start), LVM
/// and most file systems all lie within it.
const EDGE_BYTES: u64 = 1 << 20;
/// Size of one write when zeroing a whole device.
const WRITE_CHUNK: usize = 4 << 20;
/// Size of one BLKZEROOUT request: small enough to report progress between them.
const ZEROOUT_CHUNK: u64 = 256 << 20;
/// Progress is reported at most this often per disk…
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// …and only after at least this share of the disk (in percent) was done since the last report.
const PROGRESS_PERCENT: u64 = 1;

use super::ioctl;

/// Why a disk could not be wiped; its text goes into [`DiskResult::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    /// The inventory has no `/dev` path for the disk.
    #[error("{name} has no device path in the inventory")]
    NoPath {
        /// Kernel name.
        name: String,
    },
    /// The device could not be opened for writing.
    #[error("cannot open {path} for writing: {source}{hint}", hint = open_hint(source))]
    Open {
        /// Device path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Neither a block device nor a regular file.
    #[error("{path} is not a block device")]
    NotADisk {
        /// Device path.
        path: String,
    },
    /// Its size could not be read.
    #[error("cannot read the size of {path}: {source}")]
    Size {
        /// Device path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// BLKDISCARD failed for a reason other than "not supported".
    #[error("discarding {path} failed: {source}")]
    Discard {
        /// Device path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A write (or BLKZEROOUT) failed.
    #[error("writing zeroes to {path} at byte {offset} failed: {source} (is the disk failing?)")]
    Write {
        /// Device path.
        path: String,
        /// Where.
        offset: u64,
        /// Why.
        source: io::Error,
    },
    /// fsync or BLKFLSBUF failed: the zeroes may not have reached the disk.
    #[error("flushing {path} failed: {source}")]
    Flush {
        /// Device path.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// What to check when opening or writing a disk fails (shared with the image writer).
pub(crate) fn open_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EBUSY) => " (it is in use: mounted, or part of a RAID, LVM or dm volume)",
        Some(libc::ENOENT) => " (the disk disappeared since the inventory was taken)",
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
            " (the device is write-protected, or the agent is not root)"
        }
        _ => "",
    }
}

/// Wipes every device that may be wiped, in parallel, one thread per disk: read-only and
/// removable devices are [`DiskResult::Skipped`], the rest [`DiskResult::Wiped`] or
/// [`DiskResult::Failed`]. `progress` is called from the disks' threads, at most every 250 ms
/// and 1 % per disk, starting at 0 and ending at the total for each disk that is wiped.
/// Outcomes are in the order of `devices`.
pub fn wipe_all(
    devices: &[StorageDevice],
    mode: WipeMode,
    progress: impl Fn(DiskProgress) + Sync,
) -> Vec<DiskOutcome> {
    let progress = &progress;
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .map(|device| {
                let skip = skip_reason(device);
                let handle = skip
                    .is_none()
                    .then(|| scope.spawn(move || wipe_one(device, mode, progress)));
                (device, skip, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(device, skip, handle)| {
                let name = display_name(device);
                let listed_size = device.size.unwrap_or(0);
                if let Some(reason) = skip {
                    info!(disk = %name, %reason, "disk not wiped");
                    return DiskOutcome {
                        name,
                        size_bytes: listed_size,
                        result: DiskResult::Skipped {
                            reason: reason.to_owned(),
                        },
                    };
                }
                let joined = handle.map(|h| h.join());
                let (size_bytes, result) = match joined {
                    Some(Ok(Ok(size))) => (size, DiskResult::Wiped),
                    Some(Ok(Err(error))) => {
                        warn!(disk = %name, %error, "wipe failed");
                        (
                            listed_size,
                            DiskResult::Failed {
                                error: error.to_string(),
                            },
                        )
                    }
                    // A panic is a bug here; the other disks' outcomes still count.
                    Some(Err(_)) | None => (
                        listed_size,
                        DiskResult::Failed {
                            error: format!("wiping {name} stopped on an internal error"),
                        },
                    ),
                };
                DiskOutcome {
                    name,
                    size_bytes,
                    result,
                }
            })
            .collect()
    })
}

/// Why a device is left alone, if it is.
fn skip_reason(device: &StorageDevice) -> Option<&'static str> {
    if device.read_only == Some(true) {
        Some("read-only")
    } else if device.removable == Some(true) {
        Some("removable")
    } else {
        None
    }
}

/// The kernel name, else the last part of the device path.
fn display_name(device: &StorageDevice) -> String {
    device
        .name
        .clone()
        .or_else(|| {
            let path = device.device_name.as_deref()?;
            Some(Path::new(path).file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown disk".to_owned())
}

/// Wipes one device; its size in bytes on success.
fn wipe_one(
    device: &StorageDevice,
    mode: WipeMode,
    progress: &(impl Fn(DiskProgress) + Sync),
) -> Result<u64, WipeError> {
    let name = display_name(device);
    let path = device
        .device_name
        .clone()
        .ok_or_else(|| WipeError::NoPath { name: name.clone() })?;
    let disk = Disk::open(&path)?;
    let mut reporter = Reporter::new(progress, &name, disk.size);
    info!(disk = %name, %path, size = disk.size, %mode, "wiping disk");
    match mode {
        WipeMode::Fast => {
            disk.discard()?;
            disk.write_zeroes(0, EDGE_BYTES.min(disk.size), &mut |_| {})?;
            let tail = disk.size.saturating_sub(EDGE_BYTES);
            disk.write_zeroes(tail, disk.size, &mut |_| {})?;
        }
        WipeMode::Zeroes => {
            let done = disk.zero_out(&mut |done| reporter.update(done))?;
            disk.write_zeroes(done, disk.size, &mut |done| reporter.update(done))?;
        }
    }
    disk.flush()?;
    reporter.finish();
    info!(disk = %name, "disk wiped");
    Ok(disk.size)
}

/// An open device (or file) and what is known about it.
struct Disk {
    file: File,
    path: String,
    size: u64,
    block_device: bool,
}

impl Disk {
    fn open(path: &str) -> Result<Disk, WipeError> {
        let file = OpenOptions::new()
            .write(true)
            // On a block device: exclusive, so a mounted or assembled disk fails (EBUSY).
            // Without O_CREAT it means nothing to a regular file.
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(|source| WipeError::Open {
                path: path.to_owned(),
                source,
            })?;
        let size_error = |source| WipeError::Size {
            path: path.to_owned(),
            source,
        };
        let metadata = file.metadata().map_err(size_error)?;
        let file_type = metadata.file_type();
        let (size, block_device) = if file_type.is_block_device() {
            let mut size = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to `size`.
            let rc = unsafe {
                libc::ioctl(
                    file.as_raw_fd(),
                    ioctl::BLKGETSIZE64 as _,
                    &mut size as *mut u64,
                )
            };
            if rc < 0 {
                return Err(size_error(io::Error::last_os_error()));
            }
            (size, true)
        } else if file_type.is_file() {
            (metadata.len(), false)
        } else {
            return Err(WipeError::NotADisk {
                path: path.to_owned(),
            });
        };
        Ok(Disk {
            file,
            path: path.to_owned(),
            size,
            block_device,
        })
    }

    /// A range ioctl (BLKDISCARD, BLKZEROOUT) over `[start, start + length)`.
    fn range_ioctl(&self, request: u64, start: u64, length: u64) -> io::Result<()> {
        let range = [start, length];
        // SAFETY: both ioctls read two u64 (start, length) through the pointer, which points
        // to `range`.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, range.as_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// BLKDISCARD over the whole device, where the device supports it: SSDs and thin volumes
    /// then forget every block. Devices without discard carry on to the zeroing.
    fn discard(&self) -> Result<(), WipeError> {
        if !self.block_device || self.size == 0 {
            return Ok(());
        }
        match self.range_ioctl(ioctl::BLKDISCARD, 0, self.size) {
            Ok(()) => Ok(()),
            Err(error) if unsupported(&error) => {
                info!(path = %self.path, %error, "discard not supported; zeroing the edges only");
                Ok(())
            }
            Err(source) => Err(WipeError::Discard {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// BLKZEROOUT from the start in [`ZEROOUT_CHUNK`]s (the device zeroes without data
    /// crossing the bus where it can, the kernel writes zero pages where it cannot). Returns
    /// how far it got: the device size, or where BLKZEROOUT turned out to be unsupported (then
    /// plain writes take over), 0 for regular files.
    fn zero_out(&self, progress: &mut dyn FnMut(u64)) -> Result<u64, WipeError> {
        if !self.block_device {
            return Ok(0);
        }
        let mut done = 0;
        while done < self.size {
            let length = ZEROOUT_CHUNK.min(self.size - done);
            match self.range_ioctl(ioctl::BLKZEROOUT, done, length) {
                Ok(()) => {}
                Err(error) if unsupported(&error) => {
                    info!(path = %self.path, %error, "BLKZEROOUT not supported; writing zeroes");
                    return Ok(done);
                }
                Err(source) => {
                    return Err(WipeError::Write {
                        path: self.path.clone(),
                        offset: done,
                        source,
                    });
                }
            }
            done += length;
            progress(done);
        }
        Ok(done)
    }

    /// Writes zeroes over `[start, end)`, telling `progress` how far it got after each chunk.
    fn write_zeroes(
        &self,
        start: u64,
        end: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), WipeError> {
        let zeroes = vec![0u8; WRITE_CHUNK];
        let mut offset = start;
        while offset < end {
            let length = usize::try_from(end - offset).map_or(WRITE_CHUNK, |l| l.min(WRITE_CHUNK));
            self.file
                .write_all_at(&zeroes[..length], offset)
                .map_err(|source| WipeError::Write {
                    path: self.path.clone(),
                    offset,
                    source,
                })?;
            offset += length as u64;
            progress(offset);
        }
        Ok(())
    }

    /// fsync, then BLKFLSBUF so that whoever reads the device next (the kernel's partition
    /// scan, the next OS) sees the zeroes and not cached old blocks.
    fn flush(&self) -> Result<(), WipeError> {
        let flush_error = |source| WipeError::Flush {
            path: self.path.clone(),
            source,
        };
        self.file.sync_all().map_err(flush_error)?;
        if self.block_device {
            // SAFETY: BLKFLSBUF takes no argument.
            let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), ioctl::BLKFLSBUF as _, 0) };
            if rc < 0 {
                return Err(flush_error(io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// Errors meaning "this device cannot do that" rather than "it failed".
fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL)
    )
}

/// Throttles progress reports of one disk.
struct Reporter<'a, F> {
    progress: &'a F,
    name: &'a str,
    total: u64,
    /// Smallest advance worth a report.
    step: u64,
    last_done: u64,
    last_at: Instant,
}

impl<'a, F: Fn(DiskProgress)> Reporter<'a, F> {
    /// Reports 0 done at once.
    fn new(progress: &'a F, name: &'a str, total: u64) -> Reporter<'a, F> {
        let reporter = Reporter {
            progress,
            name,
            total,
            step: (total / 100 * PROGRESS_PERCENT).max(1),
            last_done: 0,
            last_at: Instant::now(),
        };
        reporter.send(0);
        reporter
    }

    fn update(&mut self, done: u64) {
        let now = Instant::now();
        if done.saturating_sub(self.last_done) >= self.step
            && now.duration_since(self.last_at) >= PROGRESS_INTERVAL
        {
            self.send(done);
            self.last_done = done;
            self.last_at = now;
        }
    }

    /// Reports the total, once the data is flushed.
    fn finish(&mut self) {
        self.send(self.total);
    }

    fn send(&self, done: u64) {
        (self.progress)(DiskProgress {
            name: self.name.to_owned(),
            done_bytes: done,
            total_bytes: self.total,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::{Condvar, Mutex};

    const MIB: u64 = 1 << 20;
    const OLD: u8 = 0xaa;

    /// A file of `size` bytes of [`OLD`] data.
    fn old_data(dir: &Path, name: &str, size: u64) -> PathBuf {
        let path = dir.join(name);
        fs_write(&path, &vec![OLD; usize::try_from(size).unwrap()]);
        path
    }

    fn fs_write(path: &Path, data: &[u8]) {
        std::fs::write(path, data).unwrap();
    }

    fn read_all(path: &Path) -> Vec<u8> {
        let mut data = Vec::new();
        File::open(path).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    fn disk(path: &Path) -> StorageDevice {
        StorageDevice {
            name: Some(path.file_name().unwrap().to_string_lossy().into_owned()),
            device_name: Some(path.display().to_string()),
            size: std::fs::metadata(path).ok().map(|m| m.len()),
            ..StorageDevice::default()
        }
    }

    /// Runs `wipe_all`, collecting every progress report.
    fn wipe(devices: &[StorageDevice], mode: WipeMode) -> (Vec<DiskOutcome>, Vec<DiskProgress>) {
        let reports = Mutex::new(Vec::new());
        let outcomes = wipe_all(devices, mode, |p| reports.lock().unwrap().push(p));
        (outcomes, reports.into_inner().unwrap())
    }

    fn assert_all(data: &[u8], byte: u8, what: &str) {
        if let Some(at) = data.iter().position(|b| *b != byte) {
            panic!(
                "{what}: byte {at} is {:#04x}, expected {byte:#04x}",
                data[at]
            );
        }
    }

    #[test]
    fn fast_zeroes_the_first_and_last_mib_and_leaves_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_data(dir.path(), "sda", 8 * MIB);
        let (outcomes, reports) = wipe(&[disk(&path)], WipeMode::Fast);
        assert_eq!(
            outcomes,
            [DiskOutcome {
                name: "sda".into(),
                size_bytes: 8 * MIB,
                result: DiskResult::Wiped
            }]
        );
        let data = read_all(&path);
        let mib = MIB as usize;
        assert_all(&data[..mib], 0, "first MiB");
        assert_all(&data[mib..7 * mib], OLD, "middle");
        assert_all(&data[7 * mib..], 0, "last MiB");
        let done: Vec<u64> = reports.iter().map(|r| r.done_bytes).collect();
        assert_eq!(done, [0, 8 * MIB]);
    }

    #[test]
    fn fast_on_a_disk_smaller_than_two_mib_zeroes_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_data(dir.path(), "tiny", MIB + 512);
        let (outcomes, _) = wipe(&[disk(&path)], WipeMode::Fast);
        assert_eq!(outcomes[0].result, DiskResult::Wiped);
        let data = read_all(&path);
        assert_eq!(data.len() as u64, MIB + 512, "the file did not grow");
        assert_all(&data, 0, "tiny disk");
    }

    #[test]
    fn zeroes_overwrites_everything_and_reports_up_to_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let size = 24 * MIB + 4096;
        let path = old_data(dir.path(), "nvme0n1", size);
        let (outcomes, reports) = wipe(&[disk(&path)], WipeMode::Zeroes);
        assert_eq!(outcomes[0].result, DiskResult::Wiped);
        assert_eq!(outcomes[0].size_bytes, size);
        assert_all(&read_all(&path), 0, "whole disk");
        assert_eq!(reports.first().unwrap().done_bytes, 0);
        assert_eq!(reports.last().unwrap().done_bytes, size);
        assert!(
            reports
                .iter()
                .all(|r| r.total_bytes == size && r.name == "nvme0n1")
        );
        assert!(
            reports
                .windows(2)
                .all(|w| w[0].done_bytes <= w[1].done_bytes),
            "progress never goes back: {reports:?}"
        );
    }

    #[test]
    fn progress_waits_for_250_ms_and_one_percent() {
        let reports = Mutex::new(Vec::new());
        let record = |p: DiskProgress| reports.lock().unwrap().push(p.done_bytes);
        let mut reporter = Reporter::new(&record, "sda", 1000);
        for done in 1..=999 {
            reporter.update(done);
        }
        assert_eq!(*reports.lock().unwrap(), [0], "nothing within 250 ms");
        std::thread::sleep(PROGRESS_INTERVAL + Duration::from_millis(10));
        reporter.update(5);
        assert_eq!(
            *reports.lock().unwrap(),
            [0],
            "less than 1 % since the last report"
        );
        reporter.update(20);
        std::thread::sleep(PROGRESS_INTERVAL + Duration::from_millis(10));
        reporter.update(25);
        assert_eq!(
            *reports.lock().unwrap(),
            [0, 20],
            "1 % but not 250 ms after 20"
        );
        reporter.finish();
        assert_eq!(*reports.lock().unwrap(), [0, 20, 1000]);
    }

    #[test]
    fn read_only_and_removable_disks_are_skipped_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let rom = old_data(dir.path(), "sr0", MIB);
        let stick = old_data(dir.path(), "sdb", MIB);
        let devices = [
            StorageDevice {
                read_only: Some(true),
                ..disk(&rom)
            },
            StorageDevice {
                removable: Some(true),
                read_only: Some(false),
                ..disk(&stick)
            },
        ];
        let (outcomes, reports) = wipe(&devices, WipeMode::Zeroes);
        let results: Vec<_> = outcomes.iter().map(|o| (&*o.name, &o.result)).collect();
        assert_eq!(
            results,
            [
                (
                    "sr0",
                    &DiskResult::Skipped {
                        reason: "read-only".into()
                    }
                ),
                (
                    "sdb",
                    &DiskResult::Skipped {
                        reason: "removable".into()
                    }
                ),
            ]
        );
        assert_eq!(outcomes[0].size_bytes, MIB, "the inventory's size");
        assert_all(&read_all(&rom), OLD, "read-only disk");
        assert_all(&read_all(&stick), OLD, "removable disk");
        assert!(reports.is_empty());
    }

    #[test]
    fn a_missing_device_fails_naming_its_path() {
        let device = StorageDevice {
            name: Some("sdz".into()),
            device_name: Some("/nonexistent/siderite/sdz".into()),
            size: Some(4096),
            ..StorageDevice::default()
        };
        let (outcomes, _) = wipe(&[device], WipeMode::Fast);
        let DiskResult::Failed { error } = &outcomes[0].result else {
            panic!("expected a failure: {outcomes:?}");
        };
        assert!(error.contains("/nonexistent/siderite/sdz"), "{error}");
        assert!(error.contains("disappeared"), "{error}");
        assert_eq!(outcomes[0].size_bytes, 4096);
    }

    #[test]
    fn a_device_without_a_path_fails_and_others_still_get_wiped() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_data(dir.path(), "vda", 2 * MIB);
        let nameless = StorageDevice {
            name: Some("vdb".into()),
            ..StorageDevice::default()
        };
        let (outcomes, _) = wipe(&[nameless, disk(&path)], WipeMode::Fast);
        assert_eq!(
            outcomes[0].result,
            DiskResult::Failed {
                error: "vdb has no device path in the inventory".into()
            }
        );
        assert_eq!(outcomes[1].result, DiskResult::Wiped);
    }

    #[test]
    fn a_directory_is_not_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (outcomes, _) = wipe(&[disk(dir.path())], WipeMode::Fast);
        let DiskResult::Failed { error } = &outcomes[0].result else {
            panic!("expected a failure: {outcomes:?}");
        };
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }

    #[test]
    fn two_disks_are_wiped_at_the_same_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = old_data(dir.path(), "sda", 4 * MIB);
        let b = old_data(dir.path(), "sdb", 6 * MIB);
        // Each disk's first report waits (up to 10 s) until both disks have started: wiping
        // them one after the other would time out here.
        let started = (Mutex::new(Vec::new()), Condvar::new());
        let met = Mutex::new(Vec::new());
        let outcomes = wipe_all(&[disk(&a), disk(&b)], WipeMode::Zeroes, |p| {
            if p.done_bytes != 0 {
                return;
            }
            let (lock, signal) = &started;
            let mut threads = lock.lock().unwrap();
            threads.push(std::thread::current().id());
            signal.notify_all();
            let (threads, timeout) = signal
                .wait_timeout_while(threads, Duration::from_secs(10), |t| t.len() < 2)
                .unwrap();
            met.lock().unwrap().push(!timeout.timed_out());
            drop(threads);
        });
        assert!(
            outcomes.iter().all(|o| o.result == DiskResult::Wiped),
            "{outcomes:?}"
        );
        assert_eq!(*met.lock().unwrap(), [true, true], "both disks ran at once");
        let threads = started.0.lock().unwrap();
        assert_ne!(threads[0], threads[1]);
        assert!(!threads.contains(&std::thread::current().id()));
        assert_all(&read_all(&a), 0, "sda");
        assert_all(&read_all(&b), 0, "sdb");
    }

    // ---- Root tests: loop devices. ----

    /// A loop device over a file of old data, detached on drop.
    struct LoopDevice {
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl LoopDevice {
        fn new(size: u64) -> LoopDevice {
            let dir = tempfile::tempdir().unwrap();
            let backing = old_data(dir.path(), "backing.img", size);
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&backing)
                .output()
                .expect("cannot run losetup (util-linux)");
            assert!(
                out.status.success(),
                "losetup failed (these tests need root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
            LoopDevice { path, _dir: dir }
        }

        fn sysfs(&self, attribute: &str) -> String {
            let name = self
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            std::fs::read_to_string(format!("/sys/block/{name}/{attribute}"))
                .unwrap()
                .trim()
                .to_owned()
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        }
    }

    #[test]
    fn fast_on_a_block_device_discards_it_whole() {
        let device = LoopDevice::new(16 * MIB);
        assert_ne!(
            device.sysfs("queue/discard_max_bytes"),
            "0",
            "the loop device's backing file system cannot discard (punch holes)"
        );
        let (outcomes, reports) = wipe(&[disk(&device.path)], WipeMode::Fast);
        assert_eq!(outcomes[0].result, DiskResult::Wiped, "{outcomes:?}");
        assert_eq!(outcomes[0].size_bytes, 16 * MIB, "BLKGETSIZE64");
        // Only the edges were written: zeroes in the middle come from the discard.
        assert_all(&read_all(&device.path), 0, "discarded loop device");
        assert_eq!(reports.last().unwrap().done_bytes, 16 * MIB);
    }

    #[test]
    fn zeroes_on_a_block_device_zero_it_whole() {
        let device = LoopDevice::new(20 * MIB);
        let (outcomes, reports) = wipe(&[disk(&device.path)], WipeMode::Zeroes);
        assert_eq!(outcomes[0].result, DiskResult::Wiped, "{outcomes:?}");
        assert_all(&read_all(&device.path), 0, "zeroed loop device");
        assert_eq!(reports.last().unwrap().done_bytes, 20 * MIB);
    }

    #[test]
    fn a_block_device_in_use_is_not_wiped() {
        let device = LoopDevice::new(4 * MIB);
        // Held exclusively, as a mount or an assembled RAID holds it.
        let _holder = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&device.path)
            .unwrap();
        let (outcomes, _) = wipe(&[disk(&device.path)], WipeMode::Fast);
        let DiskResult::Failed { error } = &outcomes[0].result else {
            panic!("expected a failure: {outcomes:?}");
        };
        assert!(
            error.contains(&device.path.display().to_string()),
            "{error}"
        );
        assert!(error.contains("in use"), "{error}");
        assert_all(&read_all(&device.path), OLD, "held loop device");
    }
}
