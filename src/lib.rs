//! Siderite: a bare-metal auto-discovery boot appliance for Kubernetes, wire-compatible with
//! Sidero Metal. See ARCHITECTURE.md for the code map and the layering rules.

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod bench;
pub mod controllers;
pub mod policy;
pub mod power;
pub mod proto;
pub mod serve;
pub mod store;
