//! Writes a disk image onto a disk: streamed from the appliance over HTTP, hashed as it arrives
//! (the directive's SHA-256 or SHA-512 of the file as served), decompressed on the fly (gz, xz,
//! zstd), converted from qcow2 when needed, written, flushed, and verified by reading the
//! written region back and comparing it with what was written. Blocking code, run on a blocking
//! thread; the disk is any [`File`] (a block device in the agent, a regular file in tests).
//!
//! The whole file is hashed, so a raw image is written *before* its checksum is known: a
//! mismatch fails the deployment after the disk was overwritten (the disk is the target, its
//! old contents are not kept either way). Staging the file first would need RAM the size of
//! the image. A qcow2 image is read as a metadata pass (header, L1 and L2 tables with HTTP
//! range requests) and one streaming pass over the whole file, which writes the data clusters
//! and checks the metadata did not change in between. A *compressed* qcow2 file cannot be
//! mapped before it is decompressed, so it is staged in RAM, up to a limit the caller sets
//! (half the memory available), and refused with advice beyond that.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256, Sha512};

use crate::agent::client::{self, BlockingBody, HttpUrl};
use crate::agent::qcow2::{self, Qcow2Error};
use crate::api::agent::{ImageChecksum, ImageDeployment};
use crate::api::{ImageCompression, ImageFormat};

/// Size of one disk write and of one read when verifying.
const CHUNK: usize = 4 << 20;

use super::ioctl;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the directive's {algorithm} checksum {hex:?} is not {digits} hex digits")]
    BadChecksum {
        algorithm: &'static str,
        hex: String,
        digits: usize,
    },
    #[error("the image URL {url:?} is not http://<IP>:<port>/<path> (the agent has no DNS)")]
    Url { url: String },
    #[error("downloading the image from {url} failed: {detail}")]
    Download { url: String, detail: String },
    #[error(
        "checksum mismatch: the image from {url} has {algorithm} {actual}, expected {expected} (the appliance's cache or the Environment's checksum is wrong)"
    )]
    ChecksumMismatch {
        url: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "decompressing the image ({compression}) failed: {detail}; is the Environment's compression right?"
    )]
    Decompress {
        compression: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Qcow2(#[from] Qcow2Error),
    #[error(
        "the qcow2 image's metadata changed between reading its tables and streaming it; was the file at the URL replaced?"
    )]
    Changed,
    #[error(
        "the image ({image} bytes or more) does not fit on {path} ({disk} bytes); choose a bigger disk with rootDeviceHints"
    )]
    TooLarge {
        path: PathBuf,
        image: u64,
        disk: u64,
    },
    #[error(
        "the compressed qcow2 image decompresses to more than {limit} bytes, half of the RAM available for staging it; serve the qcow2 file uncompressed (it streams without staging) or as a compressed raw image"
    )]
    StagingLimit { limit: u64 },
    #[error("{op} {path} failed: {source}{hint}", hint = super::wipe::open_hint(source))]
    Disk {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: PathBuf },
    #[error(
        "verifying {path} failed: bytes {offset}..{end} read back differ from what was written (is the disk failing?)"
    )]
    Verify {
        path: PathBuf,
        offset: u64,
        end: u64,
    },
}

/// The disk (or a file standing in for one) an image goes to, opened read-write and, for a
/// block device, exclusively: a mounted or assembled disk fails with EBUSY instead of being
/// overwritten under its user.
pub struct Disk {
    file: File,
    path: PathBuf,
    size: u64,
    sector_size: u64,
    block_device: bool,
}

