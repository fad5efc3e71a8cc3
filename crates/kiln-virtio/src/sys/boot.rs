//! The boot sequence, from the entry code (`sys::entry`, in long mode at
//! CPL 0 on the boot stack, RDI = the PVH start info's address) to the
//! unikernel's `main`.
//!
//! At CPL 0, as few instructions as kiln-solo5's hvt boot: kiln's GDT, TSS
//! and IDT, KVM's clock registration (two `cpuid`, two `wrmsr`), and the
//! drop to CPL 3. Everything else runs at CPL 3 on the entry code's
//! identity map of the first GiB: the exception gates, the start info and
//! memory map (read as untrusted bytes), the memory layout, kiln's own page
//! tables (loaded through the #UD handler), then, on the stack at the top
//! of RAM, the heap, the clocks, the command line and the manifest.

use alloc::boxed::Box;
use alloc::string::String;

use super::{clock, cpu, paging};
use crate::env::Env;
use crate::layout::{Layout, MAX_MEMORY, Sections};
use crate::pvh::{self, CMDLINE_MAX, START_INFO_SIZE, StartInfo};

unsafe extern "C" {
    static __kiln_text_start: u8;
    static __kiln_text_end: u8;
    static __kiln_rodata_start: u8;
    static __kiln_rodata_end: u8;
    static __kiln_data_start: u8;
    static __kiln_data_end: u8;
    static __kiln_manifest_start: u8;
    static __kiln_manifest_end: u8;
    static kiln_boot_stack_top: u8;
}

unsafe extern "Rust" {
    /// The unikernel's entry, defined by [`crate::main!`] in the
    /// generated crate.
    safe fn kiln_virtio_main(env: &'static Env) -> kiln_devices::ExitStatus;
}

/// What the entry code's map covers: boot data must lie below it.
const ENTRY_MAP_END: u64 = 1 << 30;

/// The image's sections, from the linker script's symbols.
fn sections() -> Sections {
    let addr = |s: *const u8| s as u64;
    Sections {
        text: addr(&raw const __kiln_text_start)..addr(&raw const __kiln_text_end),
        rodata: addr(&raw const __kiln_rodata_start)..addr(&raw const __kiln_rodata_end),
        data: addr(&raw const __kiln_data_start)..addr(&raw const __kiln_data_end),
    }
}

/// Prints why boot failed and aborts.
pub fn fail(what: &str, why: &dyn core::fmt::Display) -> ! {
    use core::fmt::Write;
    {
        let mut out = crate::console::BufferedWriter::<_, 256>::new(super::host::puts);
        let _ = writeln!(out, "kiln: cannot boot: {what}: {why}");
    }
    super::host::halt(super::host::EXIT_ABORT, None)
}

/// Copies `len` bytes at physical address `addr` (checked to lie inside
/// the entry code's map) into `out`. Only before kiln's page tables are
/// loaded: SeaBIOS's PVH loader (QEMU q35/pc) puts the memory map in the
/// first page, which kiln's tables leave unmapped.
fn read_boot_bytes(what: &str, addr: u64, out: &mut [u8]) {
    let end = addr.checked_add(out.len() as u64);
    if addr == 0 || end.is_none_or(|e| e > ENTRY_MAP_END) {
        fail(what, &format_args!("bad address {addr:#x}"));
    }
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: checked above: inside the identity-mapped first GiB (the
        // caller runs before kiln's tables replace that map); plain bytes,
        // read volatile as the VMM wrote them.
        *b = unsafe { ((addr + i as u64) as *const u8).read_volatile() };
    }
}

/// Physical memory inside the entry code's map, read before kiln's page
/// tables are loaded (the ACPI tables may lie in memory they leave out).
struct BootMemory;

impl crate::acpi::Memory for BootMemory {
    fn byte(&self, addr: u64) -> Option<u8> {
        if addr == 0 || addr >= ENTRY_MAP_END {
            return None;
        }
        // SAFETY: inside the identity-mapped first GiB, read before kiln's
        // tables replace that map; plain bytes, read volatile as the VMM
        // or firmware wrote them.
        Some(unsafe { (addr as *const u8).read_volatile() })
    }
}

/// What the ACPI tables listed, read by `user_boot` when the command line
/// announced no virtio-mmio device, for [`user_main`].
static ACPI: spin::Mutex<Option<crate::acpi::Found>> = spin::Mutex::new(None);

/// Called by the entry code with the start info's address.
pub(super) extern "C" fn kiln_virtio_boot(start_info: u64) -> ! {
    // SAFETY: first thing at boot, on the only vCPU.
    unsafe { cpu::init() };
    clock::init_cpl0();
    super::idle::init_cpl0();
    // SAFETY: the entry code's map covers the image, the boot stack and
    // the first GiB as user pages; the boot stack is reused from its top
    // (this function never returns).
    unsafe { cpu::enter_user_mode(&raw const kiln_boot_stack_top as u64, user_boot, start_info) }
}

/// The command line, copied before kiln's page tables are loaded, and its
/// length, for [`user_main`].
static mut CMDLINE: ([u8; CMDLINE_MAX], usize) = ([0; CMDLINE_MAX], 0);

/// The CPL 3 part of boot, on the boot stack.
extern "C" fn user_boot(start_info: u64) -> ! {
    cpu::install_handlers();
    let mut bytes = [0u8; START_INFO_SIZE];
    read_boot_bytes("start info", start_info, &mut bytes);
    let si = match StartInfo::parse(&bytes) {
        Ok(si) => si,
        Err(e) => fail("start info", &e),
    };
    let map = si.memmap_range();
    let mut memmap = [0u8; pvh::MEMMAP_MAX_ENTRIES * pvh::MEMMAP_ENTRY_SIZE];
    let memmap = &mut memmap[..(map.end - map.start) as usize];
    read_boot_bytes("memory map", map.start, memmap);
    let image = sections();
    let ram_end = match pvh::ram_end(memmap, image.text.start) {
        Ok(end) => end.min(MAX_MEMORY),
        Err(e) => fail("memory map", &e),
    };
    let cmdline = &raw mut CMDLINE;
    let cmdline_len = if si.cmdline == 0 {
        0
    } else {
        let mut len = 0;
        let mut byte = [0u8];
        while len < CMDLINE_MAX - 1 {
            read_boot_bytes("command line", si.cmdline + len as u64, &mut byte);
            if byte[0] == 0 {
                break;
            }
            // SAFETY: boot runs alone; `len` < CMDLINE_MAX.
            unsafe { (*cmdline).0[len] = byte[0] };
            len += 1;
        }
        len
    };
    // SAFETY: boot runs alone; `cmdline_len` bytes were written above.
    let words = unsafe { &(&(*cmdline).0)[..cmdline_len] };
    let announced = words
        .windows(crate::cmdline::MMIO_PREFIX.len())
        .any(|w| w == crate::cmdline::MMIO_PREFIX.as_bytes());
    if si.rsdp != 0 && !announced {
        *ACPI.lock() = Some(crate::acpi::read(&BootMemory, si.rsdp));
    }
    let boot_data = [
        start_info..start_info + START_INFO_SIZE as u64,
        map.clone(),
        si.cmdline..si.cmdline + cmdline_len as u64 + 1,
    ];
    let layout = match Layout::new(ram_end, image.data.end, image, &boot_data) {
        Ok(layout) => layout,
        Err(e) => fail("memory layout", &e),
    };
    // SAFETY: the layout was checked; its tables region lies after the
    // image and the boot data, below the heap.
    unsafe { paging::init(&layout) };
    cpu::GUARD_PAGE.store(layout.guard_page, core::sync::atomic::Ordering::Relaxed);
    let (heap_start, heap_size) = (layout.heap_start as usize, layout.heap_size() as usize);
    // SAFETY: [heap_start, guard page) is mapped read-write and used by
    // nothing else; this is the only call.
    if let Err(e) = unsafe { super::heap::init(heap_start, heap_size) } {
        fail("heap", &e);
    }
    // SAFETY: boot runs alone; read once by `user_main`.
    unsafe { (*cmdline).1 = cmdline_len };
    let stack_top = layout.mem_size;
    // SAFETY: the stack at the top of RAM is mapped read-write by kiln's
    // tables (the layout keeps it clear of everything else, with the guard
    // page below it); `user_main` never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {main}",
            "ud2",
            top = in(reg) stack_top,
            main = sym user_main,
            options(noreturn),
        )
    }
}

