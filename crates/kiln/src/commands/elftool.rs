//! `kiln elftool query-manifest IMAGE` and `kiln elftool query-abi IMAGE`:
//! solo5-elftool's queries with its JSON output and exit codes
//! (`kiln_elftool`, also installed as the `solo5-elftool` binary).

use std::io::Write as _;

use crate::cli::ElftoolQuery;

/// Runs `kiln elftool`; returns the exit code (0, or 1 as solo5-elftool).
pub fn run(query: &ElftoolQuery) -> u8 {
    let (cmd, image) = match query {
        ElftoolQuery::QueryManifest { image } => ("query-manifest", image),
        ElftoolQuery::QueryAbi { image } => ("query-abi", image),
    };
    let args = [cmd.to_string(), image.display().to_string()];
    let out = kiln_elftool::run("kiln elftool", &args);
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    out.code
}
