//! The CPU tables kiln owns once booted: a GDT (64-bit code, data, TSS), a
//! TSS whose IST1 stack every exception runs on, and an IDT routing the 32
//! architectural exceptions to one handler that prints a register dump and
//! aborts. The table types, their CPL 0 load and the report are
//! `kiln_x86::cpu`'s, shared with kiln-virtio; the statics (the bitmap
//! opens the hypercall ports), the entry stubs and the #UD gate are here.
//! See Intel SDM vol. 3, chapters 3 (segments), 6 (interrupts) and 7 (the
//! TSS).

use core::arch::{asm, global_asm};
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_x86::cpu::{
    EXCEPTIONS, Gate, Gdt, Idt, RFLAGS_IOPL3, TRAP_STACK_SIZE, TrapStack, Tss, USER_CODE_SELECTOR,
    USER_DATA_SELECTOR, io_bitmap_size,
};
use kiln_x86::trap::TrapFrame;

/// The ports the hypercalls use (`HVT_HYPERCALL_PIO_BASE` + number): the
/// only ones the TSS's I/O permission bitmap opens to CPL 3.
const HYPERCALL_PORTS: Range<u16> =
    kiln_abi::hvt::HVT_HYPERCALL_PIO_BASE..kiln_abi::hvt::HVT_HYPERCALL_PIO_BASE + 0x100;

/// Bytes of the I/O permission bitmap: up to the last hypercall port.
const IO_BITMAP_SIZE: usize = io_bitmap_size(HYPERCALL_PORTS.end);

static mut TRAP_STACK: TrapStack = TrapStack::new();
/// Every port denied but the hypercall ports.
static mut TSS: Tss<IO_BITMAP_SIZE> = Tss::new(&[HYPERCALL_PORTS]);
static mut GDT: Gdt = Gdt::new();
static mut IDT: Idt<EXCEPTIONS> = Idt::new();

// The exception entry stubs (kiln-x86's), with no gate but the page
// tables' in the #UD stub.
global_asm!(
    kiln_x86::trap_stubs_asm!("", ""),
    handler = sym kiln_solo5_trap,
);

unsafe extern "C" {
    /// The stub addresses, by vector (defined in the assembly above).
    static kiln_trap_stubs: [u64; EXCEPTIONS];
    /// `ud2; ret`: the request the #UD stub answers by loading CR3 from
    /// RDI (defined in the assembly above).
    fn kiln_load_page_tables(pml4: u64);
}

/// The unmapped page below the stack, once paging is set up, so that
/// reports can name a stack overflow.
pub static GUARD_PAGE: AtomicU64 = AtomicU64::new(0);

/// The Rust side of every exception: kiln-x86's report, then abort.
extern "C" fn kiln_solo5_trap(frame: *const TrapFrame) -> ! {
    // SAFETY: the stub passes the frame it just pushed on the trap stack,
    // laid out as TrapFrame; exceptions run at CPL 0.
    unsafe {
        kiln_x86::cpu::report_trap(
            frame,
            GUARD_PAGE.load(Ordering::Relaxed),
            super::hvt::puts,
            super::hvt::abort,
        )
    }
}

/// Loads kiln's GDT, TSS and IDT; the IDT's gates are filled later, at
/// CPL 3, by [`install_handlers`] (fewer instructions at CPL 0, where some
/// hypervisors emulate each one). An exception in between is a triple
/// fault, which the tender reports.
///
/// # Safety
///
/// Call once, at boot, before anything relies on the tender's tables.
pub unsafe fn init() {
    let trap_stack_top = (&raw mut TRAP_STACK as u64) + TRAP_STACK_SIZE as u64;
    // SAFETY: boot runs alone on the only vCPU, at CPL 0; nothing else
    // refers to these statics yet, and the trap stack is used only by
    // exceptions.
    unsafe { kiln_x86::cpu::load(&raw mut GDT, &raw mut TSS, &raw mut IDT, trap_stack_top) };
}

/// Points the IDT's 32 exception gates at kiln's handlers. The IDT is
/// plain memory, already loaded by [`init`]: this runs at CPL 3.
pub fn install_handlers() {
    let idt = &raw mut IDT;
    // SAFETY: boot runs alone on the only vCPU; the IDT is written only
    // here, and each gate names a stub defined above with kiln's code
    // selector.
    unsafe {
        for (vector, gate) in (*idt).0.iter_mut().enumerate() {
            let handler = kiln_trap_stubs[vector];
            *gate = Gate::interrupt(handler, 1);
        }
    }
}

/// Drops the CPU to privilege level 3 and returns there, on the same stack,
/// with IOPL 3 so that hypercalls (`out`) still work. Exceptions still
/// enter kiln's handlers at level 0 on the trap stack.
///
/// The unikernel gains no protection from this (every page is a user page);
/// it runs at level 3 because hypervisors that cannot run a guest kernel
/// directly, such as KVM's PVM, emulate every level-0 instruction but run
/// level-3 code on the CPU: an order of magnitude or two faster.
///
/// # Safety
///
/// Call once, after [`init`] and after the page tables map everything the
/// unikernel touches as user pages; nothing after it may need level 0
/// (control registers, MSRs, `hlt`, `lgdt`).
pub unsafe fn enter_user_mode() {
    // SAFETY: iretq to the next instruction with user selectors from
    // kiln's GDT, the current stack pointer and the current flags plus
    // IOPL 3; the caller guarantees the pages stay reachable at CPL 3.
    unsafe {
        asm!(
            "mov {tmp}, rsp",
            "push {ss}",
            "push {tmp}",
            "pushfq",
            "or qword ptr [rsp], {iopl}",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            ss = in(reg) u64::from(USER_DATA_SELECTOR),
            cs = in(reg) u64::from(USER_CODE_SELECTOR),
            ds = in(reg) u32::from(USER_DATA_SELECTOR),
            iopl = const RFLAGS_IOPL3,
            tmp = out(reg) _,
        );
    }
}

/// Loads the page tables at `pml4` from CPL 3: the `ud2` at
/// `kiln_load_page_tables_ud2` traps to kiln's #UD handler, which alone
/// recognises that address, loads RDI into CR3 and returns past it.
/// Exceptions are used rather than `int n` because hypervisors that run
/// CPL 3 natively (PVM) turn software interrupts into #UD anyway.
///
/// # Safety
///
/// Call once, after [`init`] and [`enter_user_mode`]; the tables at `pml4`
/// must map everything the running code touches at the same addresses.
pub unsafe fn load_page_tables(pml4: u64) {
    // SAFETY: the #UD handler moves RDI (the first argument) to CR3 and
    // resumes at the `ret` after the two-byte `ud2`; the caller
    // guarantees the tables are complete.
    unsafe { kiln_load_page_tables(pml4) };
}
