//! The NoCloud config drive: the four seed files fetched from the appliance, written to a new
//! FAT partition labelled `CIDATA` in the last 64 MiB of the disk that just received the image,
//! where cloud-init's NoCloud datasource (and anything using `blkid -L CIDATA` or
//! `/dev/disk/by-label/CIDATA`) finds it.
//!
//! At the end of the disk, as Ironic does: the image's root partition can still grow into the
//! space between. An MBR gets the partition in a free primary slot; a GPT is first stretched
//! to the real end of the disk (the image's backup header and table sit at the image's end, so
//! they move to the disk's last sectors and the usable area grows), then gets the partition.
//! Both tables are edited here in place (a few dozen bytes each) rather than through a crate,
//! so nothing else in the image's sectors changes (boot code, other entries, GUIDs).
//!
//! The seed URL carries the allocation's secret token: it is never logged or put into an
//! error; errors name the file (`user-data`) only.

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::agent::client::{self, FetchError, HttpUrl};
use crate::agent::image::{Disk, ImageError};

/// Size of the config drive partition (Ironic's limit for config drives, too).
pub const PARTITION_BYTES: u64 = 64 << 20;
/// Partitions start on MiB boundaries (what every partitioning tool does since 2010).
const ALIGN_BYTES: u64 = 1 << 20;
/// The largest seed file accepted.
const MAX_FILE_BYTES: usize = 16 << 20;
/// The FAT volume label NoCloud looks for (blkid reports it as written).
pub const LABEL: &str = "CIDATA";

/// The NoCloud seed files: name and whether the drive is useless without it.
const FILES: [(&str, bool); 4] = [
    ("user-data", true),
    ("meta-data", true),
    ("vendor-data", false),
    ("network-config", false),
];

/// MBR layout.
mod mbr {
    pub const SIGNATURE_OFFSET: usize = 510;
    pub const SIGNATURE: [u8; 2] = [0x55, 0xaa];
    pub const TABLE_OFFSET: usize = 446;
    pub const ENTRY_BYTES: usize = 16;
    /// Protective MBR entry type of a GPT disk.
    pub const TYPE_GPT: u8 = 0xee;
    pub const TYPE_FAT12: u8 = 0x01;
    pub const TYPE_FAT16_LBA: u8 = 0x0e;
    pub const TYPE_FAT32_LBA: u8 = 0x0c;
}

/// GPT header layout (UEFI spec 5.3.2), little-endian.
mod gpt {
    pub const SIGNATURE: &[u8; 8] = b"EFI PART";
    pub const HEADER_SIZE: usize = 8 + 4;
    pub const HEADER_CRC: usize = 16;
    pub const MY_LBA: usize = 24;
    pub const ALTERNATE_LBA: usize = 32;
    pub const LAST_USABLE: usize = 48;
    pub const DISK_GUID: usize = 56;
    pub const ENTRIES_LBA: usize = 72;
    pub const ENTRY_COUNT: usize = 80;
    pub const ENTRY_SIZE: usize = 84;
    pub const ENTRIES_CRC: usize = 88;
    /// Entry fields.
    pub const ENTRY_TYPE: usize = 0;
    pub const ENTRY_GUID: usize = 16;
    pub const ENTRY_FIRST: usize = 32;
    pub const ENTRY_LAST: usize = 40;
    pub const ENTRY_NAME: usize = 56;
    /// Microsoft basic data, EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, in GPT's mixed-endian form.
    pub const BASIC_DATA: [u8; 16] = [
        0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99,
        0xc7,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error(
        "the config drive URL in the directive is not http://<IP>:<port>/<path>/ (the URL is secret and not shown)"
    )]
    Url,
    #[error("fetching {file} for the config drive failed: {source}")]
    Fetch {
        file: &'static str,
        source: FetchError,
    },
    #[error("the appliance has no {file} for this machine (404); it is required for NoCloud")]
    Missing { file: &'static str },
    #[error("{file} is larger than {MAX_FILE_BYTES} bytes")]
    TooBig { file: &'static str },
    #[error(
        "the image has no partition table, so the config drive cannot be added; use an image of a whole disk (MBR or GPT)"
    )]
    NoPartitionTable,
    #[error("the image's GPT header is invalid: {0}")]
    BadGpt(String),
    #[error(
        "all four primary MBR partitions of the image are in use; the config drive needs one (use a GPT image, or leave a slot free)"
    )]
    NoFreeSlot,
    #[error(
        "no room for the {size} MiB config drive: its partition would start at byte {start}, but the image's partitions or data reach byte {used}; use a bigger disk"
    )]
    NoRoom { size: u64, start: u64, used: u64 },
    #[error("formatting the config drive failed: {0}")]
    Format(io::Error),
    #[error("{0}")]
    Disk(#[from] ImageError),
}

