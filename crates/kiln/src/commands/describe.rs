//! `kiln describe`: the resolved device graph on stdout.

use std::io::Write as _;

use crate::cli::DescribeArgs;
use crate::error::KilnError;

/// Runs `kiln describe`.
pub fn run(args: &DescribeArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    let target = super::target(args.target.target);
    let checked = project.check(target, super::choices(&args.choices))?;
    let text = if args.dot {
        kiln_config::describe::dot(&checked)
    } else {
        kiln_config::describe::text(&checked)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| KilnError::io("write to", "stdout", e))?;
    Ok(0)
}
