//! `kiln image SRC OUT`: the tar image of a directory that a `disk` kv_ro
//! (`kiln_store::TarStore`) reads, made without `tar`.

use crate::cli::ImageArgs;
use crate::error::KilnError;

/// Runs `kiln image`.
pub fn run(args: &ImageArgs) -> Result<u8, KilnError> {
    if !args.src.is_dir() {
        return Err(KilnError::Usage {
            message: format!("{} is not a directory", args.src.display()),
            hint: "name the directory whose files the image holds: kiln image htdocs disk.img"
                .into(),
        });
    }
    kiln_store::image::write_image(&args.src, &args.out).map_err(KilnError::Image)?;
    let size = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    eprintln!(
        "wrote {} ({size} bytes); attach it with --block:NAME={}",
        args.out.display(),
        args.out.display()
    );
    Ok(0)
}