/// The seed files as fetched; `None`: absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedFiles {
    pub files: Vec<(&'static str, Vec<u8>)>,
}

/// Fetches the seed files from `url` (a directory URL ending in `/`).
pub async fn fetch(url: &str) -> Result<SeedFiles, ConfigDriveError> {
    let base = HttpUrl::parse(url).ok_or(ConfigDriveError::Url)?;
    let mut seed = SeedFiles::default();
    for (file, required) in FILES {
        let fetched = async {
            let response = client::get(&base.join(file), None).await?;
            client::read_body(base.addr, response.into_body(), MAX_FILE_BYTES).await
        };
        match fetched.await {
            Ok(Some(bytes)) => seed.files.push((file, bytes.to_vec())),
            Ok(None) => return Err(ConfigDriveError::TooBig { file }),
            Err(FetchError::Status { status, .. })
                if status == http::StatusCode::NOT_FOUND && !required => {}
            Err(FetchError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                return Err(ConfigDriveError::Missing { file });
            }
            Err(source) => return Err(ConfigDriveError::Fetch { file, source }),
        }
    }
    Ok(seed)
}

/// Adds the config drive partition after the image (which ends at byte `image_end`), formats
/// it and writes the seed files; returns its partition number.
pub fn write(disk: &Disk, image_end: u64, seed: &SeedFiles) -> Result<u32, ConfigDriveError> {
    let sector = disk.sector_size();
    let mut first = vec![0u8; sector as usize];
    disk.read_at(&mut first, 0)?;
    if first[mbr::SIGNATURE_OFFSET..mbr::SIGNATURE_OFFSET + 2] != mbr::SIGNATURE {
        return Err(ConfigDriveError::NoPartitionTable);
    }
    let is_gpt = (0..4).any(|slot| first[mbr_entry(slot) + 4] == mbr::TYPE_GPT);
    let layout = if is_gpt {
        Layout::gpt(disk, image_end)?
    } else {
        Layout::mbr(&first, disk, image_end)?
    };
    let fat_type = format(disk, layout.start, layout.end, seed)?;
    let number = layout.number;
    layout.commit(disk, &mut first, fat_type)?;
    disk.flush()?;
    disk.reread_partitions()?;
    Ok(number)
}

