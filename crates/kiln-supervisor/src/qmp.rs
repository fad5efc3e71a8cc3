//! QEMU's machine protocol (QMP) for virtio unikernels: the daemon runs
//! each QEMU with a QMP socket in the unit's directory and uses it for the
//! block counters (`query-blockstats`) and the stop request (the ACPI power
//! button, `system_powerdown`, sent only to a guest that handles it).
//!
//! A session: QEMU's greeting, `qmp_capabilities`, then one command at a
//! time, each answered by a `return` or an `error` line; asynchronous
//! `event` lines in between are skipped. Every read and write is bounded in
//! time, so a QEMU that hangs cannot hold the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// How long one QMP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The longest line read from QEMU.
const MAX_LINE: usize = 1 << 20;

/// An open QMP session.
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket` and negotiates capabilities.
    pub(crate) fn connect(socket: &Path) -> Result<Qmp, String> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| format!("cannot connect to QMP {}: {e}", socket.display()))?;
        let io = |e: std::io::Error| format!("QMP: {e}");
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.line()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QMP: no greeting but {greeting}"));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Reads one JSON line.
    fn line(&mut self) -> Result<Value, String> {
        let mut buf = Vec::new();
        let n = std::io::Read::take(&mut self.reader, MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("QMP: {e}"))?;
        if n == 0 {
            return Err("QMP: QEMU closed the socket".into());
        }
        serde_json::from_slice(&buf).map_err(|e| format!("QMP: {e}"))
    }

    /// Runs `command` with `arguments`; its `return` value.
    pub(crate) fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(a) = arguments {
            request["arguments"] = a;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("QMP: {e}"))?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {command}: {e}"));
            }
            // An event: skipped.
        }
    }

    /// `human-monitor-command`: HMP's text for `command`.
    fn hmp(&mut self, command: &str) -> Result<String, String> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command })),
        )?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }
}

/// One block device's counters as QEMU keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockStats {
    /// QEMU's drive id (`disk0`, ...).
    pub drive: String,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub errors: u64,
}

/// `query-blockstats`, by drive id.
pub(crate) fn blockstats(socket: &Path) -> Result<Vec<BlockStats>, String> {
    let r = Qmp::connect(socket)?.execute("query-blockstats", None)?;
    Ok(parse_blockstats(&r))
}

fn parse_blockstats(r: &Value) -> Vec<BlockStats> {
    r.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    let s = d.get("stats")?;
                    let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
                    Some(BlockStats {
                        drive: d.get("device")?.as_str()?.to_string(),
                        reads: n("rd_operations"),
                        writes: n("wr_operations"),
                        read_bytes: n("rd_bytes"),
                        written_bytes: n("wr_bytes"),
                        errors: n("failed_rd_operations") + n("failed_wr_operations"),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether HMP's `info pic` text shows IOAPIC 0's input `pin` unmasked and
/// routed to `vector`: how a kiln guest declares that it handles the
/// power button (kiln-virtio's shutdown device routes the GED's line).
pub(crate) fn pin_routed(info_pic: &str, pin: u32, vector: u8) -> bool {
    let mut in_first = false;
    for line in info_pic.lines() {
        let t = line.trim();
        if t.starts_with("ioapic") {
            in_first = t.starts_with("ioapic0:") || t.starts_with("ioapic:");
            continue;
        }
        if !in_first {
            continue;
        }
        let mut words = t.split_whitespace();
        if words.next() != Some("pin") || words.next() != Some(&pin.to_string()) {
            continue;
        }
        let Some(entry) = words
            .next()
            .and_then(|w| w.strip_prefix("0x"))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return false;
        };
        let masked = entry & (1 << 16) != 0;
        return !masked && (entry & 0xff) as u8 == vector;
    }
    false
}

/// Asks the guest behind `socket` to stop with the ACPI power button, if it
/// handles one (its GED line is routed to kiln's vector); whether it was
/// asked.
pub fn power_button(socket: &Path) -> Result<bool, String> {
    let mut q = Qmp::connect(socket)?;
    let pic = q.hmp("info pic")?;
    if !pin_routed(
        &pic,
        kiln_virtio::power::MICROVM_GED_IRQ,
        kiln_virtio::power::GED_VECTOR,
    ) {
        return Ok(false);
    }
    q.execute("system_powerdown", None)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_PIC: &str = "ioapic0: ver=0x20 id=0x00 sel=0x13 (redir[9])
  pin 8  0x0000000000010000 dest=0 vec=0   active-hi edge  masked fixed  physical
  pin 9  0x0000000000000031 dest=0 vec=49  active-hi edge         fixed  physical
  pin 10 0x0000000000010000 dest=0 vec=0   active-hi edge  masked fixed  physical
  IRR        (none)
ioapic1: ver=0x20 id=0x00 sel=0x00
  pin 9  0x0000000000010000 dest=0 vec=0   active-hi edge  masked fixed  physical
";

    #[test]
    fn the_power_pin_is_read_from_the_first_ioapic() {
        assert!(pin_routed(INFO_PIC, 9, 49));
        assert!(!pin_routed(INFO_PIC, 9, 48));
        assert!(!pin_routed(INFO_PIC, 8, 0));
        assert!(!pin_routed(INFO_PIC, 1, 49));
        assert!(!pin_routed("", 9, 49));
        let masked = INFO_PIC.replace("0x0000000000000031", "0x0000000000010031");
        assert!(!pin_routed(&masked, 9, 49));
    }

    #[test]
    fn blockstats_by_drive() {
        let r = json!([
            {"device": "disk0", "qdev": "/machine/peripheral-anon/device[1]",
             "stats": {"rd_operations": 3, "wr_operations": 5, "rd_bytes": 1536,
                       "wr_bytes": 2560, "failed_rd_operations": 0, "failed_wr_operations": 1}},
            {"qdev": "no device name", "stats": {}}
        ]);
        assert_eq!(
            parse_blockstats(&r),
            vec![BlockStats {
                drive: "disk0".into(),
                reads: 3,
                writes: 5,
                read_bytes: 1536,
                written_bytes: 2560,
                errors: 1,
            }]
        );
    }
}
