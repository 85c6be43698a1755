//! Pure decisions over data: what a machine boots, (later) which servers a ServerClass selects
//! and which server a MetalMachine gets. No I/O, no clock: callers pass in what they know.

pub mod agent;
pub mod boot;
pub mod identity;
