//! The unix backend: a host binary crate calling `kiln-unix`, per
//! `kiln-unix`'s API (platform, args, exit and one type per device).

use std::path::PathBuf;

use super::program::{self, Construct, Flavor, Table};
use super::{Backend, CargoToml, GeneratedFile, Plan};
use crate::diagnostic::Located;
use crate::model::{DeviceType, Impl, Target};

/// The unix backend.
#[derive(Debug)]
pub struct Unix;

/// The implementations this backend provides: a device type and choice,
/// and how to construct it.
const IMPLEMENTATIONS: &Table = &[
    (
        DeviceType::Console,
        None,
        Construct::Expr("::kiln_unix::Console::stdout()"),
    ),
    (
        DeviceType::Clock,
        None,
        Construct::Expr("::kiln_unix::MonotonicClock::new()"),
    ),
    (
        DeviceType::WallClock,
        None,
        Construct::Expr("::kiln_unix::WallClock::new()"),
    ),
    (DeviceType::Sleep, None, Construct::Expr("::kiln_rt::Timer")),
    (
        DeviceType::Shutdown,
        None,
        Construct::Expr("::kiln_unix::Shutdown::new(platform).unwrap_or_else(|e| fail(1, e))"),
    ),
    (
        DeviceType::Random,
        None,
        Construct::Expr("::kiln_unix::Random::new()"),
    ),
    (DeviceType::Net, None, Construct::Tap),
    (DeviceType::Block, None, Construct::FileBlock),
    (
        DeviceType::Stack,
        Some(Impl::Socket),
        Construct::Expr("::kiln_unix::SocketStack::new(platform)"),
    ),
    (
        DeviceType::Stack,
        Some(Impl::Direct),
        Construct::DirectStack,
    ),
    (DeviceType::KvRo, Some(Impl::Baked), Construct::Baked),
    (DeviceType::KvRo, Some(Impl::Disk), Construct::TarStore),
    (DeviceType::KvRw, None, Construct::LogStore),
];

/// What the unix crate's `Cargo.toml` adds: `kiln-rt` with `std`, and
/// `kiln-unix`.
const CARGO_TOML: CargoToml<'static> = CargoToml {
    package: "",
    bin: "",
    platform: &[("kiln-rt", ", features = [\"std\"]"), ("kiln-unix", "")],
    profiles: "",
};

impl Backend for Unix {
    fn target(&self) -> Target {
        Target::Unix
    }

    fn generate(&self, plan: &Plan<'_>) -> Result<Vec<GeneratedFile>, Located> {
        let resolved = program::resolve(
            plan,
            IMPLEMENTATIONS,
            "on unix, use the host's stack: --net socket (the default)",
        )?;
        Ok(vec![
            GeneratedFile {
                path: PathBuf::from("Cargo.toml"),
                contents: CARGO_TOML.render(plan, &resolved, Target::Unix),
            },
            GeneratedFile {
                path: PathBuf::from("src/main.rs"),
                contents: program::main_rs(plan, &resolved, Flavor::Unix, ""),
            },
        ])
    }
}
