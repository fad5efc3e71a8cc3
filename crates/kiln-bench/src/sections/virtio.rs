//! virtio: kiln's PVH image on QEMU's microvm under KVM, each figure beside
//! a baseline of the same run: hello's boot (`--times 0`) against the
//! floor guest (a PVH ELF whose first instructions write isa-debug-exit)
//! under the same QEMU command line, and www's wrk requests/s against
//! www.hvt under kiln-hvt, alternating in one network namespace over one
//! tap. QEMU's command line is the one `kiln run -t virtio --print-command`
//! prints.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::network::{Server, start_www, wrk_figures};
use super::{Prepared, progress};
use crate::error::{BenchError, tail};
use crate::exec::{self, Argv, Context, Service, argv};
use crate::netns::{GUEST_V4, Netns, PREFIX, TAP};
use crate::report::{Baseline, Row, Status, Summary};
use crate::setup::{self, Availability, Built, Env, Variant, kvm_missing};

const SECTION: &str = "virtio";
const BOOT: &str = "hello boot, microvm+KVM";
const WRK: &str = "www wrk requests/s";
/// How long a server may take to answer its first request.
const READY: Duration = Duration::from_secs(30);
/// Longest one QEMU boot may take.
const BOOT_LIMIT: Duration = Duration::from_secs(30);

/// `kiln configure -t virtio` and `kiln build -t virtio` of a copy of
/// `examples/APP`; the image.
pub(crate) fn build(env: &Env, app: &str) -> Result<PathBuf, String> {
    build_copy(env, app, &format!("{app}-virtio"), |_| Ok(()))
}

/// [`build`] of the copy `WORK/apps/COPY` of `examples/APP`, which `add`
/// may change (add files to) before it is built.
fn build_copy(
    env: &Env,
    app: &str,
    copy: &str,
    add: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = env.copy_example(app, copy).map_err(|e| e.to_string())?;
    add(&dir)?;
    let target = env.unikernel_target();
    for step in ["configure", "build"] {
        let args = [
            step.as_ref(),
            "-t".as_ref(),
            "virtio".as_ref(),
            dir.as_os_str(),
        ];
        let f = env
            .kiln(&args, Some(&target))
            .map_err(|e| format!("{step}: {e}"))?;
        if !f.status.success() {
            return Err(format!("{step}: {}", tail(&f.stderr, 400)));
        }
    }
    let image = dir.join("dist").join(format!("{app}.virtio"));
    if image.is_file() {
        Ok(image)
    } else {
        Err(format!("kiln build made no {}", image.display()))
    }
}

/// QEMU's program and arguments up to `-kernel` as `kiln run -t virtio
/// --print-command` prints them for `image`'s project with `args` (`-M
/// microvm`, KVM, the devices of the flags), and a command that adds
/// `-kernel KERNEL -append APPEND` to them.
struct Qemu {
    base: Vec<String>,
}

impl Qemu {
    fn for_image(env: &Env, image: &Path, args: &[&str]) -> Result<Qemu, String> {
        let dir = image
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("{} is not in a project's dist", image.display()))?;
        let mut a: Vec<&std::ffi::OsStr> = vec![
            "run".as_ref(),
            "-t".as_ref(),
            "virtio".as_ref(),
            "--print-command".as_ref(),
            dir.as_os_str(),
            "--".as_ref(),
        ];
        a.extend(args.iter().map(std::ffi::OsStr::new));
        let f = env
            .kiln(&a, Some(&env.unikernel_target()))
            .map_err(|e| e.to_string())?;
        if !f.status.success() {
            return Err(format!("--print-command: {}", tail(&f.stderr, 400)));
        }
        let words: Vec<String> = f.stdout.split_whitespace().map(str::to_owned).collect();
        let kernel = words
            .iter()
            .position(|w| w == "-kernel")
            .ok_or_else(|| format!("no -kernel in `{}`", f.stdout.trim()))?;
        Ok(Qemu {
            base: words[..kernel].to_vec(),
        })
    }

    fn argv(&self, kernel: &Path, append: &str) -> Argv {
        let mut a = argv(&self.base);
        a.push("-kernel".into());
        a.push(kernel.as_os_str().to_owned());
        a.push("-append".into());
        a.push(OsString::from(append));
        a
    }
}

/// One boot of `kernel` to its exit; milliseconds. QEMU exits 1 for a
/// guest status of 0 (`(0 << 1) | 1`).
fn boot_once(qemu: &Qemu, kernel: &Path, append: &str) -> Result<f64, BenchError> {
    let a = qemu.argv(kernel, append);
    let start = Instant::now();
    let f = exec::run(&a, Context::default(), BOOT_LIMIT)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if f.status.code() == Some(1) {
        Ok(ms)
    } else {
        Err(BenchError::Parse {
            what: "exit status 1 (guest status 0)",
            program: "qemu-system-x86_64",
            output: tail(&format!("{}{}", f.stdout, f.stderr), 400),
        })
    }
}

