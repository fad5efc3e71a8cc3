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
    #[arg(long, value_name = "MB")]
    pub mem: Option<u64>,
    /// On hvt: stop at the entry point and wait for gdb on ADDR:PORT
    /// [default: 127.0.0.1:1234]; builds the image with debug info and a
    /// tender with its gdb module (dist/kiln-hvt-gdb)
    #[arg(
        long,
        value_name = "ADDR:PORT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "127.0.0.1:1234"
    )]
    pub gdb: Option<String>,
    /// On hvt: when the unikernel aborts or faults, write an ELF core file
    /// to DIR (`gdb dist/NAME.hvt DIR/core.kiln-hvt.PID` opens it)
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
