//! IPMI v2.0: the LAN (RMCP+) power manager and the command encoding the discovery agent's
//! in-band BMC setup shares.
//!
//! | module | what | I/O |
//! | --- | --- | --- |
//! | `wire` | datagram, session header/trailer, Open Session, RAKP 1–4, IPMI message codecs | no |
//! | `crypto` | cipher suites 3 and 17: RAKP codes, SIK/K1/K2, AuthCode, AES-CBC-128 | no |
//! | `command` | the IPMI commands used (chassis, boot options, session, users, LAN) | no |
//! | `session` | the sans-IO RMCP+ session state machine | no |
//! | `lan` | [`IpmiLan`], the [`super::PowerManager`]: the only owner of a UDP socket | yes |
//!
//! Architecture invariant: only `lan` sends or receives; the other modules are pure and are
//! checked for it by `tests/tidy.rs`.

pub mod command;
pub mod crypto;
#[cfg(test)]
mod fake;
pub mod lan;
pub mod session;
pub mod wire;

pub use crypto::CipherSuite;
pub use lan::{CipherSuites, IpmiConfig, IpmiLan};
