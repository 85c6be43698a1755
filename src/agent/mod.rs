//! The discovery agent's work, used by the `siderite-agent` binary: bring up drivers and the
//! network, collect the inventory, register with the appliance, set up the BMC when asked, and
//! follow its directives.

pub mod bmc;
pub mod client;
pub mod configdrive;
pub mod console;
pub mod deploy;
pub mod image;
pub mod inventory;
pub mod modules;
pub mod net;
pub mod qcow2;
pub mod run;
pub mod wipe;

/// Block-device ioctls of `<linux/fs.h>`, in the asm-generic encoding (x86, Arm, RISC-V); the
/// libc crate does not define them. Shared by the wipe and the image writer.
pub(crate) mod ioctl {
    /// `_IO(0x12, 95)`: re-read the partition table.
    pub const BLKRRPART: u64 = 0x125f;
    /// `_IO(0x12, 97)`: write back and drop the device's buffer cache.
    pub const BLKFLSBUF: u64 = 0x1261;
    /// `_IO(0x12, 104)`: logical sector size, as an int.
    pub const BLKSSZGET: u64 = 0x1268;
    /// `_IO(0x12, 119)`: discard a byte range, `[start, length]` as two u64.
    pub const BLKDISCARD: u64 = 0x1277;
    /// `_IO(0x12, 127)`: zero a byte range, `[start, length]` as two u64.
    pub const BLKZEROOUT: u64 = 0x127f;
    /// `_IOR(0x12, 114, size_t)`: the device size in bytes, as a u64.
    pub const BLKGETSIZE64: u64 =
        (2 << 30) | ((std::mem::size_of::<usize>() as u64) << 16) | (0x12 << 8) | 114;
}