/// The boot row: hello and the floor guest, interleaved.
fn boot_row(p: &Prepared, hello: &Path) -> Row {
    let measure = || -> Result<(Vec<f64>, Vec<f64>), String> {
        let qemu = Qemu::for_image(&p.env, hello, &["--times", "0"])?;
        let floor = p.env.work.join("floor.virtio");
        std::fs::write(&floor, kiln_virtio::host::floor_image())
            .map_err(|e| format!("write {}: {e}", floor.display()))?;
        let (mut f, mut h) = (Vec::new(), Vec::new());
        for _ in 0..p.counts.boot_runs {
            f.push(boot_once(&qemu, &floor, "").map_err(|e| format!("floor: {e}"))?);
            h.push(boot_once(&qemu, hello, "--times 0").map_err(|e| e.to_string())?);
        }
        Ok((f, h))
    };
    match measure() {
        Ok((floor, hello)) => {
            Row::samples(SECTION, BOOT, "virtio", &hello, "ms").against(Some(Baseline {
                name: "floor guest, same QEMU command line".into(),
                value: Summary::of(&floor).median,
            }))
        }
        Err(e) => Row::missing(SECTION, BOOT, "virtio", "ms", Status::Failed(e)),
    }
}

/// `image` (whose net device is `service`) under QEMU inside `ns` on its
/// tap, with the guest arguments `append`, as `kiln run -t virtio` would
/// start it; QEMU's output to `log`.
pub(crate) fn start_on_tap(
    env: &Env,
    ns: &Netns,
    image: &Path,
    append: &str,
    log: &Path,
) -> Result<Service, String> {
    let net = format!("--net:service={TAP}");
    let qemu = Qemu::for_image(env, image, &[&net])?;
    ns.start(&qemu.argv(image, append), log)
        .map_err(|e| e.to_string())
}

/// www.virtio under QEMU inside `ns`, answering at `http://GUEST_V4/`
/// (the neighbours forgotten first: the server before it on the tap had
/// another MAC address behind that address).
pub(super) fn start_virtio(env: &Env, ns: &Netns, image: &Path) -> Result<Server, String> {
    forget_neighbours(ns);
    let ipv4 = format!("--ipv4={GUEST_V4}/{PREFIX}");
    let log = env.work.join("www-virtio.log");
    let mut service = start_on_tap(env, ns, image, &format!("{ipv4} --port=80"), &log)?;
    let url = format!("http://{GUEST_V4}/");
    ns.wait_http(&mut service, &url, READY)
        .map_err(|e| e.to_string())?;
    Ok(Server { service, url })
}

/// Forgets the namespace's neighbours: each server on the tap has its own
/// MAC address behind the same IP address.
pub(super) fn forget_neighbours(ns: &Netns) {
    let a = ns.wrap(&argv(["ip", "neigh", "flush", "dev", TAP]));
    let _ = exec::run(&a, Context::default(), Duration::from_secs(10));
}

/// www.virtio with [`BIG_FILE`](super::BIG_FILE) added to its htdocs
/// (the network section's 1 MiB case, full runs), built; why not, as the
/// rows' status.
pub fn www_big_image(p: &Prepared) -> Result<PathBuf, Status> {
    if let Some(why) = unavailable() {
        return Err(why);
    }
    progress("network: www with a 1 MiB file for virtio (QEMU microvm, KVM)");
    let add = |dir: &Path| {
        let path = dir.join("htdocs").join(super::BIG_FILE);
        std::fs::write(&path, super::big_file())
            .map_err(|e| BenchError::io("write", path, e).to_string())
    };
    build_copy(&p.env, "www", "www-big-virtio", add)
        .map_err(|e| Status::Failed(format!("build: {e}")))
}

/// The wrk row: www.virtio and www.hvt, alternating.
fn wrk_row(p: &Prepared, www: &Path, hvt: &Built) -> Row {
    let secs = if p.counts.quick { 3 } else { p.counts.wrk_secs };
    let rounds = if p.counts.quick { 1 } else { 3 };
    let measure = || -> Result<(Vec<f64>, Vec<f64>), String> {
        let ns = Netns::create().map_err(|e| format!("a namespace with a tap: {e}"))?;
        let (mut v, mut h) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let server = start_virtio(&p.env, &ns, www).map_err(|e| format!("virtio: {e}"))?;
            let r = wrk_figures(&ns, &server.url, secs, "www.virtio").map_err(|e| e.to_string());
            drop(server);
            v.push(r?.rps);
            forget_neighbours(&ns);
            let server = start_www(&p.env, &ns, hvt, None, READY).map_err(|e| e.to_string())?;
            let r = wrk_figures(&ns, &server.url, secs, "www.hvt").map_err(|e| e.to_string());
            drop(server);
            h.push(r?.rps);
        }
        Ok((v, h))
    };
    match measure() {
        Ok((virtio, hvt)) => {
            Row::samples(SECTION, WRK, "virtio", &virtio, "req/s").against(Some(Baseline {
                name: "www.hvt, same run".into(),
                value: Summary::of(&hvt).median,
            }))
        }
        Err(e) => Row::missing(SECTION, WRK, "virtio", "req/s", Status::Failed(e)),
    }
}

