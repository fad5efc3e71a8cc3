//! The control protocol: one JSON request per line from the client, one JSON
//! response line back (then, for `logs`, the console bytes), and the
//! validation every request passes before the daemon acts on it.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The longest request line the daemon reads, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The most runtime arguments a unikernel may be given.
pub const MAX_ARGS: usize = 256;
/// The longest runtime argument.
pub const MAX_ARG_LEN: usize = 4096;
/// The most net or block devices a unikernel may be given.
pub const MAX_DEVICES: usize = 8;
/// The longest `stop --timeout`.
pub const MAX_STOP_TIMEOUT_S: u64 = 3600;
/// The most guest memory, in MiB.
pub const MAX_MEM_MB: u64 = 1 << 20;

/// Where a unikernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A host process.
    Unix,
    /// A KVM guest under kiln-hvt.
    Hvt,
    /// A seccomp-sandboxed process under kiln-spt.
    Spt,
    /// A PVH image under QEMU (its `tender` is the VMM's executable).
    Virtio,
}

impl Target {
    /// The target's name, as in image file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Unix => "unix",
            Target::Hvt => "hvt",
            Target::Spt => "spt",
            Target::Virtio => "virtio",
        }
    }
}

/// When the daemon starts a unikernel again after it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never.
    Never,
    /// After a failure (see `policy`).
    OnFailure,
    /// After any exit but a usage error or `kiln stop`.
    Always,
}

/// A net device attached to a tap the daemon creates on a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// The unikernel's net device.
    pub device: String,
    /// The existing bridge the tap joins.
    pub bridge: String,
}

/// A block device backed by a host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// The unikernel's block device.
    pub device: String,
    /// The backing file (absolute).
    pub path: PathBuf,
}

/// What `kiln up` asks for: everything needed to start the unikernel again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The target.
    pub target: Target,
    /// The image (absolute path, already built).
    pub image: PathBuf,
    /// The tender for hvt and spt (absolute path); none on unix.
    pub tender: Option<PathBuf>,
    /// Guest memory in MiB (hvt and spt).
    pub mem: Option<u64>,
    /// Net devices attached to taps on bridges.
    #[serde(default)]
    pub net: Vec<NetSpec>,
    /// Block devices.
    #[serde(default)]
    pub block: Vec<BlockSpec>,
    /// The restart policy.
    pub restart: Restart,
    /// The CPU the unikernel is pinned to.
    pub cpu: Option<u32>,
    /// Runtime arguments of the unikernel.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Create and start a unikernel.
    Up {
        /// Its name.
        name: String,
        /// What to run.
        spec: Spec,
    },
    /// List the unikernels.
    Ps {},
    /// The console output, then (with `follow`) live output.
    Logs {
        /// The unikernel.
        name: String,
        /// Keep streaming until the unikernel stops.
        follow: bool,
        /// Only the last lines (at most what the ring holds).
        tail: Option<u32>,
    },
    /// Stop: SIGTERM, wait, then SIGKILL.
    Stop {
        /// The unikernel.
        name: String,
        /// Seconds to wait after SIGTERM.
        timeout_s: u64,
    },
    /// Start a stopped unikernel.
    Start {
        /// The unikernel.
        name: String,
    },
    /// Stop then start.
    Restart {
        /// The unikernel.
        name: String,
        /// Seconds to wait after SIGTERM.
        timeout_s: u64,
    },
    /// Forget a stopped unikernel (with `force`, stop it first).
    Rm {
        /// The unikernel.
        name: String,
        /// Stop it first if it runs.
        force: bool,
    },
    /// Resource counters.
    Stats {
        /// The unikernel.
        name: String,
    },
    /// Everything the daemon knows about one unikernel.
    Inspect {
        /// The unikernel.
        name: String,
    },
}

/// The first line of every answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The answer.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    /// Success with `data`.
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            error: None,
            hint: None,
            data,
        }
    }

    /// Failure.
    pub fn error(error: impl Into<String>, hint: Option<String>) -> Response {
        Response {
            ok: false,
            error: Some(error.into()),
            hint,
            data: serde_json::Value::Null,
        }
    }
}

/// A request that fails validation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// What is wrong.
    pub message: String,
    /// The fix.
    pub hint: String,
}

fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Invalid {
    Invalid {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Checks a unikernel's name: 1 to 48 bytes of `a-z`, `0-9`, `-` and `_`,
/// starting with a letter or digit. Names become directory names; nothing
/// else may get through.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid unikernel name {:?}", truncated(name)),
            "a name is 1 to 48 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit",
        ))
    }
}

/// Checks a device name (as in `unikernel.toml`): 1 to 32 bytes of
/// `a-z`, `0-9` and `_`.
fn check_device(device: &str) -> Result<(), Invalid> {
    let ok = !device.is_empty()
        && device.len() <= 32
        && device
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid device name {:?}", truncated(device)),
            "device names are those of unikernel.toml: a-z, 0-9 and `_`",
        ))
    }
}

/// Checks a bridge's name: a Linux interface name (1 to 15 bytes of
/// letters, digits, `-`, `_` and `.`, not `.` or `..`).
pub fn check_ifname(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid bridge name {:?}", truncated(name)),
            "a bridge is named like any interface: 1 to 15 letters, digits, `-`, `_` or `.`",
        ))
    }
}

/// Checks a path: absolute, normal components only (no `..`), no NUL, at
/// most 4096 bytes.
fn check_path(what: &str, path: &Path) -> Result<(), Invalid> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let ok = path.is_absolute()
        && bytes.len() <= 4096
        && !bytes.contains(&0)
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!(
                "invalid {what} path {:?}",
                truncated(&path.to_string_lossy())
            ),
            "paths sent to the daemon are absolute, without `..`",
        ))
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Checks the fields of `spec` that need no file system: the daemon checks
/// the files themselves when it starts the unikernel.
pub fn check_spec(spec: &Spec) -> Result<(), Invalid> {
    check_path("image", &spec.image)?;
    match (spec.target, &spec.tender) {
        (Target::Unix, None) => {}
        (Target::Unix, Some(_)) => {
            return Err(invalid(
                "a unix unikernel has no tender",
                "send no tender with target unix",
            ));
        }
        (Target::Virtio, None) => {
            return Err(invalid(
                "a virtio unikernel needs its VMM",
                "send the path of qemu-system-x86_64 as its tender (kiln up finds it on PATH)",
            ));
        }
        (_, None) => {
            return Err(invalid(
                format!("a {} unikernel needs its tender", spec.target.as_str()),
                format!(
                    "build it with `kiln build -t {}`, which puts kiln-{} beside the image",
                    spec.target.as_str(),
                    spec.target.as_str()
                ),
            ));
        }
        (_, Some(tender)) => check_path("tender", tender)?,
    }
    if let Some(mem) = spec.mem {
        if spec.target == Target::Unix {
            return Err(invalid(
                "--mem applies to hvt and spt guests only",
                "a unix unikernel is a host process; drop --mem",
            ));
        }
        if mem == 0 || mem > MAX_MEM_MB {
            return Err(invalid(
                format!("guest memory of {mem} MiB is out of range"),
                format!("give 1 to {MAX_MEM_MB} MiB"),
            ));
        }
    }
    if spec.net.len() > MAX_DEVICES || spec.block.len() > MAX_DEVICES {
        return Err(invalid(
            "too many devices",
            format!("at most {MAX_DEVICES} net and {MAX_DEVICES} block devices"),
        ));
    }
    let mut devices: Vec<&str> = Vec::new();
    for net in &spec.net {
        check_device(&net.device)?;
        check_ifname(&net.bridge)?;
        devices.push(&net.device);
    }
    for block in &spec.block {
        check_device(&block.device)?;
        check_path("block device", &block.path)?;
        devices.push(&block.device);
    }
    devices.sort_unstable();
    if devices.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            "a device is attached twice",
            "name each net and block device once",
        ));
    }
    if spec.args.len() > MAX_ARGS
        || spec
            .args
            .iter()
            .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
    {
        return Err(invalid(
            "runtime arguments too many, too long or with a NUL byte",
            format!("at most {MAX_ARGS} arguments of {MAX_ARG_LEN} bytes"),
        ));
    }
    if let Some(cpu) = spec.cpu
        && cpu >= 1024
    {
        return Err(invalid(
            format!("CPU {cpu} is out of range"),
            "give a CPU number the host has (see nproc)",
        ));
    }
    Ok(())
}

