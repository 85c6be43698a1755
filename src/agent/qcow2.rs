//! Just enough of QEMU's qcow2 format (v2 and v3) to turn an image into raw disk contents: the
//! header, the L1 table and the L2 tables, which map each guest cluster to a host offset in the
//! file, to "reads as zeros", or to nothing (also zeros: images with a backing file are refused).
//!
//! The result is a [`Plan`]: the file's data extents in file order, each with where it goes on
//! the disk, and the guest ranges that must read as zeros. Executing a plan needs only one pass
//! over the file from its start, so an image streams from the appliance once (and is hashed on
//! the way) after its metadata was read with a few range requests. Refused, with what to do:
//! encryption, backing files, compressed clusters, external data files, extended L2 entries.
//! Everything read here comes from the network, so every offset and size is checked before use.

/// `QFI\xfb`.
const MAGIC: u32 = 0x5146_49fb;
/// Header fields, big-endian, at these byte offsets (qcow2 spec, "Header").
mod offset {
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const CLUSTER_BITS: usize = 20;
    pub const SIZE: usize = 24;
    pub const CRYPT_METHOD: usize = 32;
    pub const L1_SIZE: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
    /// Version 3 only.
    pub const INCOMPATIBLE_FEATURES: usize = 72;
}
/// The version 2 header's length; version 3 adds fields up to byte 104.
pub const HEADER_V2_BYTES: usize = 72;
pub const HEADER_V3_BYTES: usize = 104;

/// Incompatible feature bits (version 3).
mod incompatible {
    /// Refcounts may be stale; the data and mappings are fine, so this is accepted.
    pub const DIRTY: u64 = 1 << 0;
    pub const CORRUPT: u64 = 1 << 1;
    pub const EXTERNAL_DATA_FILE: u64 = 1 << 2;
    /// Compressed clusters use zstd instead of deflate; compressed clusters are refused anyway.
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    pub const EXTENDED_L2: u64 = 1 << 4;
}

/// Bits 9–55 of an L1 or L2 entry: a host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry flags.
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// Bounds that keep a hostile header from making the agent allocate without limit.
const MAX_CLUSTER_BITS: u32 = 21;
const MIN_CLUSTER_BITS: u32 = 9;
/// A 64 MiB L1 table maps 2^23 L2 tables: far beyond any disk at the smallest clusters
/// worth using.
const MAX_L1_BYTES: u64 = 64 << 20;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    #[error("the image is not qcow2 (no QFI\\xfb magic); is the Environment's image format right?")]
    NotQcow2,
    #[error("qcow2 version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error(
        "the qcow2 image has a backing file; flatten it first (`qemu-img convert -O qcow2 in.qcow2 out.qcow2`)"
    )]
    BackingFile,
    #[error("the qcow2 image is encrypted; decrypt it first (`qemu-img convert` with its secret)")]
    Encrypted,
    #[error(
        "the qcow2 image has compressed clusters (`qemu-img convert -c`); convert it without -c and compress the whole file with gz, xz or zstd instead"
    )]
    CompressedClusters,
    #[error(
        "the qcow2 image uses {0}, which this agent cannot read; convert it with `qemu-img convert -O qcow2`"
    )]
    Feature(&'static str),
    #[error("the qcow2 image is marked corrupt; repair it with `qemu-img check -r all`")]
    MarkedCorrupt,
    #[error("the qcow2 image is malformed: {0}")]
    Malformed(String),
    #[error(
        "the qcow2 image's disk is {size} bytes, larger than the target disk ({max_size} bytes); choose a bigger disk with rootDeviceHints"
    )]
    TooLarge { size: u64, max_size: u64 },
    /// Reading the image's metadata failed (the text says why).
    #[error("{0}")]
    Read(String),
}

/// The parts of the header that matter for conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// Virtual disk size in bytes: the raw image's size.
    pub size: u64,
    pub l1_entries: u32,
    pub l1_table_offset: u64,
}