/// Whether QEMU is here.
pub(crate) fn qemu_missing() -> Option<String> {
    let a = argv(["qemu-system-x86_64", "--version"]);
    match exec::run(&a, Context::default(), Duration::from_secs(10)) {
        Ok(f) if f.status.success() => None,
        _ => Some("qemu-system-x86_64 does not run; hint: apt-get install qemu-system-x86".into()),
    }
}

/// Why virtio guests cannot run here, if they cannot: no KVM, or no QEMU.
pub(crate) fn unavailable() -> Option<Status> {
    if let Some(why) = kvm_missing() {
        return Some(Status::NotAvailable(why));
    }
    qemu_missing().map(Status::Failed)
}

/// www.virtio on microvm+KVM on `ns`'s tap, for the network section's
/// rows (the image is this section's copy, built once); why not, as the
/// rows' status.
pub fn www_on_tap(p: &Prepared, ns: &Netns) -> Result<Server, Status> {
    if let Some(why) = unavailable() {
        return Err(why);
    }
    progress("network: www on virtio (QEMU microvm, KVM)");
    let www = build(&p.env, "www").map_err(|e| Status::Failed(format!("build: {e}")))?;
    start_virtio(&p.env, ns, &www).map_err(Status::Failed)
}

/// blockbench.virtio for the storage section's rows: a function that runs
/// it on microvm+KVM (`kiln run -t virtio --image`, which gives the
/// unikernel's status back) with the block flags and arguments given, and
/// returns its stdout; why not, as the rows' status.
pub fn blockbench(p: &Prepared) -> Result<Box<super::storage::Runner<'_>>, Status> {
    if let Some(why) = unavailable() {
        return Err(why);
    }
    let image = build(&p.env, "blockbench").map_err(|e| Status::Failed(format!("build: {e}")))?;
    Ok(Box::new(move |blocks: &[String], args: &[&str]| {
        let image = format!("--image={}", image.display());
        let head = ["run", "-t", "virtio", image.as_str(), "--"];
        let mut a: Vec<&std::ffi::OsStr> = head.iter().map(std::ffi::OsStr::new).collect();
        a.extend(blocks.iter().map(std::ffi::OsStr::new));
        a.extend(args.iter().map(std::ffi::OsStr::new));
        let f = p.env.kiln(&a, Some(&p.env.unikernel_target()))?;
        if f.status.success() {
            Ok(f.stdout)
        } else {
            Err(BenchError::Setup(format!(
                "kiln run -t virtio blockbench failed ({}): {}{}",
                f.status,
                f.stdout.trim(),
                tail(&f.stderr, 400)
            )))
        }
    }))
}

/// Runs the virtio section.
pub fn run(p: &Prepared) -> Vec<Row> {
    progress("virtio: hello's boot and www's requests/s on QEMU microvm+KVM");
    let missing = |status: &Status| {
        vec![
            Row::missing(SECTION, BOOT, "virtio", "ms", status.clone()),
            Row::missing(SECTION, WRK, "virtio", "req/s", status.clone()),
        ]
    };
    if let Some(why) = kvm_missing() {
        return missing(&Status::NotAvailable(why));
    }
    if let Some(why) = qemu_missing() {
        return missing(&Status::Failed(why));
    }
    let mut rows = Vec::new();
    progress("virtio: building hello and www");
    match build(&p.env, "hello") {
        Ok(hello) => {
            progress("virtio: hello's boot against the floor guest");
            rows.push(boot_row(p, &hello));
        }
        Err(e) => rows.push(Row::missing(
            SECTION,
            BOOT,
            "virtio",
            "ms",
            Status::Failed(format!("build: {e}")),
        )),
    }
    if let Some(why) = crate::netns::root_missing() {
        rows.push(Row::missing(
            SECTION,
            WRK,
            "virtio",
            "req/s",
            Status::NotAvailable(why),
        ));
        return rows;
    }
    // www.hvt: the network section's image when it was built, else one of
    // this section's own.
    let hvt = match p.www.iter().find(|(v, _)| *v == Variant::Hvt) {
        Some((_, a)) => a.clone(),
        None => match p.env.copy_example("www", "www-hvt") {
            Ok(dir) => setup::build(&p.env, &dir, Variant::Hvt, true),
            Err(e) => Availability::Broken(e.to_string()),
        },
    };
    let fail = |e: String| Row::missing(SECTION, WRK, "virtio", "req/s", Status::Failed(e));
    rows.push(match (build(&p.env, "www"), &hvt) {
        (Ok(www), Availability::Ready(hvt)) => {
            progress("virtio: www against www.hvt");
            wrk_row(p, &www, hvt)
        }
        (Err(e), _) => fail(format!("build: {e}")),
        (_, Availability::Broken(e)) => fail(format!("www.hvt: {e}")),
    });
    rows
}
