//! One module per subcommand, and what they share: the unikernel's
//! directory, target and implementation choices.

use std::path::Path;

use kiln_config::{Choices, Impl, Project, Target};

use crate::cli::{ChoiceOpts, Command, KvRoArg, NetArg, TargetArg};
use crate::error::KilnError;

mod build;
mod clean;
mod configure;
mod daemon;
mod describe;
mod elftool;
mod image;
mod new;
mod package;
mod run;
mod supervise;
mod up;

/// Runs `command`; returns the exit code.
pub fn run(command: Command) -> Result<u8, KilnError> {
    match command {
        Command::New(args) => new::run(&args),
        Command::Configure(args) => configure::run(&args),
        Command::Build(args) => build::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Describe(args) => describe::run(&args),
        Command::Clean(args) => clean::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Daemon(args) => daemon::run(&args),
        Command::Up(args) => up::run(&args),
        Command::Ps(args) => supervise::ps(&args),
        Command::Logs(args) => supervise::logs(&args),
        Command::Stop(args) => supervise::stop(&args),
        Command::Start(args) => supervise::start(&args),
        Command::Restart(args) => supervise::restart(&args),
        Command::Rm(args) => supervise::rm(&args),
        Command::Stats(args) => supervise::stats(&args),
        Command::Inspect(args) => supervise::inspect(&args),
        Command::Package(args) => package::run(&args),
        Command::Elftool(query) => Ok(elftool::run(&query)),
    }
}

fn target(arg: TargetArg) -> Target {
    match arg {
        TargetArg::Unix => Target::Unix,
        TargetArg::Hvt => Target::Hvt,
        TargetArg::Spt => Target::Spt,
        TargetArg::Virtio => Target::Virtio,
    }
}

fn choices(opts: &ChoiceOpts) -> Choices {
    Choices {
        net: opts.net.map(|n| match n {
            NetArg::Socket => Impl::Socket,
            NetArg::Direct => Impl::Direct,
        }),
        kv_ro: opts.kv_ro.map(|k| match k {
            KvRoArg::Baked => Impl::Baked,
            KvRoArg::Disk => Impl::Disk,
        }),
    }
}

fn open(dir: &Path) -> Result<Project, KilnError> {
    Ok(Project::open(dir)?)
}
