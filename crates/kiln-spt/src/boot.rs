//! The guest's low memory, as `spt_abi.h` lays it out from
//! `SPT_BOOT_INFO_BASE`: the boot info, kiln's extension block
//! (`kiln_abi::spt_ext`, which Solo5 guests never look at: they follow the
//! boot info's pointers), then the tender's copy of the
//! manifest (attached entries filled in, `b.hostfd` included), then the
//! NUL-terminated command line. Built as bytes, without touching guest
//! memory, so that it is unit-tested.

use kiln_abi::hvt_ext::KILN_FEATURE_STOP;
use kiln_abi::mft::{MFT_ENTRY_SIZE, MftEntry, entry_offset};
use kiln_abi::spt::{SPT_CMDLINE_SIZE, SptBootInfo};
use kiln_abi::spt_ext::{SPT_EXT_END, SPT_EXT_MAGIC, SptExt};
use thiserror::Error;
use zerocopy::{FromBytes, IntoBytes};

use crate::module::Attached;

/// Why the low memory could not be built.
#[derive(Debug, Error)]
pub enum BootError {
    /// The guest's arguments do not fit the command line.
    #[error("the guest's arguments are {len} bytes joined, at most {max} fit the spt command line")]
    CmdlineTooLong {
        /// Their length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An argument holds a NUL byte.
    #[error("guest argument {index} contains a NUL byte")]
    Nul {
        /// The argument's position.
        index: usize,
    },
    /// An attached handle is not in the manifest.
    #[error("attached handle {handle} is not a manifest entry")]
    Handle {
        /// The handle.
        handle: u64,
    },
}

/// What goes into low memory.
#[derive(Debug, Clone)]
pub struct BootParams<'a> {
    /// The validated manifest (`struct mft`).
    pub manifest: &'a [u8],
    /// The attached devices.
    pub attached: &'a [Attached],
    /// The guest's arguments.
    pub args: &'a [String],
    /// Guest memory size.
    pub mem_size: u64,
    /// End of the image.
    pub kernel_end: u64,
    /// The epoll set.
    pub epoll_fd: i32,
    /// The internal timer.
    pub timer_fd: i32,
    /// Where a guest acknowledges kiln's stop request
    /// (`kiln_abi::spt_ext`), or 0 when it is not offered.
    pub stop_ack: u64,
    /// Other kiln feature bits the devices give the guest
    /// (`KILN_FEATURE_VNET_HDR`).
    pub features: u32,
}

