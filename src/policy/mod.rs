//! Pure decisions over data: what a machine boots, which servers a ServerClass selects and
//! (later) which server a MetalMachine gets. No I/O, no clock: callers pass in what they know.

pub mod agent;
pub mod boot;
pub mod identity;
pub mod labels;
pub mod serverclass;
