//! The ABI targets a tender serves, as marker types carrying what differs.

use core::fmt::Debug;

use kiln_abi::AbiTarget;

/// What differs between the hvt and spt tenders in the shared code.
pub trait Target: Debug + Send + Sync + 'static {
    /// The ABI target the image's ABI note must name.
    const ABI: AbiTarget;
    /// The target's name, as in images' file names (`hvt`).
    const NAME: &'static str;
    /// The tender's program name (`kiln-hvt`).
    const TENDER: &'static str;
    /// Largest guest memory in MiB.
    const MAX_MEM_MB: u64;
    /// The `--help` lines that say what the tender does with KERNEL.
    const ABOUT: &'static str;
    /// The ABI version the tender implements.
    const ABI_VERSION: u32;
    /// The lowest address a segment may be loaded at.
    const GUEST_MIN_BASE: u64;
    /// What lies below [`Target::GUEST_MIN_BASE`], as "X live(s)".
    const LOW_MEMORY: &'static str;
    /// Whether segments are protected page by page (spt), so that two may
    /// not share a page; otherwise they may only not overlap.
    const PAGE_PROTECTED: bool;
    /// The end of the message for two segments too close: "overlap ...".
    const OVERLAP: &'static str;
    /// Guest memory comes in multiples of this many bytes (a whole number
    /// of MiB): the unit of the `--mem` a message suggests.
    const MEM_GRANULE: u64;
}

/// The hvt target: a KVM guest under `kiln-hvt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hvt {}

/// The spt target: a seccomp-sandboxed process under `kiln-spt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spt {}

impl Target for Hvt {
    const ABI: AbiTarget = AbiTarget::Hvt;
    const NAME: &'static str = "hvt";
    const TENDER: &'static str = "kiln-hvt";
    // Solo5's solo5-hvt takes up to 4 GiB; kiln-hvt's page tables (one
    // page directory per GiB, below the image) allow 64 GiB.
    const MAX_MEM_MB: u64 = 64 << 10;
    const ABOUT: &'static str = "Runs the hvt image KERNEL as a KVM guest; ARGS become its command line.\n\
         The exit status is the guest's (255 if it aborts, 1 if the tender stops it).";
    const ABI_VERSION: u32 = kiln_abi::hvt::HVT_ABI_VERSION;
    const GUEST_MIN_BASE: u64 = kiln_abi::hvt::HVT_GUEST_MIN_BASE;
    const LOW_MEMORY: &'static str = "the boot info and page tables live";
    const PAGE_PROTECTED: bool = false;
    const OVERLAP: &'static str = "overlap in memory";
    // Guest memory is mapped with 2 MiB pages.
    const MEM_GRANULE: u64 = kiln_abi::hvt::layout::GUEST_PAGE_SIZE;
}

impl Target for Spt {
    const ABI: AbiTarget = AbiTarget::Spt;
    const NAME: &'static str = "spt";
    const TENDER: &'static str = "kiln-spt";
    const MAX_MEM_MB: u64 = 4096;
    const ABOUT: &'static str = "Runs the spt image KERNEL as a seccomp-sandboxed process; ARGS become its command line.\n\
         The exit status is the guest's (255 if it aborts; killed by the guest's signal,\n\
         as solo5-spt, if a forbidden system call or a fault ends it: 159, 139 in a\n\
         shell; 1 if the tender cannot start it).";
    const ABI_VERSION: u32 = kiln_abi::spt::SPT_ABI_VERSION;
    const GUEST_MIN_BASE: u64 = kiln_abi::spt::SPT_GUEST_MIN_BASE;
    const LOW_MEMORY: &'static str = "the boot info lives";
    const PAGE_PROTECTED: bool = true;
    const OVERLAP: &'static str =
        "share a page; hint: page-align each segment (kiln's linker script does)";
    const MEM_GRANULE: u64 = 1 << 20;
}
