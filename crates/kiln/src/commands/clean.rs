//! `kiln clean`: remove `DIR/_build` and `DIR/dist`.

use crate::cli::CleanArgs;
use crate::error::KilnError;

/// Runs `kiln clean`.
pub fn run(args: &CleanArgs) -> Result<u8, KilnError> {
    let project = super::open(&args.dir)?;
    for dir in [project.dir.join("_build"), project.dist_dir()] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => eprintln!("removed {}", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KilnError::io("remove", dir, e)),
        }
    }
    Ok(0)
}
