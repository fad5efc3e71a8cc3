//! The `kiln-hvt` command: runs [`kiln_hvt::run`] and turns its result into
//! output and an exit status.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match kiln_hvt::run(std::env::args_os().skip(1)) {
        Ok(kiln_hvt::Exit::Text(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(kiln_hvt::Exit::Status(status)) => {
            let _ = std::io::stdout().flush();
            ExitCode::from(kiln_hvt::exit_code(status))
        }
        Err(err) => {
            eprintln!("{}", kiln_hvt::report(&err));
            ExitCode::from(1)
        }
    }
}
