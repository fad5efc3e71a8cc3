//! `solo5-elftool`: Solo5's image query tool under its own name, for
//! orchestrators (albatross, urunc) that call it by that name.

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = kiln_elftool::run("solo5-elftool", &args);
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    ExitCode::from(out.code)
}
