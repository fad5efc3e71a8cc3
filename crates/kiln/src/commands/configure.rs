//! `kiln configure`: check and write the generated crate.

use crate::cli::ConfigureArgs;
use crate::error::KilnError;

/// Runs `kiln configure`.
pub fn run(args: &ConfigureArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    let target = super::target(args.target.target);
    let configured = project.configure(target, super::choices(&args.choices))?;
    eprintln!(
        "configured {} for {target} in {}{}",
        configured.checked.manifest.name.value,
        configured.build_dir.display(),
        if configured.changed {
            ""
        } else {
            " (unchanged)"
        }
    );
    Ok(0)
}
