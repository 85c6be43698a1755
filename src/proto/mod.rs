//! Wire formats and protocol sessions of the boot plane, without I/O: DHCP/PXE decisions on
//! dhcproto messages, the sans-IO TFTP state machine, and iPXE script rendering.

pub mod dhcp;
pub mod dhcp_client;
pub mod ipxe;
pub mod tftp;