/// Parses and validates one request line.
pub fn parse(line: &[u8]) -> Result<Request, Invalid> {
    let request: Request = serde_json::from_slice(line).map_err(|e| {
        invalid(
            format!("malformed request: {e}"),
            "send one JSON object per line, as `kiln` does",
        )
    })?;
    match &request {
        Request::Ps {} => {}
        Request::Up { name, spec } => {
            check_name(name)?;
            check_spec(spec)?;
        }
        Request::Stop { name, timeout_s } | Request::Restart { name, timeout_s } => {
            check_name(name)?;
            if *timeout_s > MAX_STOP_TIMEOUT_S {
                return Err(invalid(
                    format!("a stop timeout of {timeout_s} s is too long"),
                    format!("give at most {MAX_STOP_TIMEOUT_S} s"),
                ));
            }
        }
        Request::Logs { name, .. }
        | Request::Start { name }
        | Request::Rm { name, .. }
        | Request::Stats { name }
        | Request::Inspect { name } => check_name(name)?,
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_path_tricks() {
        for good in ["hello", "www-1", "a", "9_x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "../x",
            "A",
            "-x",
            "x y",
            "x\0",
            "é",
            &"x".repeat(49),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_typed_and_checked() {
        assert_eq!(parse(br#"{"op":"ps"}"#).unwrap(), Request::Ps {});
        for bad in [
            &br#"{"op":"ps","x":1}"#[..],
            br#"{"op":"nuke"}"#,
            br#"{"op":"stop","name":"../etc","timeout_s":1}"#,
            br#"{"op":"stop","name":"a","timeout_s":99999}"#,
            br#"{"op":"stop","name":"a","timeout_s":-1}"#,
            br#"[]"#,
            b"\xff\xfe",
            br#"{"op":"up","name":"a","spec":{"target":"unix","image":"rel/path","tender":null,"mem":null,"restart":"never","cpu":null}}"#,
            br#"{"op":"up","name":"a","spec":{"target":"unix","image":"/x/../y","tender":null,"mem":null,"restart":"never","cpu":null}}"#,
            br#"{"op":"up","name":"a","spec":{"target":"hvt","image":"/x","tender":null,"mem":null,"restart":"never","cpu":null}}"#,
            br#"{"op":"up","name":"a","spec":{"target":"unix","image":"/x","tender":null,"mem":null,"restart":"never","cpu":null,"net":[{"device":"n","bridge":"br0/../x"}]}}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let up = br#"{"op":"up","name":"a","spec":{"target":"spt","image":"/x/a.spt","tender":"/x/kiln-spt","mem":64,"restart":"on-failure","cpu":0,"args":["--times","2"],"net":[{"device":"service","bridge":"br0"}]}}"#;
        assert!(matches!(parse(up), Ok(Request::Up { .. })));
    }

    /// The fuzz target's seeds are valid requests that round-trip.
    #[test]
    fn fuzz_seeds_parse() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/request");
        let mut n = 0;
        for entry in std::fs::read_dir(&seeds).unwrap() {
            let path = entry.unwrap().path();
            let line = std::fs::read(&path).unwrap();
            let request = parse(&line).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = serde_json::to_vec(&request).unwrap();
            assert_eq!(parse(&again).unwrap(), request, "{}", path.display());
            n += 1;
        }
        assert!(n >= 4, "only {n} seeds in {}", seeds.display());
    }

    /// The fuzz target's property (crates/kiln-supervisor/fuzz) over
    /// mutations of a valid request: no panic, and what is accepted
    /// round-trips.
    #[test]
    fn mutated_requests_never_panic() {
        let seed = br#"{"op":"up","name":"www","spec":{"target":"spt","image":"/srv/www.spt","tender":"/srv/kiln-spt","mem":64,"restart":"always","cpu":1,"args":["--port","80"],"net":[{"device":"service","bridge":"br0"}],"block":[{"device":"disk","path":"/srv/d.img"}]}}"#;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut line = seed.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % line.len();
                match next() % 3 {
                    0 => line[i] = next() as u8,
                    1 => {
                        line.remove(i);
                    }
                    _ => {
                        let set = b"/.\"\\{}[]0";
                        line.insert(i, set[(next() as usize) % set.len()]);
                    }
                }
            }
            if let Ok(request) = parse(&line) {
                accepted += 1;
                let again = serde_json::to_vec(&request).unwrap();
                assert_eq!(parse(&again).unwrap(), request);
            }
        }
        assert!(accepted > 0);
    }
}
