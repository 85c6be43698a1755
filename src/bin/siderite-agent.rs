//! The discovery agent: PID 1 of the discovery initramfs. It brings the machine's hardware up,
//! reports the inventory to the appliance and follows its directives (see `siderite::agent`).

fn main() {
    eprintln!("siderite-agent: not yet wired");
}
