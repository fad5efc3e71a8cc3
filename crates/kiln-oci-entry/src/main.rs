//! `kiln-oci-entry`: the entrypoint of kiln's self-contained OCI images
//! (`kiln package`), a static program in an image that has no shell.
//!
//! It runs as the container's first process: it starts the unikernel's
//! tender (or, for a unix image, the program itself) as its child, passes
//! stop signals on to it (a first process that has no handler for SIGTERM
//! would ignore it), reaps orphans, and exits with the child's status.
//! Before that, for the image's network device it
//! connects the container's `eth0` to a new tap interface the way urunc
//! does: an ingress qdisc on each with a u32 filter whose mirred action
//! redirects every frame to the other's egress (so the container's kernel
//! never sees a frame, and the kernel computes checksums and splits large
//! segments on the way into the tap). The tap's descriptor goes to the
//! tender as `--net:NAME=@FD`, the guest gets eth0's MAC address, and its
//! IPv4 address, prefix and default gateway as `--ipv4`/`--ipv4-gateway`.
//! That needs `CAP_NET_ADMIN` (and `CAP_MKNOD` where the engine gives the
//! container no `/dev/net/tun`). A block device with no `--block:` flag
//! gets `/var/lib/kiln/NAME.img`, created zero-filled on first use: mount a
//! volume there to keep it.
//!
//! Command line (written by `kiln package` as the image's entrypoint; the
//! container's arguments follow the `--`):
//!
//! ```text
//! kiln-oci-entry [--tender=PATH] --image=PATH [--net=DEV]... [--block=DEV]... -- ARGS...
//! ```
//!
//! In ARGS, tender flags (`--mem=`, `--net:`, `--net-mac:`, `--block:`,
//! `--block-sector-size:`) go to the tender, the rest to the guest.
//!
//! - [`netlink`]: the two tc messages, as bytes;
//! - [`sys`]: the ioctls and sockets (all the `unsafe`).

mod netlink;
mod sys;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::process::{Command, ExitCode};

/// The interface the engine gives the container.
const IFACE: &str = "eth0";
/// Where block devices without a `--block:` flag live.
const BLOCK_DIR: &str = "/var/lib/kiln";
/// The size of a block device created on first use.
const BLOCK_SIZE: u64 = 16 << 20;
/// The flag prefixes that belong to the tender.
const TENDER_FLAGS: &[&str] = &[
    "--mem=",
    "--net:",
    "--net-mac:",
    "--block:",
    "--block-sector-size:",
];

/// The entrypoint's own configuration and the container's arguments.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    tender: Option<String>,
    image: String,
    nets: Vec<String>,
    blocks: Vec<String>,
    args: Vec<String>,
}

/// Why the entrypoint stopped; becomes `error: ...` and exit status 2.
struct Failure(String);

impl<E: std::fmt::Display> From<(String, E)> for Failure {
    fn from((what, e): (String, E)) -> Failure {
        Failure(format!("{what}: {e}"))
    }
}

fn parse(argv: &[String]) -> Result<Plan, Failure> {
    let mut plan = Plan::default();
    let mut it = argv.iter();
    for arg in it.by_ref() {
        if arg == "--" {
            break;
        }
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| Failure(format!("unexpected argument {arg:?}")))?;
        match key {
            "--tender" => plan.tender = Some(value.to_string()),
            "--image" => plan.image = value.to_string(),
            "--net" => plan.nets.push(value.to_string()),
            "--block" => plan.blocks.push(value.to_string()),
            _ => return Err(Failure(format!("unknown option {key}"))),
        }
    }
    if plan.image.is_empty() {
        return Err(Failure("--image= is required".into()));
    }
    plan.args = it.cloned().collect();
    Ok(plan)
}

