//! Makes the disk image of a `disk` read-only store from a directory:
//! `cargo run -p kiln-store --features std --example mkimage -- DIR IMAGE`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, image] = args.as_slice() else {
        eprintln!(
            "usage: mkimage DIR IMAGE\nhint: DIR is the directory to store, IMAGE the file to write"
        );
        return ExitCode::from(2);
    };
    match kiln_store::image::write_image(Path::new(dir), Path::new(image)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
