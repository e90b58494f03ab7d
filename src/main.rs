//! `sessionlog`: the admin command for sessionlog stores. See CLI.md.

mod cli;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`sessionlog list | head`) is not a failure.
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(io::stderr(), "sessionlog: {e}");
            ExitCode::from(1)
        }
    }
}
