//! The CPU tables kiln owns once booted: a GDT (64-bit code, data, TSS), a
//! TSS whose IST1 stack every exception runs on, and an IDT routing the 32
//! architectural exceptions to one handler that prints a register dump and
//! aborts. See Intel SDM vol. 3, chapters 3 (segments), 6 (interrupts) and
//! 7 (the TSS).
//!
//! The design is kiln-solo5's and the tables, their CPL 0 load and the
//! exception report are shared with it (`kiln_x86::cpu`): few instructions
//! at CPL 0, the unikernel at CPL 3, page tables loaded through a `ud2`
//! only kiln's #UD handler answers. Differences: the TSS's I/O
//! permission bitmap opens the legacy devices' ports instead of the
//! hypercall ports (KVM's PVM keeps IOPL at 0 for the guest's CPL 3 and
//! consults the bitmap), and user mode is entered on a new stack.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_x86::cpu::{
    Gate, Gdt, Idt, RFLAGS_IOPL3, TRAP_STACK_SIZE, TrapStack, Tss, USER_CODE_SELECTOR,
    USER_DATA_SELECTOR, io_bitmap_size,
};
use kiln_x86::trap::TrapFrame;

/// Number of architectural exception vectors.
const EXCEPTIONS: usize = kiln_x86::cpu::EXCEPTIONS;

/// Entries of the IDT: every vector, so that the interrupt vectors below
/// and the spurious vector have gates.
const VECTORS: usize = 256;
/// The vector the virtio devices' interrupts arrive on (IOAPIC).
pub const DEVICE_VECTOR: u8 = 0x30;
/// The vector of the LAPIC timer (TSC-deadline mode).
pub const TIMER_VECTOR: u8 = 0x31;
/// The vector of the GED's interrupt (the power button).
pub const POWER_VECTOR: u8 = crate::power::GED_VECTOR;
/// The LAPIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// The ports CPL 3 may use: the PIT (0x40-0x43) and its gate (0x61), the
/// i8042's command port (0x64), the CMOS RTC (0x70-0x71), QEMU's
/// isa-debug-exit (0xf4-0xf7), the first 16550 (0x3f8-0x3ff),
/// cloud-hypervisor's shutdown port (0x600) and PCI configuration
/// (0xcf8-0xcff).
const PORTS: [core::ops::Range<u16>; 8] = [
    0x40..0x44,
    0x61..0x62,
    0x64..0x65,
    0x70..0x72,
    0xf4..0xf8,
    0x3f8..0x400,
    0x600..0x601,
    0xcf8..0xd00,
];

/// Bytes of the I/O permission bitmap: ports 0 to 0xcff.
const IO_BITMAP_SIZE: usize = io_bitmap_size(0xd00);

static mut TRAP_STACK: TrapStack = TrapStack::new();
/// Every port denied but [`PORTS`].
static mut TSS: Tss<IO_BITMAP_SIZE> = Tss::new(&PORTS);
static mut GDT: Gdt = Gdt::new();
static mut IDT: Idt<VECTORS> = Idt::new();

