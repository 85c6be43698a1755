//! The discovery agent: PID 1 of the discovery image. It brings the machine's hardware up,
//! reports the inventory to the appliance and follows its directives (`siderite::agent::run`).
//! Run by hand on a live Linux system, `siderite-agent inventory` prints what it would report.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::process::id() == 1 {
        siderite::agent::run::pid1();
    }
    match std::env::args().nth(1).as_deref() {
        Some("inventory") => {
            let found = siderite::agent::inventory::collect(std::path::Path::new("/"));
            for problem in &found.problems {
                eprintln!("siderite-agent: {problem}");
            }
            match serde_json::to_string_pretty(&found.hardware) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("siderite-agent: cannot print the inventory: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: siderite-agent inventory\n\
                 (as PID 1 of the discovery image it registers the machine with the appliance \
                 named by siderite.url= on the kernel command line)"
            );
            ExitCode::from(2)
        }
    }
}