impl Disk {
    pub fn open(path: &Path) -> Result<Disk, ImageError> {
        let disk_error = |op, source| ImageError::Disk {
            op,
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(|e| disk_error("opening", e))?;
        let metadata = file.metadata().map_err(|e| disk_error("inspecting", e))?;
        let mut disk = Disk {
            file,
            path: path.to_owned(),
            size: metadata.len(),
            sector_size: 512,
            block_device: metadata.file_type().is_block_device(),
        };
        if disk.block_device {
            let mut size = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to `size`.
            let rc = unsafe {
                libc::ioctl(
                    disk.file.as_raw_fd(),
                    ioctl::BLKGETSIZE64 as _,
                    &mut size as *mut u64,
                )
            };
            if rc < 0 {
                return Err(disk_error(
                    "reading the size of",
                    io::Error::last_os_error(),
                ));
            }
            let mut sector: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the pointer, which points to `sector`.
            let rc = unsafe {
                libc::ioctl(
                    disk.file.as_raw_fd(),
                    ioctl::BLKSSZGET as _,
                    &mut sector as *mut libc::c_int,
                )
            };
            if rc < 0 || sector < 512 {
                return Err(disk_error(
                    "reading the sector size of",
                    io::Error::last_os_error(),
                ));
            }
            disk.size = size;
            disk.sector_size = sector as u64;
        } else if !metadata.file_type().is_file() {
            return Err(ImageError::NotADisk {
                path: path.to_owned(),
            });
        }
        Ok(disk)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical sector size: 512, or 4096 on 4Kn disks.
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    pub(crate) fn error(&self, op: &'static str, source: io::Error) -> ImageError {
        ImageError::Disk {
            op,
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), ImageError> {
        if offset + bytes.len() as u64 > self.size {
            return Err(ImageError::TooLarge {
                path: self.path.clone(),
                image: offset + bytes.len() as u64,
                disk: self.size,
            });
        }
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| self.error("writing", e))
    }

    pub(crate) fn read_at(&self, bytes: &mut [u8], offset: u64) -> Result<(), ImageError> {
        self.file
            .read_exact_at(bytes, offset)
            .map_err(|e| self.error("reading", e))
    }

    /// Makes `offset..offset + len` read as zeros: BLKZEROOUT on a disk (the device may do it
    /// without transferring zeroes), a punched hole in a file, else written zeroes.
    fn zero(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        let fd = self.file.as_raw_fd();
        let done = if self.block_device {
            let range = [offset, len];
            // SAFETY: BLKZEROOUT reads two u64 from the pointer, which points to `range`.
            unsafe { libc::ioctl(fd, ioctl::BLKZEROOUT as _, range.as_ptr()) == 0 }
        } else {
            // SAFETY: plain integer arguments on an open descriptor.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                ) == 0
            }
        };
        if done {
            return Ok(());
        }
        let zeroes = vec![0u8; CHUNK.min(len as usize)];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeroes.len() as u64) as usize;
            self.write_at(&zeroes[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Gets everything written onto the medium and drops the cached copy, so that what is read
    /// next comes from the disk itself.
    pub fn flush(&self) -> Result<(), ImageError> {
        self.file
            .sync_all()
            .map_err(|e| self.error("flushing", e))?;
        let fd = self.file.as_raw_fd();
        if self.block_device {
            // SAFETY: BLKFLSBUF takes no argument.
            if unsafe { libc::ioctl(fd, ioctl::BLKFLSBUF as _, 0) } < 0 {
                return Err(self.error("dropping the cache of", io::Error::last_os_error()));
            }
        } else {
            // Best effort: a regular file stands in for a disk only in tests.
            // SAFETY: plain integer arguments on an open descriptor.
            unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        Ok(())
    }

    /// Asks the kernel to read the partition table again (a no-op for a regular file).
    pub fn reread_partitions(&self) -> Result<(), ImageError> {
        if !self.block_device {
            return Ok(());
        }
        // SAFETY: BLKRRPART takes no argument.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), ioctl::BLKRRPART as _, 0) } < 0 {
            return Err(self.error(
                "re-reading the partition table of",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// Where the image's bytes come from: the whole file as a stream, and pieces of it.
pub trait Source {
    /// The whole file from its first byte.
    fn stream(&mut self) -> Result<Box<dyn Read + '_>, ImageError>;
    /// `len` bytes at `offset` (fewer only at the end of the file).
    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String>;
}

/// The image at an `http://` URL on the appliance, which answers range requests.
pub struct HttpSource {
    handle: tokio::runtime::Handle,
    url: HttpUrl,
    text: String,
}

impl HttpSource {
    /// `handle`: see [`BlockingBody::new`].
    pub fn new(handle: tokio::runtime::Handle, url: &str) -> Result<HttpSource, ImageError> {
        let parsed = HttpUrl::parse(url).ok_or_else(|| ImageError::Url {
            url: url.to_owned(),
        })?;
        Ok(HttpSource {
            handle,
            url: parsed,
            text: url.to_owned(),
        })
    }
}

impl Source for HttpSource {
    fn stream(&mut self) -> Result<Box<dyn Read + '_>, ImageError> {
        let response = self
            .handle
            .block_on(client::get(&self.url, None))
            .map_err(|e| ImageError::Download {
                url: self.text.clone(),
                detail: e.to_string(),
            })?;
        Ok(Box::new(BlockingBody::new(
            self.handle.clone(),
            self.url.addr,
            response.into_body(),
        )))
    }

    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        let url = &self.url;
        let fetch = async {
            let response = client::get(url, Some((offset, offset + len as u64))).await?;
            client::read_body(url.addr, response.into_body(), len).await
        };
        match self.handle.block_on(fetch) {
            Ok(Some(bytes)) => Ok(bytes.to_vec()),
            Ok(None) => Err(format!(
                "reading {len} bytes at {offset} of {}: the answer was longer",
                self.text
            )),
            Err(error) => Err(format!(
                "reading {len} bytes at {offset} of {}: {error}",
                self.text
            )),
        }
    }
}

/// What was written and verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Size of the raw image on the disk.
    pub image_bytes: u64,
}

/// Writes `image` from `source` onto `disk` and verifies it. `stage_limit` bounds the RAM used
/// to stage a compressed qcow2 file; `progress` is told the bytes written so far, now and then.
pub fn write_image(
    source: &mut dyn Source,
    image: &ImageDeployment,
    disk: &Disk,
    stage_limit: u64,
    progress: &dyn Fn(u64),
) -> Result<Written, ImageError> {
    let expected = Expected::parse(&image.checksum)?;
    let regions = match (image.format, image.compression) {
        (ImageFormat::Raw, compression) => {
            let mut hashed = Hashing::new(source.stream()?, &expected);
            let mut sink = Sequential::new(disk, progress);
            let result = decompress(compression, &mut hashed, &mut sink);
            // The first real cause: a broken download or a full disk explains a decoder error.
            hashed.failure(&image.url)?;
            sink.failure()?;
            result?;
            let region = sink.finish()?;
            expected.check(&image.url, hashed.digest(&image.url)?)?;
            vec![region]
        }
        (ImageFormat::Qcow2, ImageCompression::None) => {
            let mut tables = Vec::new();
            let plan = qcow2::plan(disk.size(), |offset, len| {
                let bytes = source.read_at(offset, len)?;
                tables.push((offset, bytes.len() as u64, sha256(&bytes)));
                Ok(bytes)
            })?;
            let mut hashed = Hashing::new(source.stream()?, &expected);
            let mut watched = Watching::new(&mut hashed, tables);
            let result = apply_plan(&plan, &mut watched, disk, progress);
            let unchanged = watched.unchanged();
            hashed.failure(&image.url)?;
            let regions = result?;
            expected.check(&image.url, hashed.digest(&image.url)?)?;
            if !unchanged {
                return Err(ImageError::Changed);
            }
            regions
        }
        (ImageFormat::Qcow2, compression) => {
            let mut hashed = Hashing::new(source.stream()?, &expected);
            let mut staged = Staging {
                bytes: Vec::new(),
                limit: stage_limit,
                over: false,
            };
            let result = decompress(compression, &mut hashed, &mut staged);
            hashed.failure(&image.url)?;
            if staged.over {
                return Err(ImageError::StagingLimit { limit: stage_limit });
            }
            result?;
            expected.check(&image.url, hashed.digest(&image.url)?)?;
            let file = staged.bytes;
            let plan = qcow2::plan(disk.size(), |offset, len| {
                Ok(slice_at(&file, offset, len).to_vec())
            })?;
            apply_plan(&plan, &mut &file[..], disk, progress)?
        }
    };
    disk.flush()?;
    verify(disk, &regions)?;
    Ok(Written {
        image_bytes: regions.iter().map(|r| r.offset + r.len).max().unwrap_or(0),
    })
}

fn slice_at(file: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(file.len());
    &file[start..start.saturating_add(len).min(file.len())]
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The checksum the file must have.
struct Expected {
    algorithm: &'static str,
    hex: String,
}

impl Expected {
    fn parse(checksum: &ImageChecksum) -> Result<Expected, ImageError> {
        let (algorithm, hex, digits) = match checksum {
            ImageChecksum::Sha256(hex) => ("sha256", hex, 64),
            ImageChecksum::Sha512(hex) => ("sha512", hex, 128),
        };
        if hex.len() != digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ImageError::BadChecksum {
                algorithm,
                hex: hex.clone(),
                digits,
            });
        }
        Ok(Expected {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    fn check(&self, url: &str, actual: String) -> Result<(), ImageError> {
        if actual == self.hex {
            return Ok(());
        }
        Err(ImageError::ChecksumMismatch {
            url: url.to_owned(),
            algorithm: self.algorithm,
            expected: self.hex.clone(),
            actual,
        })
    }
}

enum FileHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// A reader that hashes everything read through it, and keeps the error that stopped it so
/// that a decoder's vaguer complaint about the same event does not hide it.
struct Hashing<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: FileHasher,
    error: Option<io::Error>,
}

impl<'a> Hashing<'a> {
    fn new(inner: Box<dyn Read + 'a>, expected: &Expected) -> Hashing<'a> {
        let hasher = match expected.algorithm {
            "sha256" => FileHasher::Sha256(Sha256::new()),
            _ => FileHasher::Sha512(Sha512::new()),
        };
        Hashing {
            inner,
            hasher,
            error: None,
        }
    }

    /// The download's own failure, if it had one.
    fn failure(&mut self, url: &str) -> Result<(), ImageError> {
        match self.error.take() {
            None => Ok(()),
            Some(error) => Err(ImageError::Download {
                url: url.to_owned(),
                detail: error.to_string(),
            }),
        }
    }

    /// Reads what the consumer left (trailing bytes after a compressed stream) and returns the
    /// hex digest of the whole file.
    fn digest(mut self, url: &str) -> Result<String, ImageError> {
        if io::copy(&mut self, &mut io::sink()).is_err() {
            self.failure(url)?;
        }
        let bytes: Vec<u8> = match self.hasher {
            FileHasher::Sha256(h) => h.finalize().to_vec(),
            FileHasher::Sha512(h) => h.finalize().to_vec(),
        };
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                match &mut self.hasher {
                    FileHasher::Sha256(h) => h.update(&buf[..n]),
                    FileHasher::Sha512(h) => h.update(&buf[..n]),
                }
                Ok(n)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Err(error),
            Err(error) => {
                let copy = io::Error::new(error.kind(), error.to_string());
                self.error = Some(error);
                Err(copy)
            }
        }
    }
}

/// Decompresses `input` into `output`, streaming.
fn decompress(
    compression: ImageCompression,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), ImageError> {
    let name = match compression {
        ImageCompression::None => "none",
        ImageCompression::Gz => "gz",
        ImageCompression::Xz => "xz",
        ImageCompression::Zstd => "zstd",
    };
    let failed = |detail: String| ImageError::Decompress {
        compression: name,
        detail,
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    match compression {
        ImageCompression::None => io::copy(&mut input, output)
            .map(drop)
            .map_err(|e| failed(e.to_string())),
        // Multi-member: `pigz` and concatenated gzip files are valid gzip.
        ImageCompression::Gz => io::copy(&mut flate2::bufread::MultiGzDecoder::new(input), output)
            .map(drop)
            .map_err(|e| failed(e.to_string())),
        ImageCompression::Xz => {
            lzma_rs::xz_decompress(&mut input, &mut &mut *output).map_err(|e| failed(e.to_string()))
        }
        ImageCompression::Zstd => {
            // A zstd file may hold several frames (`pzstd`, `zstd --adapt` in pieces); the
            // streaming decoder reads one at a time.
            loop {
                let mut frame = ruzstd::decoding::StreamingDecoder::new(&mut input)
                    .map_err(|e| failed(e.to_string()))?;
                io::copy(&mut frame, output).map_err(|e| failed(e.to_string()))?;
                match input.fill_buf() {
                    Ok([]) => return Ok(()),
                    Ok(_) => {}
                    Err(error) => return Err(failed(error.to_string())),
                }
            }
        }
    }
}

/// A written region and what it must read back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    offset: u64,
    len: u64,
    /// SHA-256 of the bytes; `None`: zeros.
    digest: Option<[u8; 32]>,
}

/// Writes a stream to the disk from its first byte, hashing it for the read-back check.
struct Sequential<'a> {
    disk: &'a Disk,
    progress: &'a dyn Fn(u64),
    position: u64,
    buffer: Vec<u8>,
    hasher: Sha256,
    error: Option<ImageError>,
}

impl<'a> Sequential<'a> {
    fn new(disk: &'a Disk, progress: &'a dyn Fn(u64)) -> Sequential<'a> {
        Sequential {
            disk,
            progress,
            position: 0,
            buffer: Vec::with_capacity(CHUNK),
            hasher: Sha256::new(),
            error: None,
        }
    }

    fn write_buffer(&mut self) -> Result<(), ImageError> {
        self.disk.write_at(&self.buffer, self.position)?;
        self.hasher.update(&self.buffer);
        self.position += self.buffer.len() as u64;
        self.buffer.clear();
        (self.progress)(self.position);
        Ok(())
    }

    fn failure(&mut self) -> Result<(), ImageError> {
        self.error.take().map_or(Ok(()), Err)
    }

    fn finish(mut self) -> Result<Region, ImageError> {
        self.write_buffer()?;
        Ok(Region {
            offset: 0,
            len: self.position,
            digest: Some(self.hasher.finalize().into()),
        })
    }
}

impl Write for Sequential<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == CHUNK
            && let Err(error) = self.write_buffer()
        {
            let text = error.to_string();
            self.error = Some(error);
            return Err(io::Error::other(text));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Collects a decompressed qcow2 file in memory, up to a limit.
struct Staging {
    bytes: Vec<u8>,
    limit: u64,
    over: bool,
}

impl Write for Staging {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if (self.bytes.len() + bytes.len()) as u64 > self.limit {
            // The caller names the limit.
            self.over = true;
            return Err(io::Error::other("the staging limit is reached"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes a stream through, hashing the byte ranges of the qcow2 tables that were read
/// separately, to tell whether the stream has the same tables.
struct Watching<'a> {
    inner: &'a mut dyn Read,
    position: u64,
    /// `(offset, len, digest seen by the metadata pass, hasher over the stream)`, by offset.
    ranges: Vec<(u64, u64, [u8; 32], Sha256)>,
}

impl<'a> Watching<'a> {
    fn new(inner: &'a mut dyn Read, mut tables: Vec<(u64, u64, [u8; 32])>) -> Watching<'a> {
        tables.sort_by_key(|t| t.0);
        Watching {
            inner,
            position: 0,
            ranges: tables
                .into_iter()
                .map(|(o, l, d)| (o, l, d, Sha256::new()))
                .collect(),
        }
    }

    /// Whether every table range went by and hashed the same.
    fn unchanged(mut self) -> bool {
        let _ = io::copy(&mut self, &mut io::sink());
        let end = self.position;
        self.ranges.into_iter().all(|(offset, len, seen, hasher)| {
            offset + len <= end && <[u8; 32]>::from(hasher.finalize()) == seen
        })
    }
}

impl Read for Watching<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.position, self.position + n as u64);
        for (offset, len, _, hasher) in &mut self.ranges {
            let (from, to) = ((*offset).max(start), (*offset + *len).min(end));
            if from < to {
                hasher.update(&buf[(from - start) as usize..(to - start) as usize]);
            }
        }
        self.position = end;
        Ok(n)
    }
}

/// Executes a qcow2 plan over one pass of the file.
fn apply_plan(
    plan: &qcow2::Plan,
    stream: &mut dyn Read,
    disk: &Disk,
    progress: &dyn Fn(u64),
) -> Result<Vec<Region>, ImageError> {
    if plan.size > disk.size() {
        return Err(ImageError::TooLarge {
            path: disk.path().to_owned(),
            image: plan.size,
            disk: disk.size(),
        });
    }
    let short = || ImageError::Qcow2(Qcow2Error::Malformed("the file ends early".to_owned()));
    let read_error = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            short()
        } else {
            ImageError::Qcow2(Qcow2Error::Read(e.to_string()))
        }
    };
    let mut regions = Vec::with_capacity(plan.data.len() + plan.zeros.len());
    let mut position = 0u64;
    let mut written = 0u64;
    let mut buffer = vec![0u8; CHUNK];
    for extent in &plan.data {
        let gap = extent.file_offset - position;
        let skipped =
            io::copy(&mut (&mut *stream).take(gap), &mut io::sink()).map_err(read_error)?;
        if skipped != gap {
            return Err(short());
        }
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while done < extent.len {
            let n = (extent.len - done).min(CHUNK as u64) as usize;
            stream.read_exact(&mut buffer[..n]).map_err(read_error)?;
            disk.write_at(&buffer[..n], extent.disk_offset + done)?;
            hasher.update(&buffer[..n]);
            done += n as u64;
            written += n as u64;
            progress(written);
        }
        regions.push(Region {
            offset: extent.disk_offset,
            len: extent.len,
            digest: Some(hasher.finalize().into()),
        });
        position = extent.file_offset + extent.len;
    }
    for &(offset, len) in &plan.zeros {
        disk.zero(offset, len)?;
        regions.push(Region {
            offset,
            len,
            digest: None,
        });
    }
    Ok(regions)
}

/// Reads every region back and compares.
fn verify(disk: &Disk, regions: &[Region]) -> Result<(), ImageError> {
    let mut buffer = vec![0u8; CHUNK];
    for region in regions {
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mismatch = || ImageError::Verify {
            path: disk.path().to_owned(),
            offset: region.offset,
            end: region.offset + region.len,
        };
        while done < region.len {
            let n = (region.len - done).min(CHUNK as u64) as usize;
            disk.read_at(&mut buffer[..n], region.offset + done)?;
            match region.digest {
                Some(_) => hasher.update(&buffer[..n]),
                None if buffer[..n].iter().any(|&b| b != 0) => return Err(mismatch()),
                None => {}
            }
            done += n as u64;
        }
        if let Some(digest) = region.digest
            && <[u8; 32]>::from(hasher.finalize()) != digest
        {
            return Err(mismatch());
        }
    }
    Ok(())
}

/// Half of `MemAvailable` in `/proc/meminfo`: what a compressed qcow2 image may use for staging
/// (the agent runs from RAM and needs the rest); 0 when it cannot be read.
pub fn staging_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// The file's bytes, served from memory.
    pub(crate) struct Memory(pub Vec<u8>);

    impl Source for Memory {
        fn stream(&mut self) -> Result<Box<dyn Read + '_>, ImageError> {
            Ok(Box::new(&self.0[..]))
        }
        fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
            Ok(slice_at(&self.0, offset, len).to_vec())
        }
    }

    const MIB: u64 = 1 << 20;

    /// Bytes that differ everywhere (so a misplaced cluster shows), with a zero run in the
    /// middle (so qcow2 leaves it unallocated).
    pub(crate) fn pattern(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let zeros = len / 3..len / 2;
        bytes[zeros].fill(0);
        bytes
    }

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn deployment(
        file: &[u8],
        format: ImageFormat,
        compression: ImageCompression,
    ) -> ImageDeployment {
        ImageDeployment {
            url: "http://127.0.0.1:1/image".into(),
            checksum: ImageChecksum::Sha512(hex(&Sha512::digest(file))),
            format,
            compression,
            root_device_hints: None,
        }
    }

    /// A "disk" of `size` bytes of 0xAA (old contents that must be overwritten).
    fn old_disk(dir: &Path, size: u64) -> PathBuf {
        let path = dir.join("disk");
        std::fs::write(&path, vec![0xAAu8; size as usize]).unwrap();
        path
    }

    fn run(tool: &str, args: &[&str]) {
        let out = Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} (scripts/install-deps): {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn compress(raw: &[u8], compression: ImageCompression, dir: &Path) -> Vec<u8> {
        let path = dir.join("image");
        std::fs::write(&path, raw).unwrap();
        let tool = match compression {
            ImageCompression::None => return raw.to_vec(),
            ImageCompression::Gz => "gzip",
            ImageCompression::Xz => "xz",
            ImageCompression::Zstd => "zstd",
        };
        run(tool, &["-q", "-k", "-f", path.to_str().unwrap()]);
        let ext = match compression {
            ImageCompression::Gz => "gz",
            ImageCompression::Xz => "xz",
            _ => "zst",
        };
        std::fs::read(dir.join(format!("image.{ext}"))).unwrap()
    }

    fn deploy(file: Vec<u8>, image: &ImageDeployment, disk: &Path) -> Result<Written, ImageError> {
        let disk = Disk::open(disk).unwrap();
        write_image(&mut Memory(file), image, &disk, 256 * MIB, &|_| {})
    }

    fn assert_disk(path: &Path, raw: &[u8], disk_size: u64) {
        let on_disk = std::fs::read(path).unwrap();
        assert_eq!(on_disk.len() as u64, disk_size, "the disk keeps its size");
        assert!(on_disk[..raw.len()] == *raw, "the image is on the disk");
        assert!(
            on_disk[raw.len()..].iter().all(|&b| b == 0xAA),
            "nothing past the image is touched"
        );
    }

    #[test]
    fn raw_images_in_every_compression_are_written_and_verified() {
        let raw = pattern(9 * MIB as usize + 12345);
        for compression in [
            ImageCompression::None,
            ImageCompression::Gz,
            ImageCompression::Xz,
            ImageCompression::Zstd,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let file = compress(&raw, compression, dir.path());
            let disk = old_disk(dir.path(), 16 * MIB);
            let image = deployment(&file, ImageFormat::Raw, compression);
            let written =
                deploy(file, &image, &disk).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(written.image_bytes, raw.len() as u64, "{compression:?}");
            assert_disk(&disk, &raw, 16 * MIB);
        }
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames_are_one_image() {
        let raw = pattern(3 * MIB as usize);
        for compression in [ImageCompression::Gz, ImageCompression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = raw.split_at(MIB as usize);
            let mut file = compress(a, compression, dir.path());
            file.extend(compress(b, compression, dir.path()));
            let disk = old_disk(dir.path(), 4 * MIB);
            let image = deployment(&file, ImageFormat::Raw, compression);
            deploy(file, &image, &disk).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_disk(&disk, &raw, 4 * MIB);
        }
    }

    #[test]
    fn a_checksum_mismatch_names_expected_and_actual() {
        let dir = tempfile::tempdir().unwrap();
        let raw = pattern(MIB as usize);
        let disk = old_disk(dir.path(), 2 * MIB);
        let wrong = "ab".repeat(32);
        let image = ImageDeployment {
            checksum: ImageChecksum::Sha256(wrong.to_uppercase()),
            ..deployment(&raw, ImageFormat::Raw, ImageCompression::None)
        };
        let actual = hex(&Sha256::digest(&raw));
        let error = deploy(raw, &image, &disk).expect_err("wrong checksum");
        assert_eq!(
            error.to_string(),
            format!(
                "checksum mismatch: the image from http://127.0.0.1:1/image has sha256 {actual}, expected {wrong} (the appliance's cache or the Environment's checksum is wrong)"
            )
        );
        let bad = ImageDeployment {
            checksum: ImageChecksum::Sha512("xyz".into()),
            ..image
        };
        let error = deploy(vec![], &bad, &disk).expect_err("not hex");
        assert!(error.to_string().contains("128 hex digits"), "{error}");
    }

    #[test]
    fn the_checksum_covers_the_file_as_served_not_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let raw = pattern(MIB as usize);
        let mut file = compress(&raw, ImageCompression::Gz, dir.path());
        let image = deployment(&file, ImageFormat::Raw, ImageCompression::Gz);
        // The gzip header's mtime: the decompressed bytes stay the same, the file does not.
        file[4] ^= 1;
        let disk = old_disk(dir.path(), 2 * MIB);
        let error = deploy(file, &image, &disk).expect_err("different file");
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn wrong_compression_and_oversized_images_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let raw = pattern(3 * MIB as usize);
        let disk = old_disk(dir.path(), 2 * MIB);
        let image = deployment(&raw, ImageFormat::Raw, ImageCompression::Zstd);
        let error = deploy(raw.clone(), &image, &disk).expect_err("not zstd");
        assert!(
            error.to_string().contains("decompressing the image (zstd)"),
            "{error}"
        );
        let image = deployment(&raw, ImageFormat::Raw, ImageCompression::None);
        let error = deploy(raw, &image, &disk).expect_err("too big");
        assert!(
            matches!(error, ImageError::TooLarge { disk: 2097152, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("rootDeviceHints"), "{error}");
    }

    /// Makes a qcow2 file from `raw` with qemu-img (qemu-utils); `extra` adds options.
    pub(crate) fn qcow2_of(raw: &[u8], dir: &Path, extra: &[&str]) -> Vec<u8> {
        let input = dir.join("input.raw");
        let output = dir.join("output.qcow2");
        std::fs::write(&input, raw).unwrap();
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
        args.extend(extra);
        args.extend([input.to_str().unwrap(), output.to_str().unwrap()]);
        run("qemu-img", &args);
        std::fs::read(output).unwrap()
    }

    #[test]
    fn qcow2_images_are_converted_to_raw() {
        let raw = pattern(5 * MIB as usize + 4096);
        let table: &[(&str, &[&str], ImageCompression)] = &[
            ("v3, 64 KiB clusters", &[], ImageCompression::None),
            (
                "v2 (compat 0.10)",
                &["-o", "compat=0.10"],
                ImageCompression::None,
            ),
            (
                "4 KiB clusters",
                &["-o", "cluster_size=4096"],
                ImageCompression::None,
            ),
            (
                "2 MiB clusters",
                &["-o", "cluster_size=2M"],
                ImageCompression::None,
            ),
            (
                "preallocated metadata",
                &["-o", "preallocation=metadata"],
                ImageCompression::None,
            ),
            ("staged from zstd", &[], ImageCompression::Zstd),
            ("staged from gz", &[], ImageCompression::Gz),
        ];
        for (case, options, compression) in table {
            let dir = tempfile::tempdir().unwrap();
            let qcow2 = qcow2_of(&raw, dir.path(), options);
            let file = compress(&qcow2, *compression, dir.path());
            let disk = old_disk(dir.path(), 8 * MIB);
            let image = deployment(&file, ImageFormat::Qcow2, *compression);
            let written = deploy(file, &image, &disk).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(written.image_bytes, raw.len() as u64, "{case}");
            assert_disk(&disk, &raw, 8 * MIB);
        }
    }

    #[test]
    fn qcow2_zero_clusters_overwrite_old_data() {
        let dir = tempfile::tempdir().unwrap();
        let raw = pattern(2 * MIB as usize);
        let path = dir.path().join("z.qcow2");
        std::fs::write(dir.path().join("z.raw"), &raw).unwrap();
        run(
            "qemu-img",
            &[
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                "qcow2",
                dir.path().join("z.raw").to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        // A v3 "reads as zeros" cluster over data that was allocated before.
        run(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -z 0 64k",
                path.to_str().unwrap(),
            ],
        );
        let file = std::fs::read(&path).unwrap();
        let mut want = raw.clone();
        want[..65536].fill(0);
        let disk = old_disk(dir.path(), 4 * MIB);
        let image = deployment(&file, ImageFormat::Qcow2, ImageCompression::None);
        deploy(file, &image, &disk).expect("zero cluster image");
        assert_disk(&disk, &want, 4 * MIB);
    }

    #[test]
    fn unsupported_qcow2_images_are_refused_before_writing() {
        let raw = pattern(MIB as usize);
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        std::fs::write(&base, qcow2_of(&raw, dir.path(), &[])).unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                base.to_str().unwrap(),
                overlay.to_str().unwrap(),
            ],
        );
        // Legacy AES: LUKS benchmarks its key derivation and fails on a loaded machine.
        let encrypted = dir.path().join("aes.qcow2");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "--object",
                "secret,id=s0,data=pw",
                "-f",
                "qcow2",
                "-o",
                "encrypt.format=aes,encrypt.key-secret=s0",
                encrypted.to_str().unwrap(),
                "1M",
            ],
        );
        let table: Vec<(&str, Vec<u8>, Qcow2Error)> = vec![
            (
                "compressed clusters",
                qcow2_of(&raw, dir.path(), &["-c"]),
                Qcow2Error::CompressedClusters,
            ),
            (
                "backing file",
                std::fs::read(&overlay).unwrap(),
                Qcow2Error::BackingFile,
            ),
            (
                "encrypted",
                std::fs::read(&encrypted).unwrap(),
                Qcow2Error::Encrypted,
            ),
            ("raw bytes", raw.clone(), Qcow2Error::NotQcow2),
        ];
        for (case, file, want) in table {
            let disk = old_disk(dir.path(), 2 * MIB);
            let image = deployment(&file, ImageFormat::Qcow2, ImageCompression::None);
            let error = deploy(file, &image, &disk).expect_err(case);
            assert!(
                matches!(&error, ImageError::Qcow2(e) if *e == want),
                "{case}: {error}"
            );
            assert!(
                std::fs::read(&disk).unwrap().iter().all(|&b| b == 0xAA),
                "{case}: untouched"
            );
        }
    }

    #[test]
    fn a_compressed_qcow2_beyond_the_staging_limit_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let raw = pattern(2 * MIB as usize);
        let file = compress(
            &qcow2_of(&raw, dir.path(), &[]),
            ImageCompression::Zstd,
            dir.path(),
        );
        let image = deployment(&file, ImageFormat::Qcow2, ImageCompression::Zstd);
        let disk = Disk::open(&old_disk(dir.path(), 4 * MIB)).unwrap();
        let error = write_image(&mut Memory(file), &image, &disk, MIB, &|_| {})
            .expect_err("over the limit");
        assert!(
            matches!(error, ImageError::StagingLimit { limit: 1048576 }),
            "{error}"
        );
        assert!(error.to_string().contains("uncompressed"), "{error}");
    }