// The exception entry stubs (kiln-x86's), with the halt gate in the #UD
// stub after the page tables' gate, then the halt request and the
// interrupt entries.
global_asm!(
    kiln_x86::trap_stubs_asm!(
        r#"
        // The halt gate (see `halt_until`): arm the TSC deadline from
        // RDI (0 disarms it), wait for an interrupt with interrupts
        // enabled only around `hlt`, return past the `ud2`.
        push rax
        lea rax, [rip + kiln_halt_ud2]
        cmp rax, [rsp + 8]
        jne 2f
        push rcx
        push rdx
        mov ecx, 0x6e0
        mov eax, edi
        mov rdx, rdi
        shr rdx, 32
        wrmsr
        pop rdx
        pop rcx
        pop rax
        sti
        hlt
        cli
        add qword ptr [rsp], 2
        iretq
    2:
        pop rax
"#,
        r#"
    .global kiln_halt
    kiln_halt:
    kiln_halt_ud2:
        ud2
        ret
    // The device interrupts: counted (`device_interrupts`), then as
    // the timer's. The timer interrupt: end of interrupt at the LAPIC
    // (xAPIC registers at 0xfee00000, mapped by kiln's device window),
    // then back to the `hlt` it woke.
    .balign 16
    .global kiln_device_irq_stub
    kiln_device_irq_stub:
        inc qword ptr [rip + {device_irqs}]
    .global kiln_irq_stub
    kiln_irq_stub:
        push rax
        mov eax, 0xfee000b0
        mov dword ptr [rax], 0
        pop rax
        iretq
    // The GED's interrupt (the power button, `crate::power`): counted
    // (`power_interrupts`), then as the timer's.
    .balign 16
    .global kiln_power_irq_stub
    kiln_power_irq_stub:
        inc qword ptr [rip + {power_irqs}]
        jmp kiln_irq_stub
    .balign 16
    .global kiln_spurious_stub
    kiln_spurious_stub:
        iretq
"#
    ),
    handler = sym kiln_virtio_trap,
    device_irqs = sym DEVICE_IRQS,
    power_irqs = sym POWER_IRQS,
);

/// Device interrupts delivered so far (counted by their entry stub, on the
/// only vCPU).
static DEVICE_IRQS: AtomicU64 = AtomicU64::new(0);

/// How many device interrupts have been delivered.
pub fn device_interrupts() -> u64 {
    DEVICE_IRQS.load(Ordering::Relaxed)
}

/// GED interrupts delivered so far (counted by their entry stub).
static POWER_IRQS: AtomicU64 = AtomicU64::new(0);

/// How many GED (power button) interrupts have been delivered.
pub fn power_interrupts() -> u64 {
    POWER_IRQS.load(Ordering::Relaxed)
}

unsafe extern "C" {
    /// The stub addresses, by vector (defined in the assembly above).
    static kiln_trap_stubs: [u64; EXCEPTIONS];
    /// `ud2; ret`: the request the #UD stub answers by loading CR3 from
    /// RDI (defined in the assembly above).
    fn kiln_load_page_tables(pml4: u64);
    /// `ud2; ret`: the request the #UD stub answers by arming the TSC
    /// deadline from RDI and halting until an interrupt.
    fn kiln_halt(tsc_deadline: u64);
    /// The interrupt and spurious-interrupt entries.
    fn kiln_device_irq_stub();
    /// The GED's interrupt entry.
    fn kiln_power_irq_stub();
    fn kiln_irq_stub();
    fn kiln_spurious_stub();
}

/// The unmapped page below the stack, once paging is set up, so that
/// reports can name a stack overflow.
pub static GUARD_PAGE: AtomicU64 = AtomicU64::new(0);

/// The Rust side of every exception: kiln-x86's report, then abort.
extern "C" fn kiln_virtio_trap(frame: *const TrapFrame) -> ! {
    // SAFETY: the stub passes the frame it just pushed on the trap stack,
    // laid out as TrapFrame; exceptions run at CPL 0.
    unsafe {
        kiln_x86::cpu::report_trap(
            frame,
            GUARD_PAGE.load(Ordering::Relaxed),
            super::host::puts,
            super::host::abort,
        )
    }
}

/// Loads kiln's GDT, TSS and IDT; the IDT's gates are filled later, at
/// CPL 3, by [`install_handlers`] (fewer instructions at CPL 0, where some
/// hypervisors emulate each one). An exception in between is a triple
/// fault, which resets the VM.
///
/// # Safety
///
/// Call once, at boot, before anything relies on the entry code's GDT.
pub unsafe fn init() {
    let trap_stack_top = (&raw mut TRAP_STACK as u64) + TRAP_STACK_SIZE as u64;
    // SAFETY: boot runs alone on the only vCPU, at CPL 0; nothing else
    // refers to these statics yet, and the trap stack is used only by
    // exceptions.
    unsafe { kiln_x86::cpu::load(&raw mut GDT, &raw mut TSS, &raw mut IDT, trap_stack_top) };
}