/// The bytes to copy to `SPT_BOOT_INFO_BASE`.
pub fn low_memory(p: &BootParams<'_>) -> Result<Vec<u8>, BootError> {
    let cmdline = p.args.join(" ");
    if let Some(index) = p.args.iter().position(|a| a.contains('\0')) {
        return Err(BootError::Nul { index });
    }
    if cmdline.len() >= SPT_CMDLINE_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: SPT_CMDLINE_SIZE - 1,
        });
    }
    // kiln's extension block sits between the boot info and the manifest.
    let mft_at = SPT_EXT_END;
    let cmdline_at = mft_at + p.manifest.len() as u64;
    let info = SptBootInfo {
        mem_size: p.mem_size,
        kernel_end: p.kernel_end,
        cmdline: cmdline_at,
        mft: mft_at,
        epollfd: p.epoll_fd,
        timerfd: p.timer_fd,
    };
    let mut out = info.as_bytes().to_vec();
    let ext = SptExt {
        magic: SPT_EXT_MAGIC,
        features: u64::from(p.features)
            | if p.stop_ack != 0 {
                u64::from(KILN_FEATURE_STOP)
            } else {
                0
            },
        stop_ack: p.stop_ack,
    };
    out.extend_from_slice(ext.as_bytes());
    let mut mft = p.manifest.to_vec();
    for a in p.attached {
        let bytes = usize::try_from(a.handle)
            .ok()
            .filter(|&h| h > 0)
            .map(entry_offset)
            .and_then(|at| mft.get_mut(at..at + MFT_ENTRY_SIZE))
            .ok_or(BootError::Handle { handle: a.handle })?;
        let mut entry =
            MftEntry::read_from_bytes(bytes).map_err(|_| BootError::Handle { handle: a.handle })?;
        entry.info = a.info;
        // `b.hostfd` is a C int at the start of the 8-byte union.
        entry.backing = u64::from(a.fd as u32);
        entry.attached = 1;
        bytes.copy_from_slice(entry.as_bytes());
    }
    out.extend_from_slice(&mft);
    out.extend_from_slice(cmdline.as_bytes());
    out.push(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_abi::mft::{MFT_ENTRY_ATTACHED_OFFSET, Manifest, MftDeviceInfo};
    use kiln_abi::spt::SPT_BOOT_INFO_BASE;
    use kiln_abi::{MftEntry, MftNote};

    fn manifest() -> Vec<u8> {
        let note: MftNote<2> = MftNote::new([MftEntry::net("service"), MftEntry::block("disk")]);
        let mut buf = [0u8; 1024];
        let n = note.encode(&mut buf).unwrap();
        buf[24..n].to_vec()
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn boot_info_manifest_and_command_line_are_laid_out_in_order() {
        let mft = manifest();
        let attached = [Attached {
            handle: 2,
            info: MftDeviceInfo::block(4096, 512),
            fd: 7,
        }];
        let args = ["--times".to_string(), "3".to_string()];
        let low = low_memory(&BootParams {
            manifest: &mft,
            attached: &attached,
            args: &args,
            mem_size: 64 << 20,
            kernel_end: 0x20_0000,
            epoll_fd: 5,
            timer_fd: 6,
            stop_ack: 0x7f00_0000_0800,
            features: kiln_abi::hvt_ext::KILN_FEATURE_VNET_HDR,
        })
        .unwrap();
        assert_eq!(u64_at(&low, 0), 64 << 20);
        assert_eq!(u64_at(&low, 8), 0x20_0000);
        let mft_at = u64_at(&low, 24);
        let cmdline_at = u64_at(&low, 16);
        assert_eq!(mft_at, SPT_BOOT_INFO_BASE + 64);
        assert_eq!(cmdline_at, mft_at + mft.len() as u64);
        assert_eq!(&low[32..40], &[5, 0, 0, 0, 6, 0, 0, 0]);
        // kiln's block: magic, the stop and header features, the
        // acknowledgement word.
        assert_eq!(&low[40..48], b"kiln-spt");
        assert_eq!(
            u64_at(&low, 48),
            u64::from(KILN_FEATURE_STOP | kiln_abi::hvt_ext::KILN_FEATURE_VNET_HDR)
        );
        assert_eq!(u64_at(&low, 56), 0x7f00_0000_0800);
        let copy = &low[64..64 + mft.len()];
        let parsed = Manifest::new_checked(copy).unwrap();
        assert_eq!(parsed.find("disk").unwrap().index, 2);
        let disk = entry_offset(2);
        assert_eq!(copy[disk + MFT_ENTRY_ATTACHED_OFFSET], 1);
        // `u` at 72, `b` at 88 (`mft_abi.h`).
        assert_eq!(u64_at(copy, disk + 72), 4096);
        assert_eq!(u64_at(copy, disk + 88), 7);
        assert_eq!(copy[entry_offset(1) + MFT_ENTRY_ATTACHED_OFFSET], 0);
        assert_eq!(&low[64 + mft.len()..], b"--times 3\0");
    }

    #[test]
    fn an_oversized_command_line_is_refused() {
        let mft = manifest();
        let args = ["x".repeat(SPT_CMDLINE_SIZE)];
        let err = low_memory(&BootParams {
            manifest: &mft,
            attached: &[],
            args: &args,
            mem_size: 64 << 20,
            kernel_end: 0x20_0000,
            epoll_fd: 5,
            timer_fd: 6,
            stop_ack: 0,
            features: 0,
        })
        .unwrap_err();
        assert!(matches!(err, BootError::CmdlineTooLong { .. }));
    }
}
