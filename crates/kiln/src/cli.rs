//! The command line of `kiln`: clap structures only; each subcommand runs in
//! its own module under `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build MirageOS-style unikernels in Rust.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new unikernel in the directory NAME
    New(NewArgs),
    /// Check unikernel.toml and the entry function, and write the generated crate
    Configure(ConfigureArgs),
    /// Configure if needed, then build DIR/dist/NAME.TARGET
    Build(BuildArgs),
    /// Build if stale, then run the unikernel with ARGS
    Run(RunArgs),
    /// Print the resolved device graph
    Describe(DescribeArgs),
    /// Remove DIR/_build and DIR/dist
    Clean(CleanArgs),
    /// Make the disk image of directory SRC that a `disk` kv_ro reads
    Image(ImageArgs),
    /// Run the daemon that owns this host's unikernels (see docs/supervisor.md)
    Daemon(DaemonArgs),
    /// Build DIR if needed, then have the daemon run it as NAME
    Up(UpArgs),
    /// List the daemon's unikernels
    Ps(PsArgs),
    /// Print a unikernel's console output
    Logs(LogsArgs),
    /// Stop a unikernel: SIGTERM, then SIGKILL after the timeout
    Stop(StopArgs),
    /// Start a stopped unikernel again
    Start(NameArgs),
    /// Stop a unikernel, then start it again
    Restart(StopArgs),
    /// Forget a stopped unikernel and its console
    Rm(RmArgs),
    /// Print a unikernel's CPU time, memory, I/O and network counters
    Stats(NameArgs),
    /// Print everything the daemon knows about a unikernel, as JSON
    Inspect(NameArgs),
    /// Build if stale, then make a reproducible OCI image of the unikernel
    Package(PackageArgs),
    /// Query an hvt or spt image's manifest or ABI, as solo5-elftool does
    #[command(subcommand)]
    Elftool(ElftoolQuery),
}

/// A target, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// A host process
    Unix,
    /// A KVM guest under kiln-hvt
    Hvt,
    /// A seccomp-sandboxed process under kiln-spt
    Spt,
    /// A PVH image for QEMU, Firecracker and cloud-hypervisor
    Virtio,
}

/// The QEMU machine of `kiln run -t virtio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MachineArg {
    /// virtio-mmio devices, no PCI, no firmware
    Microvm,
    /// virtio over PCI, through qboot (bios-microvm.bin)
    Q35,
}

/// The console device of a virtio guest under QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsoleArg {
    /// the first 16550 UART
    Serial,
    /// a virtio console (virtconsole), the 16550 beside it for boot failures
    Virtio,
}

/// How QEMU runs a virtio guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM (`-cpu host,-arch-capabilities`)
    Kvm,
    /// QEMU's emulator, TCG (`-cpu max`)
    Tcg,
}

/// The VMM `kiln run -t virtio --print-command` prints for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmArg {
    /// qemu-system-x86_64
    Qemu,
    /// Firecracker (a configuration file for --config-file)
    Firecracker,
    /// cloud-hypervisor
    CloudHypervisor,
}

/// The `--net` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetArg {
    /// The host kernel's stack, through sockets (unix only)
    Socket,
    /// kiln's own TCP/IP stack over a network interface
    Direct,
}

/// The `--kv-ro` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvRoArg {
    /// Compiled into the image from a directory
    Baked,
    /// Read from a block device
    Disk,
}

/// `kiln new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The unikernel's name and directory: lowercase letters, digits and `-`
    pub name: PathBuf,
}

/// The options shared by the subcommands that act on a unikernel.
#[derive(Debug, Args)]
pub struct TargetOpts {
    /// The target to configure for
    #[arg(short, long, value_enum, default_value = "unix")]
    pub target: TargetArg,
}

/// The implementation choices of `configure`, also taken by `build` and
/// `run` (which configure first): given there, they replace the saved ones.
#[derive(Debug, Args)]
pub struct ChoiceOpts {
    /// The implementation of every stack device
    #[arg(long, value_enum)]
    pub net: Option<NetArg>,
    /// The implementation of every kv_ro device
    #[arg(long, value_enum)]
    pub kv_ro: Option<KvRoArg>,
}

