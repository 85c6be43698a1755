//! Wire formats and protocol sessions of the boot plane, without I/O: the DHCPv4 wire format,
//! ProxyDHCP decisions, the agent's DHCP client, the sans-IO TFTP state machine, and iPXE
//! script rendering.

pub mod dhcp;
pub mod dhcp_client;
pub mod dhcp_wire;
pub mod ipxe;
pub mod tftp;
