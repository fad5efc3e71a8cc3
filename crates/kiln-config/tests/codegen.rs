//! Snapshots of the crate generated for unix: its Cargo.toml and main.rs for
//! a unikernel that uses every device kind unix provides and every
//! argument type, with paths filtered.

use kiln_config::{Choices, Project, Target};

use tempfile::TempDir;

/// A unikernel crate `name` in a fresh temporary directory (`tag` keeps
/// the tests apart): its Cargo.toml, `unikernel.toml` and the `sources`
/// (path under `src/`, contents).
fn unikernel(tag: &str, name: &str, unikernel_toml: &str, sources: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kiln-config-codegen{tag}-"))
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("unikernel.toml"), unikernel_toml).unwrap();
    for (path, contents) in sources {
        std::fs::write(dir.path().join("src").join(path), contents).unwrap();
    }
    dir
}

/// The unikernel of [`TOML`] and [`APP`].
fn all_devices(tag: &str) -> TempDir {
    unikernel(
        tag,
        "all-devices",
        TOML,
        &[("lib.rs", "#![no_std]\npub mod app;\n"), ("app.rs", APP)],
    )
}

/// `file` of the generated crate in `build_dir`, with the kiln source
/// tree's path replaced by `[KILN]`.
fn generated(build_dir: &std::path::Path, file: &str) -> String {
    let source = kiln_config::project::source_dir().display().to_string();
    std::fs::read_to_string(build_dir.join(file))
        .unwrap()
        .replace(&source, "[KILN]")
}

const TOML: &str = r#"[unikernel]
name = "all-devices"
entry = "app::start"
doc = "Every \"device\""

[devices.console]
type = "console"
[devices.clock]
type = "clock"
[devices.wall]
type = "wall_clock"
[devices.sleep]
type = "sleep"
[devices.random]
type = "random"
[devices.service]
type = "net"
[devices.disk]
type = "block"
[devices.stack]
type = "stack"
net = "service"

[arguments.verbose]
type = "bool"
default = false
[arguments.ttl]
type = "u8"
default = 64
[arguments.port]
type = "u16"
default = 8080
[arguments.count]
type = "u32"
[arguments.bytes]
type = "u64"
default = 0x10
[arguments.delta]
type = "i32"
default = -1
[arguments.offset]
type = "i64"
default = 0
[arguments.name]
type = "string"
default = "kiln"
doc = "A name"
[arguments.peer]
type = "ip"
default = "::1"
[arguments.ipv4-gateway]
type = "ipv4"
default = "10.0.0.1"
[arguments.ipv6-gateway]
type = "ipv6"
default = "fe80::1"
"#;

const APP: &str = r#"use kiln_devices::*;
extern crate alloc;
pub async fn start<C: Console>(
    console: C, clock: impl MonotonicClock, wall: impl WallClock, sleep: impl Sleep,
    random: impl Random, service: impl NetworkInterface, disk: impl Block, stack: impl Stack,
    verbose: bool, ttl: u8, port: u16, count: u32, bytes: u64, delta: i32, offset: i64,
    name: alloc::string::String, peer: core::net::IpAddr, ipv4_gateway: core::net::Ipv4Addr,
    ipv6_gateway: core::net::Ipv6Addr,
) -> u8 { 0 }
"#;

#[test]
fn unix_crate_for_every_device_and_argument_type() {
    let dir = all_devices("");
    let project = Project::open(dir.path()).unwrap();
    let configured = project.configure(Target::Unix, Choices::default()).unwrap();
    assert!(configured.changed);
    let read = |file: &str| generated(&configured.build_dir, file);
    insta::assert_snapshot!("unix_cargo_toml", read("Cargo.toml"));
    insta::assert_snapshot!("unix_main_rs", read("src/main.rs"));

    // The same graph with the direct stack: the tap is built first and
    // moved into the stack, which is built inside the runtime; the stack's
    // flags are taken out of the command line and listed by --help.
    let choices = Choices {
        net: Some(kiln_config::Impl::Direct),
        kv_ro: None,
    };
    let configured = project.configure(Target::Unix, choices).unwrap();
    assert!(configured.changed);
    assert!(read("Cargo.toml").contains("kiln-net = { path = \"[KILN]/crates/kiln-net\" }"));
    insta::assert_snapshot!("unix_direct_main_rs", read("src/main.rs"));
}