/// `kiln configure`.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// The target.
    #[command(flatten)]
    pub target: TargetOpts,
    /// The implementations to choose.
    #[command(flatten)]
    pub choices: ChoiceOpts,
    /// The unikernel's directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The target.
    #[command(flatten)]
    pub target: TargetOpts,
    /// The implementations to choose [default: those of the last configure].
    #[command(flatten)]
    pub choices: ChoiceOpts,
    /// The unikernel's directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// `kiln run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The target.
    #[command(flatten)]
    pub target: TargetOpts,
    /// The implementations to choose [default: those of the last configure].
    #[command(flatten)]
    pub choices: ChoiceOpts,
    /// Guest memory in MiB on hvt and spt [default: the tender's, 512]
    /// and virtio [default: 128]
    #[arg(long, value_name = "MB")]
    pub mem: Option<u64>,
    /// virtio: the QEMU machine
    #[arg(long, value_enum, default_value = "microvm")]
    pub machine: MachineArg,
    /// virtio: QEMU's accelerator [default: kvm when /dev/kvm opens, else tcg]
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// virtio: the guest's console device under QEMU
    #[arg(long, value_enum, default_value = "serial")]
    pub console: ConsoleArg,
    /// virtio: print the VMM's command line (or Firecracker's
    /// configuration) instead of running it
    #[arg(long)]
    pub print_command: bool,
    /// virtio: the VMM --print-command prints for
    #[arg(long, value_enum, default_value = "qemu")]
    pub vmm: VmmArg,
    /// virtio: run this image instead of building DIR
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// On hvt: stop at the entry point and wait for gdb on ADDR:PORT
    /// [default: 127.0.0.1:1234]; builds the image with debug info and a
    /// tender with its gdb module (dist/kiln-hvt-gdb). On spt (plain
    /// --gdb): builds with debug info, stops the guest process before its
    /// first instruction and prints the `gdb -p PID IMAGE` that attaches
    #[arg(
        long,
        value_name = "ADDR:PORT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "127.0.0.1:1234"
    )]
    pub gdb: Option<String>,
    /// On hvt and spt: when the unikernel aborts or faults (on spt also a
    /// forbidden system call), write an ELF core file to DIR (`gdb
    /// dist/NAME.hvt DIR/core.kiln-hvt.PID`, `gdb dist/NAME.spt
    /// DIR/core.kiln-spt.PID` open it)
    #[arg(long, value_name = "DIR")]
    pub dumpcore: Option<PathBuf>,
    /// The unikernel's directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Runtime arguments of the unikernel (after `--`); on hvt and spt the
    /// device flags (--net:NAME=..., --net-mac:..., --block:NAME=...,
    /// --block-sector-size:...) go to the tender
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `kiln describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Print Graphviz dot instead of text
    #[arg(long)]
    pub dot: bool,
    /// The target.
    #[command(flatten)]
    pub target: TargetOpts,
    /// The implementations to choose.
    #[command(flatten)]
    pub choices: ChoiceOpts,
    /// The unikernel's directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// `kiln clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// The unikernel's directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// `kiln image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The directory whose files become the image (symbolic links followed)
    pub src: PathBuf,
    /// The image file to write (attach it with --block:NAME=OUT)
    pub out: PathBuf,
}

/// Where the daemon's control socket is.
#[derive(Debug, Args)]
pub struct SocketOpts {
    /// The daemon's control socket [default: $KILN_SOCKET, else /run/kiln/kiln.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `kiln daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The state directory: state.json and each unikernel's console
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kiln")]
    pub state: PathBuf,
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// The group (name or number) whose members may use the socket besides root
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Console bytes kept in memory per unikernel, in KiB
    #[arg(long, value_name = "KIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub console_ring: u32,
    /// Size at which a unikernel's console.log is rotated, in KiB
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1048576))]
    pub console_file: u32,
    /// Connections served at once
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
    /// Failed restarts in a row before a unikernel is marked failed
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub restart_limit: u32,
}

