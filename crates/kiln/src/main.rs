//! `kiln`: create, configure, build, run and describe unikernels.
//!
//! [`cli`] holds the clap structures; each subcommand lives in its own file
//! under [`commands`]; [`error`] maps failures to messages and exit codes.
//! The work itself is done by `kiln-config`.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod error;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", error::render(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
