//! `kiln run`: build when stale, then replace kiln with the unikernel, so
//! that its exit status is kiln's.

use std::os::unix::process::CommandExt;
use std::process::Command;

use kiln_config::Target;

use crate::cli::RunArgs;
use crate::error::KilnError;

/// Runs `kiln run`.
pub fn run(args: &RunArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    let target = super::target(args.target.target);
    let image = super::build::build(&project, target, true)?;
    match target {
        Target::Unix => {
            let error = Command::new(&image).args(&args.args).exec();
            Err(KilnError::io("run", image, error))
        }
        // configure already refused these targets; kept explicit for when
        // their tenders land.
        Target::Hvt | Target::Spt => Err(KilnError::Build(format!(
            "running {target} images is not yet supported; hint: kiln run -t unix"
        ))),
    }
}
