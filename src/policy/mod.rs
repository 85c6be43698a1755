//! Pure decisions over data: what a machine boots, which servers a ServerClass selects and
//! in which order a MetalMachine tries the eligible ones, what a server's power should be. No
//! I/O, no clock: callers pass in what they know.

pub mod agent;
pub mod allocate;
pub mod boot;
pub mod configpatch;
pub mod identity;
pub mod labels;
pub mod power;
pub mod rootdevice;
pub mod serverclass;