/// The restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartArg {
    /// Never restart
    Never,
    /// Restart after a failure (not after exit 0, nor a usage error)
    OnFailure,
    /// Restart after any exit but a usage error
    Always,
}

/// `kiln up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// The target [default: unix, or the extension of IMAGE]
    #[arg(short, long, value_enum)]
    pub target: Option<TargetArg>,
    /// Guest memory in MiB on hvt and spt [default: the tender's, 512]
    /// and virtio [default: 128]
    #[arg(long, value_name = "MB")]
    pub mem: Option<u64>,
    /// When the daemon starts the unikernel again after it exits
    #[arg(long, value_enum, default_value = "on-failure")]
    pub restart: RestartArg,
    /// Pin the unikernel to this CPU
    #[arg(long, value_name = "N")]
    pub cpu: Option<u32>,
    /// The unikernel's name for the daemon: a-z, 0-9, `-` and `_`
    pub name: String,
    /// The unikernel's directory (built if stale), or a built image
    /// (dist/NAME.TARGET, its tender beside it)
    pub dir: PathBuf,
    /// After DIR: --net:DEVICE=BRIDGE (a tap on that bridge, made for the
    /// unikernel and removed when it stops), --block:DEVICE=FILE, and the
    /// unikernel's runtime arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "DEVICES AND ARGS"
    )]
    pub rest: Vec<String>,
}

/// `kiln ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `kiln logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Keep printing new output until the unikernel stops
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// The unikernel
    pub name: String,
}

/// `kiln stop` and `kiln restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub timeout: u64,
    /// The unikernel
    pub name: String,
}

/// `kiln rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// Kill it first if it runs
    #[arg(short, long)]
    pub force: bool,
    /// The unikernel
    pub name: String,
}

/// The commands that name one unikernel.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The socket.
    #[command(flatten)]
    pub socket: SocketOpts,
    /// The unikernel
    pub name: String,
}

/// `kiln package --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// An OCI image layout directory
    OciDir,
    /// A tar of an OCI image layout (`podman load -i`, `skopeo copy oci-archive:`)
    OciArchive,
}

/// `kiln package --flavour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlavourArg {
    /// Runs under any OCI runtime: the static unix program, or the tender,
    /// the image and an entrypoint that wires the container's eth0 to it
    SelfContained,
    /// For urunc: the hvt or spt image alone at /unikernel/, with urunc's
    /// annotations and /urunc.json
    Native,
}

/// `kiln package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The target.
    #[command(flatten)]
    pub target: TargetOpts,
    /// Implementation choices, as for `kiln build`.
    #[command(flatten)]
    pub choices: ChoiceOpts,
    /// The image's name [default: NAME:latest, NAME the unikernel's]
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// How the image is stored
    #[arg(long, value_enum, default_value = "oci-archive")]
    pub format: FormatArg,
    /// What the image holds
    #[arg(long, value_enum, default_value = "self-contained")]
    pub flavour: FlavourArg,
    /// Package what `kiln build` left in DIR/dist; fail if it is not there
    #[arg(long)]
    pub no_build: bool,
    /// The image to write (a directory for oci-dir, a tar file for oci-archive)
    #[arg(short, long, value_name = "OUT")]
    pub out: PathBuf,
    /// The unikernel's directory
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The guest's default arguments (after `--`), replaced by the
    /// container's arguments
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `kiln elftool`: solo5-elftool's queries, with its JSON output.
#[derive(Debug, Subcommand)]
pub enum ElftoolQuery {
    /// Print the devices of IMAGE's manifest as JSON
    QueryManifest {
        /// The image (an hvt or spt unikernel, kiln's or another's)
        image: PathBuf,
    },
    /// Print IMAGE's ABI target and version as JSON
    QueryAbi {
        /// The image (an hvt or spt unikernel, kiln's or another's)
        image: PathBuf,
    },
}
