//! The discovery agent's work, used by the `siderite-agent` binary: bring up drivers and the
//! network, collect the inventory, register with the appliance, and follow its directives.

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
