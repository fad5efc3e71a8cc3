//! Per-device block counters for `kiln stats` and `kiln inspect`, from
//! whoever serves the requests: kiln-hvt and, on unix, the unikernel's
//! runtime kiln-unix (which count in a file the daemon names,
//! `kiln_abi::block_stats`), and QEMU (`query-blockstats` over QMP). On
//! spt the guest process reads and writes its files itself and nothing
//! outside it counts per device: the process's storage totals
//! (`/proc/PID/io`) are what there is.

use std::path::Path;

use serde_json::{Value, json};

use crate::proto::{Spec, Target};

/// The counters of the unit `spec` runs, whose directory is `dir`:
/// `{"counted_by": ..., "devices": [...]}`, or `{"counted_by": null,
/// "why": ...}` where nothing counts per device.
pub(crate) fn counters(spec: &Spec, dir: &Path) -> Value {
    if spec.block.is_empty() {
        return json!({"counted_by": null, "why": "no block device", "devices": []});
    }
    match spec.target {
        Target::Hvt | Target::Unix => match from_file(&crate::daemon::block_stats_path(dir)) {
            Ok(devices) => {
                let by = if spec.target == Target::Hvt {
                    "kiln-hvt"
                } else {
                    "kiln-unix"
                };
                json!({"counted_by": by, "devices": devices})
            }
            Err(why) => json!({"counted_by": null, "why": why, "devices": []}),
        },
        Target::Virtio => {
            let socket = crate::virtio::qmp_socket(dir);
            match socket
                .ok_or_else(|| "no QMP socket".to_string())
                .and_then(|s| crate::qmp::blockstats(&s))
            {
                Ok(stats) => {
                    let names = crate::virtio::block_names(spec);
                    let devices: Vec<Value> = stats
                        .into_iter()
                        .filter_map(|s| {
                            let i: usize = s.drive.strip_prefix("disk")?.parse().ok()?;
                            Some(device(
                                names.get(i)?,
                                [s.reads, s.writes, s.read_bytes, s.written_bytes, s.errors],
                            ))
                        })
                        .collect();
                    json!({"counted_by": "qemu", "devices": devices})
                }
                Err(why) => json!({"counted_by": null, "why": why, "devices": []}),
            }
        }
        Target::Spt => json!({
            "counted_by": null,
            "why": "on spt the guest process does its own reads and writes; its storage totals are under process",
            "devices": [],
        }),
    }
}

fn device(name: &str, [reads, writes, read_bytes, written_bytes, errors]: [u64; 5]) -> Value {
    json!({
        "device": name,
        "reads": reads,
        "writes": writes,
        "read_bytes": read_bytes,
        "written_bytes": written_bytes,
        "errors": errors,
    })
}

/// kiln-hvt's or kiln-unix's file, read until two reads agree (the tender updates it
/// while it runs; a counter is one aligned 8-byte store, but a read of
/// the file is not one load).
fn from_file(path: &Path) -> Result<Vec<Value>, String> {
    let mut last = None;
    for _ in 0..10 {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if last.as_ref() == Some(&bytes) {
            break;
        }
        last = Some(bytes);
    }
    let bytes = last.unwrap_or_default();
    let records = kiln_abi::block_stats::parse(&bytes).ok_or_else(|| {
        "no block counters were kept (Solo5's tender, an image built by an older kiln, or not started yet)"
            .to_string()
    })?;
    Ok(records
        .map(|r| {
            device(
                r.name().unwrap_or("?"),
                [r.reads, r.writes, r.read_bytes, r.written_bytes, r.errors],
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hvt_counters_are_read_from_the_file() {
        let dir = std::env::temp_dir().join(format!("kiln-block-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("block-stats");
        let mut file = vec![0u8; kiln_abi::block_stats::FILE_LEN];
        file[..8].copy_from_slice(&kiln_abi::block_stats::MAGIC.to_le_bytes());
        file[8..16].copy_from_slice(&1u64.to_le_bytes());
        let r = kiln_abi::block_stats::record_offset(0);
        file[r..r + 7].copy_from_slice(b"storage");
        let w = r + kiln_abi::block_stats::field::WRITTEN_BYTES;
        file[w..w + 8].copy_from_slice(&4096u64.to_le_bytes());
        std::fs::write(&path, &file).unwrap();
        let devices = from_file(&path).unwrap();
        assert_eq!(devices[0]["device"], "storage");
        assert_eq!(devices[0]["written_bytes"], 4096);
        // An empty file: a tender that keeps none (Solo5's).
        std::fs::write(&path, b"").unwrap();
        assert!(from_file(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
