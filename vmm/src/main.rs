//! The `k42vm` command.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use k42vm::cli::{Cli, Command};
use k42vm::timeline::Timeline;

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run(args) => match k42vm::vm::run(&args, Timeline::new(start, args.timeline)) {
            Ok(status) => status,
            Err(e) => {
                eprintln!("k42vm: {e}");
                e.exit_status()
            }
        },
    };
    ExitCode::from(status.clamp(0, 255) as u8)
}