impl Header {
    /// Decodes and checks a header from the first bytes of the file (at least
    /// [`HEADER_V3_BYTES`], or the whole file if shorter).
    pub fn parse(bytes: &[u8]) -> Result<Header, Qcow2Error> {
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |at: usize| {
            bytes.get(at..at + 8).map(|b| {
                let mut word = [0u8; 8];
                word.copy_from_slice(b);
                u64::from_be_bytes(word)
            })
        };
        let short = || Qcow2Error::Malformed("the header is cut short".to_owned());
        if u32_at(0) != Some(MAGIC) {
            return Err(Qcow2Error::NotQcow2);
        }
        let version = u32_at(offset::VERSION).ok_or_else(short)?;
        if !(2..=3).contains(&version) {
            return Err(Qcow2Error::Version(version));
        }
        if bytes.len() < HEADER_V2_BYTES {
            return Err(short());
        }
        let field32 = |at| u32_at(at).ok_or_else(short);
        let field64 = |at| u64_at(at).ok_or_else(short);
        if field64(offset::BACKING_FILE_OFFSET)? != 0 {
            return Err(Qcow2Error::BackingFile);
        }
        if field32(offset::CRYPT_METHOD)? != 0 {
            return Err(Qcow2Error::Encrypted);
        }
        if version == 3 {
            let features = field64(offset::INCOMPATIBLE_FEATURES)?;
            if features & incompatible::CORRUPT != 0 {
                return Err(Qcow2Error::MarkedCorrupt);
            }
            if features & incompatible::EXTERNAL_DATA_FILE != 0 {
                return Err(Qcow2Error::Feature("an external data file"));
            }
            if features & incompatible::EXTENDED_L2 != 0 {
                return Err(Qcow2Error::Feature("extended L2 entries (subclusters)"));
            }
            let known = incompatible::DIRTY
                | incompatible::CORRUPT
                | incompatible::EXTERNAL_DATA_FILE
                | incompatible::COMPRESSION_TYPE
                | incompatible::EXTENDED_L2;
            if features & !known != 0 {
                return Err(Qcow2Error::Feature("unknown incompatible features"));
            }
        }
        let cluster_bits = field32(offset::CLUSTER_BITS)?;
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Qcow2Error::Malformed(format!(
                "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
            )));
        }
        let header = Header {
            version,
            cluster_bits,
            size: field64(offset::SIZE)?,
            l1_entries: field32(offset::L1_SIZE)?,
            l1_table_offset: field64(offset::L1_TABLE_OFFSET)?,
        };
        if u64::from(header.l1_entries) * 8 > MAX_L1_BYTES {
            return Err(Qcow2Error::Malformed(format!(
                "an L1 table of {} entries",
                header.l1_entries
            )));
        }
        if u64::from(header.l1_entries) < header.l1_entries_needed() {
            return Err(Qcow2Error::Malformed(format!(
                "{} L1 entries cannot map {} bytes",
                header.l1_entries, header.size
            )));
        }
        if !header.l1_table_offset.is_multiple_of(header.cluster_size())
            || header.l1_table_offset == 0
        {
            return Err(Qcow2Error::Malformed(format!(
                "the L1 table offset {} is not a cluster boundary",
                header.l1_table_offset
            )));
        }
        Ok(header)
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Guest bytes one L2 table maps.
    fn l2_span(&self) -> u64 {
        self.cluster_size() * (self.cluster_size() / 8)
    }

    fn l1_entries_needed(&self) -> u64 {
        self.size.div_ceil(self.l2_span())
    }
}

/// File bytes `file_offset..file_offset + len` go to disk bytes `disk_offset..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub file_offset: u64,
    pub disk_offset: u64,
    pub len: u64,
}

/// How to write a qcow2 file as a raw disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The raw image's size.
    pub size: u64,
    /// Data extents, ordered and non-overlapping in the file, merged where contiguous.
    pub data: Vec<Extent>,
    /// Disk ranges `(offset, len)` that must read as zeros, ordered, merged.
    pub zeros: Vec<(u64, u64)>,
    /// The file ranges `(offset, len)` this plan was read from (header, L1, L2 tables), so a
    /// later pass over the file can check they did not change in between.
    pub metadata: Vec<(u64, u64)>,
}