#[test]
fn solo5_crates_for_every_device_and_argument_type() {
    let dir = all_devices("-solo5");
    let project = Project::open(dir.path()).unwrap();
    let hvt = project.configure(Target::Hvt, Choices::default()).unwrap();
    assert_eq!(hvt.cargo_target, Some("x86_64-unknown-none"));
    let read = generated;
    insta::assert_snapshot!("hvt_cargo_toml", read(&hvt.build_dir, "Cargo.toml"));
    insta::assert_snapshot!("hvt_build_rs", read(&hvt.build_dir, "build.rs"));
    insta::assert_snapshot!("hvt_main_rs", read(&hvt.build_dir, "src/main.rs"));

    // spt: the same crate with the spt feature and ABI note.
    let spt = project.configure(Target::Spt, Choices::default()).unwrap();
    let hvt_main = read(&hvt.build_dir, "src/main.rs");
    let spt_main = read(&spt.build_dir, "src/main.rs");
    assert_eq!(
        spt_main,
        hvt_main
            .replace("on hvt;", "on spt;")
            .replace("all-devices on hvt\"", "all-devices on spt\"")
            .replace("AbiNote::hvt()", "AbiNote::spt()")
            .replace("attached by kiln-hvt", "attached by kiln-spt")
    );
    let solo5 = "kiln-solo5 = { path = \"[KILN]/crates/kiln-solo5\"";
    assert_eq!(
        read(&spt.build_dir, "Cargo.toml"),
        read(&hvt.build_dir, "Cargo.toml")
            .replace("on hvt;", "on spt;")
            .replace("-hvt\"", "-spt\"")
            .replace(solo5, &format!("{solo5}, features = [\"spt\"]"))
    );

    // A crate that is not no_std cannot be a freestanding image.
    std::fs::write(dir.path().join("src/lib.rs"), "pub mod app;\n").unwrap();
    let err = project
        .configure(Target::Hvt, Choices::default())
        .unwrap_err();
    assert!(err.to_string().contains("is not `#![no_std]`"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

/// Regression: generated virtio crates had no `.cargo/config.toml`, so
/// the RustCrypto crates in wwws picked backends hvt's configuration turns
/// off (freestanding images have no SSE). Both get the same file.
#[test]
fn virtio_crate_selects_the_rustcrypto_backends_hvt_does() {
    let dir = all_devices("-virtio");
    let project = Project::open(dir.path()).unwrap();
    let hvt = project.configure(Target::Hvt, Choices::default()).unwrap();
    let virtio = project
        .configure(Target::Virtio, Choices::default())
        .unwrap();
    assert_eq!(virtio.cargo_target, Some("x86_64-unknown-none"));
    let config = generated(&virtio.build_dir, ".cargo/config.toml");
    assert!(config.contains("aes_force_soft"), "{config}");
    assert_eq!(config, generated(&hvt.build_dir, ".cargo/config.toml"));
}

/// A unikernel without net or block devices has an empty manifest.
#[test]
fn solo5_manifest_without_devices() {
    let dir = unikernel(
        "-empty",
        "hello",
        "[unikernel]\nname = \"hello\"\nentry = \"start\"\n[devices.console]\ntype = \"console\"\n",
        &[(
            "lib.rs",
            "#![no_std]\npub async fn start(console: impl kiln_devices::Console) {}\n",
        )],
    );
    let project = Project::open(dir.path()).unwrap();
    let hvt = project.configure(Target::Hvt, Choices::default()).unwrap();
    let main = std::fs::read_to_string(hvt.build_dir.join("src/main.rs")).unwrap();
    assert!(
        main.contains("static MFT: ::kiln_abi::MftNote<0> = ::kiln_abi::MftNote::new([]);"),
        "{main}"
    );
    assert!(!main.contains("kiln_net"), "{main}");
}

/// A Solo5 manifest entry holds a name of at most 67 bytes: a longer net
/// or block device name is refused at configure time, naming the limit.
#[test]
fn solo5_refuses_a_device_name_too_long_for_the_manifest() {
    let name = "d".repeat(68);
    let dir = unikernel(
        "-long",
        "long",
        &format!(
            "[unikernel]\nname = \"long\"\nentry = \"start\"\n[devices.{name}]\ntype = \"block\"\n"
        ),
        &[(
            "lib.rs",
            &format!("#![no_std]\npub async fn start({name}: impl kiln_devices::Block) {{}}\n"),
        )],
    );
    let project = Project::open(dir.path()).unwrap();
    let err = project
        .configure(Target::Hvt, Choices::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the name is 68 characters long, but a Solo5 manifest holds at most 67"),
        "{err}"
    );
    // unix has no such limit.
    project.configure(Target::Unix, Choices::default()).unwrap();
}
