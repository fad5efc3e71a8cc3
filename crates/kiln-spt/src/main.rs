//! The `kiln-spt` command: runs [`kiln_spt::run`] and turns its result into
//! output and an exit status.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match kiln_spt::run(std::env::args_os().skip(1)) {
        Ok(kiln_spt::Exit::Text(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(kiln_spt::Exit::Status(status)) => {
            let _ = std::io::stdout().flush();
            ExitCode::from(kiln_spt::exit_code(status))
        }
        Err(err) => {
            eprintln!("{}", kiln_spt::report(&err));
            ExitCode::from(1)
        }
    }
}