/// The default IPv4 gateway through `iface` in `/proc/net/route`'s format.
fn gateway(routes: &str, iface: &str) -> Option<Ipv4Addr> {
    routes.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, dest, gw, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
        if *name != iface || *dest != "00000000" || *mask != "00000000" {
            return None;
        }
        // Hex of the address in host (little-endian) byte order.
        let gw = u32::from_str_radix(gw, 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.to_le_bytes()))
    })
}

fn prefix_len(mask: Ipv4Addr) -> u32 {
    u32::from(mask).leading_ones()
}

/// What the network device adds to the tender's and guest's arguments.
struct Wired {
    tap: OwnedFd,
    mac: [u8; 6],
    ipv4: Option<(Ipv4Addr, u32)>,
    gateway: Option<Ipv4Addr>,
}

fn netlink_do(nl: &sys::Netlink, message: &[u8], seq: u32, what: &str) -> Result<(), Failure> {
    nl.send(message)
        .map_err(|e| (format!("{what}: netlink"), e))?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..16 {
        let n = nl
            .recv(&mut buf)
            .map_err(|e| (format!("{what}: netlink"), e))?;
        match netlink::parse_ack(&buf[..n], seq) {
            Some(Ok(())) => return Ok(()),
            Some(Err(errno)) => {
                let e = std::io::Error::from_raw_os_error(errno);
                let hint = if errno == libc::EPERM {
                    "; hint: the container needs CAP_NET_ADMIN (--cap-add NET_ADMIN)"
                } else if errno == libc::ENOENT || errno == libc::EOPNOTSUPP {
                    "; hint: the host kernel needs sch_ingress, cls_u32 and act_mirred"
                } else {
                    ""
                };
                return Err(Failure(format!("{what}: {e}{hint}")));
            }
            None => continue,
        }
    }
    Err(Failure(format!("{what}: no answer from the kernel")))
}

/// Joins `eth0` and a new tap `tap_name` both ways.
fn wire(tap_name: &str) -> Result<Wired, Failure> {
    let ctl = sys::Ctl::open().map_err(|e| ("socket".to_string(), e))?;
    let eth = ctl.index(IFACE).map_err(|e| {
        Failure(format!(
            "the container has no {IFACE}: {e}; hint: run it with a network (not --network none), or attach the device yourself with --net:NAME=..."
        ))
    })?;
    // A physical NIC means the container shares a host's network (`--network
    // host`, `hostNetwork: true`): redirecting it would take the host off
    // the network.
    if std::path::Path::new(&format!("/sys/class/net/{IFACE}/device")).exists() {
        return Err(Failure(format!(
            "{IFACE} is a physical interface: the container seems to share the host's network; hint: run it in its own network namespace (no --network host), or attach the device yourself with --net:NAME=..."
        )));
    }
    let mac = ctl.mac(IFACE).map_err(|e| (format!("{IFACE}'s MAC"), e))?;
    let mtu = ctl.mtu(IFACE).map_err(|e| (format!("{IFACE}'s MTU"), e))?;
    let ipv4 = ctl
        .ipv4(IFACE)
        .map_err(|e| (format!("{IFACE}'s IPv4 address"), e))?
        .map(|(addr, mask)| (addr, prefix_len(mask)));
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let gateway = gateway(&routes, IFACE);

    sys::ensure_tun_node().map_err(|e| {
        Failure(format!(
            "cannot create /dev/net/tun: {e}; hint: a unikernel with a network device needs --cap-add NET_ADMIN --device /dev/net/tun (or CAP_MKNOD instead of the device)"
        ))
    })?;
    let tap = sys::open_tap(tap_name).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            "; hint: the container needs CAP_NET_ADMIN (--cap-add NET_ADMIN)"
        } else {
            ""
        };
        Failure(format!("cannot create the tap {tap_name}: {e}{hint}"))
    })?;
    let tap_index = ctl.index(tap_name).map_err(|e| (tap_name.to_string(), e))?;
    ctl.set_mtu(tap_name, mtu)
        .map_err(|e| (format!("{tap_name}'s MTU"), e))?;
    ctl.up(tap_name)
        .map_err(|e| (format!("up {tap_name}"), e))?;

    let nl = sys::Netlink::open().map_err(|e| ("netlink socket".to_string(), e))?;
    netlink_do(
        &nl,
        &netlink::ingress_qdisc(eth, 1),
        1,
        "ingress qdisc on eth0",
    )?;
    netlink_do(
        &nl,
        &netlink::ingress_qdisc(tap_index, 2),
        2,
        "ingress qdisc on the tap",
    )?;
    netlink_do(
        &nl,
        &netlink::redirect_filter(eth, tap_index, 3),
        3,
        "redirect eth0 to the tap",
    )?;
    netlink_do(
        &nl,
        &netlink::redirect_filter(tap_index, eth, 4),
        4,
        "redirect the tap to eth0",
    )?;
    Ok(Wired {
        tap,
        mac,
        ipv4,
        gateway,
    })
}