fn mbr_entry(slot: usize) -> usize {
    mbr::TABLE_OFFSET + slot * mbr::ENTRY_BYTES
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Where the partition goes and how to record it.
struct Layout {
    /// Byte range of the partition.
    start: u64,
    end: u64,
    number: u32,
    table: Table,
}

enum Table {
    Mbr {
        slot: usize,
    },
    Gpt {
        header: Vec<u8>,
        entries: Vec<u8>,
        slot: usize,
        old_backup_lba: u64,
    },
}

impl Layout {
    /// The partition's start: the last 64 MiB before `end`, on a MiB boundary, and after
    /// everything in use.
    fn place(end: u64, used: u64) -> Result<u64, ConfigDriveError> {
        let start = end.saturating_sub(PARTITION_BYTES) / ALIGN_BYTES * ALIGN_BYTES;
        if start < used || end < PARTITION_BYTES {
            return Err(ConfigDriveError::NoRoom {
                size: PARTITION_BYTES >> 20,
                start,
                used,
            });
        }
        Ok(start)
    }

    fn mbr(first: &[u8], disk: &Disk, image_end: u64) -> Result<Layout, ConfigDriveError> {
        let sector = disk.sector_size();
        let mut used = image_end;
        let mut free = None;
        for slot in 0..4 {
            let entry = mbr_entry(slot);
            let count = u64::from(le32(first, entry + 12));
            if first[entry + 4] == 0 || count == 0 {
                free = free.or(Some(slot));
                continue;
            }
            // Logical partitions lie inside their extended partition, so the primaries'
            // extents cover everything.
            let lba = u64::from(le32(first, entry + 8));
            used = used.max((lba + count) * sector);
        }
        let slot = free.ok_or(ConfigDriveError::NoFreeSlot)?;
        // An MBR addresses 2^32 sectors; on a bigger disk the drive ends there.
        let end = disk.size().min((1u64 << 32) * sector) / sector * sector;
        let start = Layout::place(end, used)?;
        Ok(Layout {
            start,
            end,
            number: slot as u32 + 1,
            table: Table::Mbr { slot },
        })
    }

    fn gpt(disk: &Disk, image_end: u64) -> Result<Layout, ConfigDriveError> {
        let sector = disk.sector_size();
        let bad = |what: &str| ConfigDriveError::BadGpt(what.to_owned());
        let mut header = vec![0u8; sector as usize];
        disk.read_at(&mut header, sector)?;
        if &header[..8] != gpt::SIGNATURE {
            return Err(bad("no \"EFI PART\" signature at LBA 1"));
        }
        let header_size = le32(&header, gpt::HEADER_SIZE) as usize;
        if !(92..=sector as usize).contains(&header_size) {
            return Err(bad("impossible header size"));
        }
        let mut check = header[..header_size].to_vec();
        put32(&mut check, gpt::HEADER_CRC, 0);
        if crc32fast::hash(&check) != le32(&header, gpt::HEADER_CRC) {
            return Err(bad("header CRC mismatch"));
        }
        let count = le32(&header, gpt::ENTRY_COUNT) as usize;
        let size = le32(&header, gpt::ENTRY_SIZE) as usize;
        if size < 128 || !size.is_multiple_of(8) || count == 0 || count * size > 1 << 20 {
            return Err(bad("impossible partition entry array"));
        }
        let mut entries = vec![0u8; count * size];
        disk.read_at(&mut entries, le64(&header, gpt::ENTRIES_LBA) * sector)?;
        if crc32fast::hash(&entries) != le32(&header, gpt::ENTRIES_CRC) {
            return Err(bad("partition entry array CRC mismatch"));
        }
        let mut used = image_end.max(le64(&header, gpt::ALTERNATE_LBA) * sector + sector);
        let mut free = None;
        for (slot, entry) in entries.chunks_exact(size).enumerate() {
            if entry[..16].iter().all(|&b| b == 0) {
                free = free.or(Some(slot));
            } else {
                used = used.max((le64(entry, gpt::ENTRY_LAST) + 1) * sector);
            }
        }
        let slot = free.ok_or_else(|| bad("every partition entry is in use"))?;
        let table_sectors = ((count * size) as u64).div_ceil(sector);
        let disk_sectors = disk.size() / sector;
        // The backup header in the last sector, its table just before it.
        let last_usable = disk_sectors
            .checked_sub(2 + table_sectors)
            .ok_or_else(|| bad("the disk is too small"))?;
        let end = (last_usable + 1) * sector;
        // Rounding the start down may not be enough room; the end stays the last usable LBA.
        let start = Layout::place(end, used)?;
        Ok(Layout {
            start,
            end,
            number: slot as u32 + 1,
            table: Table::Gpt {
                old_backup_lba: le64(&header, gpt::ALTERNATE_LBA),
                header,
                entries,
                slot,
            },
        })
    }

    /// Records the partition in the table (and for a GPT, moves the backup to the disk's end).
    fn commit(self, disk: &Disk, first: &mut [u8], fat: fatfs::FatType) -> Result<(), ImageError> {
        let sector = disk.sector_size();
        let (first_lba, last_lba) = (self.start / sector, self.end / sector - 1);
        match self.table {
            Table::Mbr { slot } => {
                let entry = mbr_entry(slot);
                let kind = match fat {
                    fatfs::FatType::Fat12 => mbr::TYPE_FAT12,
                    fatfs::FatType::Fat16 => mbr::TYPE_FAT16_LBA,
                    fatfs::FatType::Fat32 => mbr::TYPE_FAT32_LBA,
                };
                // Not bootable; CHS fields say "use LBA" (0xfe/0xff/0xff), as modern tools do.
                let record = &mut first[entry..entry + mbr::ENTRY_BYTES];
                record.copy_from_slice(&[
                    0, 0xfe, 0xff, 0xff, kind, 0xfe, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
                ]);
                // `Layout::mbr` kept the partition below 2^32 sectors.
                put32(record, 8, first_lba as u32);
                put32(record, 12, (last_lba - first_lba + 1) as u32);
                disk.write_at(first, 0)
            }
            Table::Gpt {
                mut header,
                mut entries,
                slot,
                old_backup_lba,
            } => {
                let size = le32(&header, gpt::ENTRY_SIZE) as usize;
                let header_size = le32(&header, gpt::HEADER_SIZE) as usize;
                let disk_sectors = disk.size() / sector;
                let backup_lba = disk_sectors - 1;
                let table_sectors = (entries.len() as u64).div_ceil(sector);
                let entry = &mut entries[slot * size..(slot + 1) * size];
                entry.fill(0);
                entry[gpt::ENTRY_TYPE..gpt::ENTRY_TYPE + 16].copy_from_slice(&gpt::BASIC_DATA);
                // A unique GUID without waiting for the entropy pool: derived from the disk's
                // GUID, as version 4 / variant 1 so tools treat it as random.
                let mut guid: [u8; 16] = Sha256::new()
                    .chain_update(&header[gpt::DISK_GUID..gpt::DISK_GUID + 16])
                    .chain_update(b"siderite config drive")
                    .finalize()[..16]
                    .try_into()
                    .unwrap_or([1; 16]);
                guid[7] = (guid[7] & 0x0f) | 0x40;
                guid[8] = (guid[8] & 0x3f) | 0x80;
                entry[gpt::ENTRY_GUID..gpt::ENTRY_GUID + 16].copy_from_slice(&guid);
                put64(entry, gpt::ENTRY_FIRST, first_lba);
                put64(entry, gpt::ENTRY_LAST, last_lba);
                for (i, unit) in "config-drive".encode_utf16().enumerate() {
                    entry[gpt::ENTRY_NAME + 2 * i..gpt::ENTRY_NAME + 2 * i + 2]
                        .copy_from_slice(&unit.to_le_bytes());
                }
                let entries_crc = crc32fast::hash(&entries);
                put64(&mut header, gpt::ALTERNATE_LBA, backup_lba);
                put64(
                    &mut header,
                    gpt::LAST_USABLE,
                    backup_lba - table_sectors - 1,
                );
                put32(&mut header, gpt::ENTRIES_CRC, entries_crc);
                let seal = |h: &mut Vec<u8>| {
                    put32(h, gpt::HEADER_CRC, 0);
                    let crc = crc32fast::hash(&h[..header_size]);
                    put32(h, gpt::HEADER_CRC, crc);
                };
                let mut backup = header.clone();
                put64(&mut backup, gpt::MY_LBA, backup_lba);
                put64(&mut backup, gpt::ALTERNATE_LBA, 1);
                put64(&mut backup, gpt::ENTRIES_LBA, backup_lba - table_sectors);
                seal(&mut header);
                seal(&mut backup);
                // The backup first, then the primary: an interruption leaves the old primary,
                // which still describes the image.
                disk.write_at(&entries, (backup_lba - table_sectors) * sector)?;
                disk.write_at(&backup, backup_lba * sector)?;
                if old_backup_lba != backup_lba && old_backup_lba > 1 {
                    // The image's old backup header, now in the free space: erase it so no
                    // tool mistakes it for the disk's.
                    disk.write_at(&vec![0u8; sector as usize], old_backup_lba * sector)?;
                }
                disk.write_at(&entries, le64(&header, gpt::ENTRIES_LBA) * sector)?;
                disk.write_at(&header, sector)?;
                // The protective MBR covers the whole disk (up to what 32 bits can say).
                if let Some(slot) = (0..4).find(|&s| first[mbr_entry(s) + 4] == mbr::TYPE_GPT) {
                    let covered = (disk_sectors - 1).min(u64::from(u32::MAX)) as u32;
                    put32(first, mbr_entry(slot) + 12, covered);
                    disk.write_at(first, 0)?;
                }
                Ok(())
            }
        }
    }
}

/// Formats `start..end` as FAT labelled CIDATA and writes the seed files; returns the FAT type.
fn format(
    disk: &Disk,
    start: u64,
    end: u64,
    seed: &SeedFiles,
) -> Result<fatfs::FatType, ConfigDriveError> {
    // Old signatures at either end of the region (a file system, RAID or LVM of the disk's
    // past) would make blkid see two things and report neither.
    let zeroes = vec![0u8; ALIGN_BYTES as usize];
    disk.write_at(&zeroes, start)?;
    disk.write_at(&zeroes, end - ALIGN_BYTES)?;
    let mut label = [b' '; 11];
    label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
    let format_error = ConfigDriveError::Format;
    let mut slice = Slice {
        disk,
        start,
        len: end - start,
        position: 0,
    };
    fatfs::format_volume(
        &mut slice,
        fatfs::FormatVolumeOptions::new().volume_label(label),
    )
    .map_err(format_error)?;
    write_label_entry(&mut slice, &label).map_err(format_error)?;
    slice.position = 0;
    let fs = fatfs::FileSystem::new(&mut slice, fatfs::FsOptions::new()).map_err(format_error)?;
    let fat_type = fs.fat_type();
    {
        let root = fs.root_dir();
        for (name, bytes) in &seed.files {
            let mut file = root.create_file(name).map_err(format_error)?;
            file.truncate().map_err(format_error)?;
            file.write_all(bytes).map_err(format_error)?;
        }
    }
    fs.unmount().map_err(format_error)?;
    Ok(fat_type)
}

/// The label also as a volume-ID entry at the top of the root directory, where mkfs.vfat and
/// Windows put it and where blkid looks first (fatfs writes it only into the boot sector).
fn write_label_entry(volume: &mut Slice<'_>, label: &[u8; 11]) -> io::Result<()> {
    let mut boot = [0u8; 512];
    volume.seek(SeekFrom::Start(0))?;
    volume.read_exact(&mut boot)?;
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([boot[at], boot[at + 1]]));
    let bytes_per_sector = u16_at(11);
    let sectors_per_cluster = u64::from(boot[13]);
    let reserved = u16_at(14);
    let fats = u64::from(boot[16]);
    let root_entries = u16_at(17);
    let root = if root_entries != 0 {
        // FAT12/16: a fixed root directory after the FATs.
        (reserved + fats * u16_at(22)) * bytes_per_sector
    } else {
        // FAT32: the root directory is a cluster chain from `root_cluster`.
        let data = (reserved + fats * u64::from(le32(&boot, 36))) * bytes_per_sector;
        data + (u64::from(le32(&boot, 44)) - 2) * sectors_per_cluster * bytes_per_sector
    };
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(label);
    entry[11] = 0x08; // ATTR_VOLUME_ID
    volume.seek(SeekFrom::Start(root))?;
    volume.write_all(&entry)
}

/// A byte range of the disk as a seekable file, for fatfs.
struct Slice<'a> {
    disk: &'a Disk,
    start: u64,
    len: u64,
    position: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.position)) as usize;
        self.disk
            .read_at(&mut buf[..n], self.start + self.position)
            .map_err(io::Error::other)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Write for Slice<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.position)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "end of the partition",
            ));
        }
        self.disk
            .write_at(&buf[..n], self.start + self.position)
            .map_err(io::Error::other)?;
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        match target {
            Some(at) if at <= self.len => {
                self.position = at;
                Ok(at)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}
