//! Taps for `--net:DEVICE=BRIDGE`: one per net device, created before the
//! unikernel starts, attached to an existing bridge, deleted when it exits.
//! The work is done by `ip(8)` from iproute2.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

/// The name of unit `id`'s tap number `index`: `kiln<id>-<index>`, within
/// the 15 bytes of an interface name.
pub fn tap_name(id: u64, index: usize) -> String {
    format!("kiln{id}-{index}")
}

/// Whether `bridge` exists and is a bridge.
pub fn is_bridge(bridge: &str) -> bool {
    Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .is_dir()
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates tap `tap`, attaches it to `bridge` and brings it up; on failure
/// nothing is left behind.
pub fn create_tap(tap: &str, bridge: &str) -> Result<(), String> {
    if !is_bridge(bridge) {
        return Err(format!("there is no bridge {bridge}"));
    }
    // A tap left by a daemon killed at the wrong instant is replaced.
    if Path::new("/sys/class/net").join(tap).exists() {
        delete_tap(tap);
    }
    ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
    let attached = ip(&["link", "set", "dev", tap, "master", bridge])
        .and_then(|()| ip(&["link", "set", "dev", tap, "up"]));
    if let Err(e) = attached {
        delete_tap(tap);
        return Err(e);
    }
    Ok(())
}

/// Deletes tap `tap` if it exists.
pub fn delete_tap(tap: &str) {
    if Path::new("/sys/class/net").join(tap).exists()
        && let Err(e) = ip(&["link", "del", "dev", tap])
    {
        eprintln!("kiln daemon: {e}");
    }
}

/// A tap's counters, from `/sys/class/net/TAP/statistics` (the host's
/// view: its `rx` is what the unikernel sent).
#[derive(Debug, Clone, Serialize)]
pub struct TapStats {
    /// The tap.
    pub tap: String,
    /// Bytes the unikernel sent.
    pub guest_tx_bytes: u64,
    /// Frames the unikernel sent.
    pub guest_tx_packets: u64,
    /// Bytes the unikernel was sent.
    pub guest_rx_bytes: u64,
    /// Frames the unikernel was sent.
    pub guest_rx_packets: u64,
    /// Frames dropped on the way to the unikernel.
    pub guest_rx_dropped: u64,
}

/// The counters of `tap`, if it exists.
pub fn tap_stats(tap: &str) -> Option<TapStats> {
    let dir = Path::new("/sys/class/net").join(tap).join("statistics");
    let get = |f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(TapStats {
        tap: tap.to_string(),
        guest_tx_bytes: get("rx_bytes")?,
        guest_tx_packets: get("rx_packets")?,
        guest_rx_bytes: get("tx_bytes")?,
        guest_rx_packets: get("tx_packets")?,
        guest_rx_dropped: get("tx_dropped")?,
    })
}