/// Creates `path` zero-filled (sparse) if it does not exist.
fn ensure_disk(path: &str) -> Result<(), Failure> {
    if std::path::Path::new(path).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(BLOCK_DIR).map_err(|e| (format!("create {BLOCK_DIR}"), e))?;
    let file = std::fs::File::create(path).map_err(|e| (format!("create {path}"), e))?;
    file.set_len(BLOCK_SIZE)
        .map_err(|e| (format!("size {path}"), e))?;
    Ok(())
}

/// Whether `args` give `flag`, as `FLAG=VALUE` or `FLAG VALUE`.
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| {
        a == flag
            || a.strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// Whether a flag starting with `prefix` is among `args`.
fn given(args: &[String], prefix: &str) -> bool {
    args.iter().any(|a| a.starts_with(prefix))
}

fn run(argv: &[String]) -> Result<u8, Failure> {
    let plan = parse(argv)?;
    // A unix program takes every argument; a tender its own flags.
    let (mut tender_args, mut guest_args): (Vec<String>, Vec<String>) = plan
        .args
        .iter()
        .cloned()
        .partition(|a| plan.tender.is_some() && TENDER_FLAGS.iter().any(|p| a.starts_with(p)));

    let mut keep = Vec::new();
    for (i, net) in plan.nets.iter().enumerate() {
        if given(&tender_args, &format!("--net:{net}=")) {
            continue;
        }
        if i > 0 {
            return Err(Failure(format!(
                "only the first network device gets {IFACE}; hint: attach {net} yourself with --net:{net}=..."
            )));
        }
        let wired = wire("kiln0")?;
        let m = wired.mac;
        tender_args.push(format!("--net:{net}=@{}", wired.tap.as_raw_fd()));
        tender_args.push(format!(
            "--net-mac:{net}={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        ));
        // The container's arguments win over what eth0 says.
        let mut extra = Vec::new();
        if let Some((addr, prefix)) = wired.ipv4
            && !has_flag(&guest_args, "--ipv4")
        {
            extra.push(format!("--ipv4={addr}/{prefix}"));
        }
        if let Some(gw) = wired.gateway
            && !has_flag(&guest_args, "--ipv4-gateway")
        {
            extra.push(format!("--ipv4-gateway={gw}"));
        }
        guest_args.splice(0..0, extra);
        keep.push(wired.tap);
    }
    for block in &plan.blocks {
        if given(&tender_args, &format!("--block:{block}=")) {
            continue;
        }
        let path = format!("{BLOCK_DIR}/{block}.img");
        ensure_disk(&path)?;
        tender_args.push(format!("--block:{block}={path}"));
    }

    let mut command = child_command(&plan, &tender_args, &guest_args);
    sys::catch_stop_signals().map_err(|e| ("signal handlers".to_string(), e))?;
    let child = command.spawn().map_err(|e| {
        (
            format!("cannot start {}", command.get_program().display()),
            e,
        )
    })?;
    drop(keep);
    Ok(supervise(child.id()))
}

/// The child to start: the tender with its flags, `--`, the image and the
/// guest's arguments, each quoted where it needs it (the tender joins them
/// into one command line the guest splits MirageOS's way, so each arrives
/// intact); a unix image with its arguments as they are.
fn child_command(plan: &Plan, tender_args: &[String], guest_args: &[String]) -> Command {
    match &plan.tender {
        Some(tender) => {
            let mut c = Command::new(tender);
            c.args(tender_args).arg("--").arg(&plan.image).args(
                guest_args
                    .iter()
                    .map(|a| kiln_args::cmdline::quote(a).into_owned()),
            );
            c
        }
        None => {
            let mut c = Command::new(&plan.image);
            c.args(guest_args);
            c
        }
    }
}

/// Waits for `pid`, passing stop signals on to it and reaping orphans;
/// returns its exit status (128 + N if signal N ended it).
fn supervise(pid: u32) -> u8 {
    loop {
        match sys::wait_any() {
            sys::Waited::Exited(p, status) if p == pid => {
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status) as u8
                } else {
                    128u8.wrapping_add(libc::WTERMSIG(status) as u8)
                };
            }
            sys::Waited::Exited(..) => {}
            sys::Waited::Interrupted => {
                if let Some(signal) = sys::take_signal() {
                    sys::kill(pid, signal);
                }
            }
            sys::Waited::NoChild => return 1,
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(status) => ExitCode::from(status),
        Err(Failure(message)) => {
            eprintln!("kiln-oci-entry: error: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn guest_arguments_are_quoted_for_a_tender_only() {
        let argv = |c: &Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let guest = strings(&["--msg", "a \"b\" c\\", ""]);
        let mut plan = Plan {
            tender: Some("/kiln/kiln-spt".into()),
            image: "/kiln/www.spt".into(),
            ..Plan::default()
        };
        let c = child_command(&plan, &strings(&["--mem=64"]), &guest);
        assert_eq!(
            argv(&c),
            [
                "--mem=64",
                "--",
                "/kiln/www.spt",
                "--msg",
                r#""a \"b\" c\\""#,
                r#""""#
            ]
        );
        plan.tender = None;
        assert_eq!(argv(&child_command(&plan, &[], &guest)), guest);
    }

    #[test]
    fn the_plan_and_the_containers_arguments_are_split_at_the_separator() {
        let plan = parse(&strings(&[
            "--tender=/kiln/kiln-spt",
            "--image=/kiln/www.spt",
            "--net=service",
            "--",
            "--port=80",
            "--net=x",
        ]))
        .map_err(|f| f.0)
        .unwrap();
        assert_eq!(plan.tender.as_deref(), Some("/kiln/kiln-spt"));
        assert_eq!(plan.nets, ["service"]);
        assert_eq!(plan.args, ["--port=80", "--net=x"]);
        assert!(parse(&strings(&["--tender=x", "--"])).is_err());
        assert!(parse(&strings(&["--tender=a", "--image=b", "--bogus=1"])).is_err());
    }

    #[test]
    fn a_flag_is_told_from_a_longer_one() {
        let args = strings(&["--ipv4-gateway=10.0.0.1", "--port", "80"]);
        assert!(!has_flag(&args, "--ipv4"));
        assert!(has_flag(&args, "--ipv4-gateway"));
        assert!(has_flag(&strings(&["--ipv4", "10.0.0.2/24"]), "--ipv4"));
    }

    #[test]
    fn the_default_gateway_is_read_from_proc_net_route() {
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      eth0\t00000000\t0158580A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                      eth0\t0058580A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(gateway(routes, "eth0"), Some(Ipv4Addr::new(10, 88, 88, 1)));
        assert_eq!(gateway(routes, "eth1"), None);
        assert_eq!(gateway("garbage\nline", "eth0"), None);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 0, 0)), 16);
    }
}