/// The rest of boot, on the stack at the top of RAM.
extern "C" fn user_main() -> ! {
    if let Err(e) = clock::init() {
        fail("clock", &e);
    }
    // SAFETY: written once by `user_boot` before the switch of stacks.
    let cmdline = unsafe {
        let c = &raw const CMDLINE;
        let len = (*c).1.min(CMDLINE_MAX);
        core::slice::from_raw_parts((&raw const (*c).0).cast::<u8>(), len).to_vec()
    };
    let cmdline = match String::from_utf8(cmdline) {
        Ok(s) => s,
        Err(e) => fail("command line", &e.utf8_error()),
    };
    let manifest = {
        let start = &raw const __kiln_manifest_start as usize;
        let end = &raw const __kiln_manifest_end as usize;
        // SAFETY: the linker script brackets the manifest note, in the
        // image's read-only data, with these two symbols.
        unsafe { core::slice::from_raw_parts(start as *const u8, end - start) }
    };
    let env = match Env::new(Box::leak(cmdline.into_boxed_str()), manifest) {
        Ok(env) => Box::leak(Box::new(env)),
        Err(e) => fail("devices", &e),
    };
    let acpi = ACPI.lock().take();
    let mut mmio = env.mmio_devices().to_vec();
    if let Some(found) = acpi {
        // QEMU's microvm with ACPI on: its devices, and the second IOAPIC
        // their lines go to, are in the tables only.
        mmio.extend(found.mmio());
        super::idle::set_ioapics(found.ioapics);
    }
    if let Err(e) = crate::sys::virtio::discover(&mmio) {
        fail("devices", &e);
    }
    crate::sys::heap::register_metrics();
    kiln_x86::exits::register_metrics(crate::sys::host::EXIT_NAMES);
    crate::exit(kiln_virtio_main(env))
}