/// Points the IDT's 32 exception gates at kiln's handlers, and the device,
/// timer and spurious vectors at theirs. The IDT is plain memory, already
/// loaded by [`init`]: this runs at CPL 3.
pub fn install_handlers() {
    let idt = &raw mut IDT;
    let gate = Gate::interrupt;
    // SAFETY: boot runs alone on the only vCPU; the IDT is written only
    // here, and each gate names a stub defined above with kiln's code
    // selector. Exceptions run on IST1; the interrupts arrive only inside
    // the halt gate, at CPL 0, and stay on its stack.
    unsafe {
        for (slot, &handler) in (*idt).0.iter_mut().zip(kiln_trap_stubs.iter()) {
            *slot = gate(handler, 1);
        }
        let device = kiln_device_irq_stub as *const () as u64;
        let timer = kiln_irq_stub as *const () as u64;
        (*idt).0[usize::from(DEVICE_VECTOR)] = gate(device, 0);
        (*idt).0[usize::from(TIMER_VECTOR)] = gate(timer, 0);
        let power = kiln_power_irq_stub as *const () as u64;
        (*idt).0[usize::from(POWER_VECTOR)] = gate(power, 0);
        (*idt).0[usize::from(SPURIOUS_VECTOR)] = gate(kiln_spurious_stub as *const () as u64, 0);
    }
}

/// Drops the CPU to privilege level 3 with IOPL 3 (the devices' ports
/// stay reachable) and calls `entry(arg)` there on the stack ending at
/// `stack_top`. Exceptions still enter kiln's handlers at level 0 on the
/// trap stack.
///
/// The unikernel gains no protection from this (every page is a user page);
/// it runs at level 3 because hypervisors that cannot run a guest kernel
/// directly, such as KVM's PVM, emulate every level-0 instruction but run
/// level-3 code on the CPU: an order of magnitude or two faster.
///
/// # Safety
///
/// Call once, after [`init`], with the page tables mapping everything the
/// unikernel touches as user pages and `stack_top` the 16-byte aligned top
/// of a mapped, unused stack; nothing after it may need level 0 (control
/// registers, MSRs, `hlt`, `lgdt`).
pub unsafe fn enter_user_mode(stack_top: u64, entry: extern "C" fn(u64) -> !, arg: u64) -> ! {
    // SAFETY: iretq to `entry` with user selectors from kiln's GDT, the
    // given stack (minus the slot a call would have pushed, so that the
    // entry sees the alignment the SysV ABI promises) and the current
    // flags plus IOPL 3; the caller guarantees the pages are reachable at
    // CPL 3.
    unsafe {
        asm!(
            "push {ss}",
            "push {stack}",
            "pushfq",
            "or qword ptr [rsp], {iopl}",
            "push {cs}",
            "push {entry}",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "iretq",
            ss = in(reg) u64::from(USER_DATA_SELECTOR),
            cs = in(reg) u64::from(USER_CODE_SELECTOR),
            ds = in(reg) u32::from(USER_DATA_SELECTOR),
            stack = in(reg) stack_top - 8,
            entry = in(reg) entry as usize as u64,
            iopl = const RFLAGS_IOPL3,
            in("rdi") arg,
            options(noreturn),
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

/// Halts the vCPU until an interrupt: the LAPIC timer at `tsc_deadline`
/// (0: no timer) or a device's. From CPL 3 through the #UD gate, as
/// [`load_page_tables`]; the LAPIC and IOAPIC must have been set up
/// (`sys::idle`), or only an already pending interrupt wakes it.
pub fn halt_until(tsc_deadline: u64) {
    // SAFETY: the #UD handler writes IA32_TSC_DEADLINE, halts with
    // interrupts enabled only around `hlt` and resumes at the `ret`; it
    // touches no memory of the caller's.
    unsafe { kiln_halt(tsc_deadline) };
}
