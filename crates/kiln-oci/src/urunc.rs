//! What urunc (the unikernel container runtime) reads from an image: its
//! `com.urunc.unikernel.*` annotations, and the `/urunc.json` file it falls
//! back to when the engine drops annotations (values base64-encoded there).
//!
//! Names from urunc's `pkg/unikontainers/annotations.go` (`annotType`,
//! `annotBinary`, `annotHypervisor`, `annotNetDev`, `annotBlkDev`, ...) and,
//! for the command line of older releases, `config.go` (`annotCmdLine`).
//! kiln images are Solo5 guests with MirageOS's command line
//! (`--ipv4=ADDR/N --ipv4-gateway=GW`), so their type is `mirage`: urunc
//! starts them with `solo5-hvt`/`solo5-spt --net:DEV=TAP --net-mac:DEV=MAC
//! --block:DEV=FILE IMAGE --ipv4=... --ipv4-gateway=... CMDLINE`.

use std::collections::BTreeMap;

use base64::Engine as _;

/// The guest's kind.
pub const TYPE: &str = "com.urunc.unikernel.unikernelType";
/// The guest's version (free text).
pub const VERSION: &str = "com.urunc.unikernel.unikernelVersion";
/// The image's path inside the container's root.
pub const BINARY: &str = "com.urunc.unikernel.binary";
/// The guest's arguments (older urunc; newer ones take the process args).
pub const CMDLINE: &str = "com.urunc.unikernel.cmdline";
/// The monitor: `hvt` or `spt`.
pub const HYPERVISOR: &str = "com.urunc.unikernel.hypervisor";
/// Whether the container's root is given to the guest (`false` here).
pub const MOUNT_ROOTFS: &str = "com.urunc.unikernel.mountRootfs";
/// The Solo5 name of the network device urunc attaches (default `service`).
pub const SOLO5_NET_DEV: &str = "com.urunc.unikernel.solo5NetDev";
/// The Solo5 name of the block device urunc attaches (default `storage`).
pub const SOLO5_BLK_DEV: &str = "com.urunc.unikernel.solo5BlkDev";
/// The file urunc reads at the container's root when annotations are lost.
pub const JSON_PATH: &str = "urunc.json";
/// urunc's name for a Solo5 guest with MirageOS's command line.
pub const MIRAGE: &str = "mirage";

/// A native image's description for urunc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Native {
    /// `/unikernel/NAME.TARGET`.
    pub binary: String,
    /// `hvt` or `spt`.
    pub hypervisor: String,
    /// The guest's default arguments as one command line: each quoted
    /// for MirageOS's splitting where it needs it, space-separated.
    pub cmdline: String,
    /// kiln's version.
    pub version: String,
    /// The manifest's network device, if any.
    pub net_dev: Option<String>,
    /// The manifest's block device, if any.
    pub blk_dev: Option<String>,
}

impl Native {
    /// The annotations (and labels) of the image.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (TYPE.to_string(), MIRAGE.to_string()),
            (VERSION.to_string(), self.version.clone()),
            (BINARY.to_string(), self.binary.clone()),
            (HYPERVISOR.to_string(), self.hypervisor.clone()),
            (CMDLINE.to_string(), self.cmdline.clone()),
            (MOUNT_ROOTFS.to_string(), "false".to_string()),
        ]);
        if let Some(net) = &self.net_dev {
            a.insert(SOLO5_NET_DEV.to_string(), net.clone());
        }
        if let Some(blk) = &self.blk_dev {
            a.insert(SOLO5_BLK_DEV.to_string(), blk.clone());
        }
        a
    }

    /// `/urunc.json`: the same keys, each value base64-encoded as urunc's
    /// `UnikernelConfig.decode` expects.
    pub fn json(&self) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let map: serde_json::Map<String, serde_json::Value> = self
            .annotations()
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(b64.encode(v))))
            .collect();
        let mut bytes = serde_json::to_vec_pretty(&map).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_base64_and_keys_match_the_annotations() {
        let native = Native {
            binary: "/unikernel/www.spt".into(),
            hypervisor: "spt".into(),
            cmdline: "--port=80".into(),
            version: "0.1.0".into(),
            net_dev: Some("service".into()),
            blk_dev: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&native.json()).unwrap();
        let annotations = native.annotations();
        assert_eq!(json.as_object().unwrap().len(), annotations.len());
        assert_eq!(json[BINARY], "L3VuaWtlcm5lbC93d3cuc3B0");
        assert_eq!(json[HYPERVISOR], "c3B0");
        assert_eq!(json[TYPE], "bWlyYWdl");
        assert_eq!(annotations[SOLO5_NET_DEV], "service");
        assert!(!annotations.contains_key(SOLO5_BLK_DEV));
    }
}
