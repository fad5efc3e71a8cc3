//! `kiln new`: a working hello-world unikernel in a new directory.

use std::path::Path;

use crate::cli::NewArgs;
use crate::error::KilnError;

const UNIKERNEL_TOML: &str = r#"[unikernel]
name = "NAME"
entry = "start"
doc = "Says hello a few times"

[devices.console]
type = "console"

[devices.sleep]
type = "sleep"

[arguments.times]
type = "u32"
default = 4
doc = "How many times to say hello"
"#;

const LIB_RS: &str = r#"//! NAME: a kiln unikernel that says hello a few times.
#![no_std]

use core::time::Duration;

use kiln_devices::{Console, ConsoleError, Sleep};

/// Prints `hello` `times` times, one second apart.
pub async fn start(console: impl Console, sleep: impl Sleep, times: u32) -> Result<(), ConsoleError> {
    for i in 0..times {
        if i > 0 {
            sleep.sleep(Duration::from_secs(1)).await;
        }
        console.log("hello")?;
    }
    Ok(())
}
"#;

/// Runs `kiln new`.
pub fn run(args: &NewArgs) -> Result<u8, KilnError> {
    let dir = &args.name;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(KilnError::Usage {
            message: format!("invalid unikernel name `{}`", dir.display()),
            hint: "a name starts with a lowercase letter and has only lowercase letters, digits and `-`, e.g. kiln new hello".into(),
        });
    }
    if dir.exists() {
        return Err(KilnError::Usage {
            message: format!("{} already exists", dir.display()),
            hint: "pick another name, or remove the directory first".into(),
        });
    }
    // Relative, so that the crate can be committed and moved with the
    // kiln tree beside it; `kiln configure` names the right path when it
    // no longer points at this kiln's copy.
    let devices = kiln_config::project::source_dir()
        .join("crates")
        .join("kiln-devices");
    let devices = devices.canonicalize().unwrap_or(devices);
    let here = std::path::absolute(dir).map_err(|e| KilnError::io("resolve", dir, e))?;
    let here = match (here.parent().map(Path::canonicalize), here.file_name()) {
        (Some(Ok(parent)), Some(name)) => parent.join(name),
        _ => here,
    };
    let devices = kiln_config::codegen::relative_path(&here, &devices);
    let cargo_toml = format!(
        "[package]\nname = {}\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nkiln-devices = {{ path = {} }}\n\n\
         # Keeps this crate out of any enclosing workspace.\n[workspace]\n",
        kiln_config::codegen::toml_str(name),
        kiln_config::codegen::toml_str(&devices.display().to_string()),
    );
    let files = [
        ("Cargo.toml", cargo_toml),
        ("unikernel.toml", UNIKERNEL_TOML.replace("NAME", name)),
        ("src/lib.rs", LIB_RS.replace("NAME", name)),
        (".gitignore", "/_build\n/dist\n/target\n".to_string()),
    ];
    for (path, contents) in files {
        write(&dir.join(path), &contents)?;
    }
    eprintln!(
        "created {name} in {}; try: kiln run {}",
        dir.display(),
        dir.display()
    );
    Ok(0)
}

fn write(path: &Path, contents: &str) -> Result<(), KilnError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| KilnError::io("create", parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| KilnError::io("write", path, e))
}
