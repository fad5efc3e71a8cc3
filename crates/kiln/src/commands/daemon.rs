//! `kiln daemon`: runs the supervisor of this host's unikernels in the
//! foreground (under systemd, see docs/supervisor.md).

use kiln_supervisor::{Config, DaemonError};

use crate::cli::DaemonArgs;
use crate::error::KilnError;

/// Runs `kiln daemon` until it is killed.
pub fn run(args: &DaemonArgs) -> Result<u8, KilnError> {
    let socket = args
        .socket
        .socket
        .clone()
        .unwrap_or_else(kiln_supervisor::client::default_socket);
    let mut config = Config::new(args.state.clone(), socket);
    config.console.ring = args.console_ring as usize * 1024;
    config.console.file = u64::from(args.console_file) * 1024;
    config.max_connections = args.max_connections as usize;
    config.backoff.limit = args.restart_limit;
    if let Some(group) = &args.group {
        config.group = Some(resolve_group(group)?);
    }
    match kiln_supervisor::run(config) {
        Ok(()) => Ok(0),
        Err(e @ DaemonError::Busy(_)) => Err(KilnError::Usage {
            message: e.to_string(),
            hint: "one daemon per state directory; pass another --state to run a second one".into(),
        }),
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Err(KilnError::Build(message))
        }
    }
}

/// A group number, or a name looked up in /etc/group.
fn resolve_group(group: &str) -> Result<u32, KilnError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| KilnError::io("read", "/etc/group", e))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(group))
                .then(|| fields.nth(1).and_then(|g| g.parse().ok()))
                .flatten()
        })
        .ok_or_else(|| KilnError::Usage {
            message: format!("there is no group {group} in /etc/group"),
            hint: format!("create it with `groupadd {group}`, or pass a group number"),
        })
}
