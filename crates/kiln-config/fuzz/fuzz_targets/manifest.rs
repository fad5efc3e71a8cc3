//! Any bytes as `unikernel.toml`: decoding, parsing, resolving the device
//! graph for every target and rendering the error must never panic, and
//! every error must carry its location.
//!
//! `cargo fuzz run manifest seeds/manifest` from crates/kiln-config/fuzz;
//! crates/kiln-config/tests/mutations.rs replays the seeds in every test run.
#![no_main]

use kiln_config::{Choices, SourceFile, Target, diagnostic, graph, manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let located = match SourceFile::from_bytes("unikernel.toml", data.to_vec()) {
        Err(located) => located,
        Ok(file) => match manifest::parse(&file) {
            Err(located) => located,
            Ok(manifest) => {
                for target in Target::ALL {
                    if let Err(located) = graph::resolve(&manifest, target, Choices::default()) {
                        let shown = diagnostic::render(&located, false);
                        assert!(shown.contains("unikernel.toml:"), "{shown}");
                    }
                }
                return;
            }
        },
    };
    let shown = diagnostic::render(&located, false);
    assert!(shown.contains("unikernel.toml:"), "{shown}");
});