/// Reads the mappings with `read_at(offset, len)` and returns the plan. An image larger than
/// `max_size` (the disk) is refused before its tables are read.
pub fn plan(
    max_size: u64,
    mut read_at: impl FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<Plan, Qcow2Error> {
    let head = read_at(0, HEADER_V3_BYTES).map_err(Qcow2Error::Read)?;
    let header = Header::parse(&head)?;
    if header.size > max_size {
        return Err(Qcow2Error::TooLarge {
            size: header.size,
            max_size,
        });
    }
    let cluster = header.cluster_size();
    let mut plan = Plan {
        size: header.size,
        metadata: vec![(0, head.len() as u64)],
        ..Plan::default()
    };
    let needed = header.l1_entries_needed();
    // `parse` bounded the table to MAX_L1_BYTES.
    let l1_bytes = (needed * 8) as usize;
    let l1 = read_at(header.l1_table_offset, l1_bytes).map_err(Qcow2Error::Read)?;
    if l1.len() != l1_bytes {
        return Err(Qcow2Error::Malformed(
            "the L1 table is cut short".to_owned(),
        ));
    }
    plan.metadata
        .push((header.l1_table_offset, l1_bytes as u64));
    let mut data: Vec<Extent> = Vec::new();
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    let mut add_zeros = |offset: u64, len: u64| match zeros.last_mut() {
        Some((start, length)) if *start + *length == offset => *length += len,
        _ => zeros.push((offset, len)),
    };
    for (index, entry) in l1.chunks_exact(8).enumerate() {
        let entry = be64(entry);
        let guest_start = index as u64 * header.l2_span();
        let span = header.l2_span().min(header.size - guest_start);
        let l2_offset = entry & OFFSET_MASK;
        if l2_offset == 0 {
            add_zeros(guest_start, span);
            continue;
        }
        if !l2_offset.is_multiple_of(cluster) {
            return Err(Qcow2Error::Malformed(format!(
                "L1 entry {index} points into the middle of a cluster"
            )));
        }
        let l2 = read_at(l2_offset, cluster as usize).map_err(Qcow2Error::Read)?;
        if l2.len() as u64 != cluster {
            return Err(Qcow2Error::Malformed(format!(
                "the L2 table at {l2_offset} is cut short"
            )));
        }
        plan.metadata.push((l2_offset, cluster));
        let clusters = span.div_ceil(cluster) as usize;
        for (slot, entry) in l2.chunks_exact(8).take(clusters).enumerate() {
            let entry = be64(entry);
            let guest = guest_start + slot as u64 * cluster;
            let len = cluster.min(header.size - guest);
            if entry & L2_COMPRESSED != 0 {
                return Err(Qcow2Error::CompressedClusters);
            }
            let host = entry & OFFSET_MASK;
            if entry & L2_ZERO != 0 || host == 0 {
                add_zeros(guest, len);
                continue;
            }
            if !host.is_multiple_of(cluster) {
                return Err(Qcow2Error::Malformed(format!(
                    "the cluster at guest offset {guest} is not cluster-aligned in the file"
                )));
            }
            // Merged as they come: images written in guest order (`qemu-img convert`) then
            // need one extent per run, not one per cluster.
            match data.last_mut() {
                Some(last)
                    if last.file_offset + last.len == host
                        && last.disk_offset + last.len == guest =>
                {
                    last.len += len
                }
                _ => data.push(Extent {
                    file_offset: host,
                    disk_offset: guest,
                    len,
                }),
            }
        }
    }
    data.sort_by_key(|e| e.file_offset);
    let mut merged: Vec<Extent> = Vec::with_capacity(data.len());
    for extent in data {
        if let Some(last) = merged.last_mut() {
            if extent.file_offset < last.file_offset + last.len {
                return Err(Qcow2Error::Malformed(format!(
                    "two guest clusters share the file cluster at {}",
                    extent.file_offset
                )));
            }
            if last.file_offset + last.len == extent.file_offset
                && last.disk_offset + last.len == extent.disk_offset
            {
                last.len += extent.len;
                continue;
            }
        }
        merged.push(extent);
    }
    plan.data = merged;
    plan.zeros = zeros;
    Ok(plan)
}

fn be64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made v3 image: 64 KiB clusters, 3 clusters of guest space (the last one half),
    /// L1 at cluster 1, L2 at cluster 2, data clusters stored out of guest order.
    fn tiny_image() -> Vec<u8> {
        let cluster = 65536usize;
        let mut file = vec![0u8; cluster * 5];
        file[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        file[4..8].copy_from_slice(&3u32.to_be_bytes());
        file[20..24].copy_from_slice(&16u32.to_be_bytes());
        file[24..32].copy_from_slice(&(cluster as u64 * 5 / 2).to_be_bytes());
        file[36..40].copy_from_slice(&1u32.to_be_bytes());
        file[40..48].copy_from_slice(&(cluster as u64).to_be_bytes());
        file[100..104].copy_from_slice(&104u32.to_be_bytes());
        // L1[0] → L2 at cluster 2.
        file[cluster..cluster + 8].copy_from_slice(&(2 * cluster as u64).to_be_bytes());
        let l2 = 2 * cluster;
        // guest 0 → file cluster 4; guest 1 → unallocated; guest 2 → file cluster 3.
        file[l2..l2 + 8].copy_from_slice(&(4 * cluster as u64).to_be_bytes());
        file[l2 + 16..l2 + 24].copy_from_slice(&(3 * cluster as u64).to_be_bytes());
        file
    }

    fn plan_of(file: &[u8]) -> Result<Plan, Qcow2Error> {
        plan(1 << 30, |offset, len| {
            let start = (offset as usize).min(file.len());
            let end = (start + len).min(file.len());
            Ok(file[start..end].to_vec())
        })
    }

    #[test]
    fn a_plan_follows_file_order_and_fills_holes_with_zeros() {
        let plan = plan_of(&tiny_image()).expect("valid image");
        let cluster = 65536;
        assert_eq!(plan.size, cluster * 5 / 2);
        assert_eq!(
            plan.data,
            [
                Extent {
                    file_offset: 3 * cluster,
                    disk_offset: 2 * cluster,
                    len: cluster / 2
                },
                Extent {
                    file_offset: 4 * cluster,
                    disk_offset: 0,
                    len: cluster
                },
            ]
        );
        assert_eq!(plan.zeros, [(cluster, cluster)]);
        assert_eq!(
            plan.metadata,
            [(0, 104), (cluster, 8), (2 * cluster, cluster)]
        );
    }

    /// Changes a good image into a bad one.
    type Spoil = fn(&mut Vec<u8>);

    #[test]
    fn refused_images_say_what_to_do() {
        let table: &[(&str, Spoil, Qcow2Error)] = &[
            ("magic", |f| f[0] = 0, Qcow2Error::NotQcow2),
            ("version", |f| f[7] = 4, Qcow2Error::Version(4)),
            ("backing file", |f| f[15] = 200, Qcow2Error::BackingFile),
            ("encryption", |f| f[35] = 2, Qcow2Error::Encrypted),
            ("corrupt", |f| f[79] = 2, Qcow2Error::MarkedCorrupt),
            (
                "external data",
                |f| f[79] = 4,
                Qcow2Error::Feature("an external data file"),
            ),
            (
                "compressed cluster",
                |f| f[2 * 65536] |= 0x40,
                Qcow2Error::CompressedClusters,
            ),
        ];
        for (case, spoil, want) in table {
            let mut file = tiny_image();
            spoil(&mut file);
            assert_eq!(plan_of(&file).expect_err(case), *want, "{case}");
        }
        let text = Qcow2Error::CompressedClusters.to_string();
        assert!(text.contains("without -c"), "{text}");
    }

    #[test]
    fn hostile_headers_are_malformed_not_panics() {
        let table: &[(&str, Spoil)] = &[
            ("cluster bits", |f| f[23] = 40),
            ("huge L1", |f| {
                f[36..40].copy_from_slice(&u32::MAX.to_be_bytes())
            }),
            ("too few L1 entries", |f| {
                f[24..32].copy_from_slice(&(1u64 << 50).to_be_bytes())
            }),
            ("misaligned L1", |f| f[47] = 1),
            ("misaligned L2", |f| f[65536 + 6] |= 0x02),
            ("shared cluster", |f| {
                f[2 * 65536 + 16..2 * 65536 + 24].copy_from_slice(&(4u64 * 65536).to_be_bytes())
            }),
            ("L2 past the end", |f| {
                f[65536..65536 + 8].copy_from_slice(&(64u64 * 65536).to_be_bytes())
            }),
        ];
        for (case, spoil) in table {
            let mut file = tiny_image();
            spoil(&mut file);
            let error = plan_of(&file).expect_err(case);
            assert!(
                matches!(error, Qcow2Error::Malformed(_)),
                "{case}: {error:?}"
            );
        }
        assert!(matches!(
            Header::parse(&tiny_image()[..40]),
            Err(Qcow2Error::Malformed(_))
        ));
        let error = plan(65536, |o, l| Ok(tiny_image()[o as usize..][..l].to_vec()));
        assert_eq!(
            error,
            Err(Qcow2Error::TooLarge {
                size: 163840,
                max_size: 65536
            })
        );
    }

    /// A deterministic stand-in for `fuzz/fuzz_targets/qcow2_plan.rs`: mutated images give an
    /// error or a plan inside the virtual size, never a panic.
    #[test]
    fn mutated_images_never_panic() {
        let seed = tiny_image();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Where the interesting bytes are: the header, the L1 entry, the L2 entries.
        let hot = [0..112, 65536..65544, 131072..131096];
        for _ in 0..20_000 {
            let mut file = seed.clone();
            for _ in 0..=next() % 4 {
                let range = &hot[(next() % 3) as usize];
                let at = range.start + (next() as usize) % (range.end - range.start);
                file[at] = next() as u8;
            }
            if let Ok(plan) = plan_of(&file) {
                for extent in &plan.data {
                    assert!(extent.disk_offset + extent.len <= plan.size, "{plan:?}");
                }
            }
        }
    }
}