    #[test]
    fn a_qcow2_whose_tables_change_between_passes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = pattern(MIB as usize);
        let first = qcow2_of(&raw, dir.path(), &[]);
        /// Serves one file's tables and another file's stream.
        struct Swapped(Vec<u8>, Vec<u8>);
        impl Source for Swapped {
            fn stream(&mut self) -> Result<Box<dyn Read + '_>, ImageError> {
                Ok(Box::new(&self.1[..]))
            }
            fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
                Ok(slice_at(&self.0, offset, len).to_vec())
            }
        }
        let mut second = first.clone();
        // The first L2 entry of the stream now points elsewhere.
        let l2 = qcow2::plan(u64::MAX, |o, l| Ok(slice_at(&first, o, l).to_vec()))
            .unwrap()
            .metadata[2]
            .0;
        second[l2 as usize + 7] ^= 0x02;
        let image = deployment(&second, ImageFormat::Qcow2, ImageCompression::None);
        let disk = Disk::open(&old_disk(dir.path(), 2 * MIB)).unwrap();
        let error = write_image(&mut Swapped(first, second), &image, &disk, MIB, &|_| {})
            .expect_err("changed tables");
        assert!(matches!(error, ImageError::Changed), "{error}");
    }

    #[tokio::test]
    async fn a_download_cut_short_is_a_download_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Promises a megabyte, sends a kilobyte, hangs up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&[7u8; 1024]).await.unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let path = old_disk(dir.path(), 2 * MIB);
        let url = format!("http://{addr}/image");
        let image = ImageDeployment {
            url: url.clone(),
            ..deployment(&[], ImageFormat::Raw, ImageCompression::None)
        };
        let handle = tokio::runtime::Handle::current();
        let error = tokio::task::spawn_blocking(move || {
            let disk = Disk::open(&path).unwrap();
            let mut source = HttpSource::new(handle, &image.url).unwrap();
            write_image(&mut source, &image, &disk, MIB, &|_| {})
        })
        .await
        .unwrap()
        .expect_err("cut short");
        assert!(matches!(error, ImageError::Download { .. }), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
    }

    #[test]
    fn verification_catches_a_disk_that_lies() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_disk(dir.path(), 2 * MIB);
        let disk = Disk::open(&path).unwrap();
        let regions = [Region {
            offset: 0,
            len: MIB,
            digest: Some(sha256(&vec![0u8; MIB as usize])),
        }];
        let error = verify(&disk, &regions).expect_err("0xAA is not zeros");
        assert!(error.to_string().contains("bytes 0..1048576"), "{error}");
        let zeros = [Region {
            offset: MIB,
            len: MIB,
            digest: None,
        }];
        assert!(verify(&disk, &zeros).is_err());
    }
}
