//! The CPU tables kiln owns once booted: a GDT (64-bit code, data, TSS), a
//! TSS whose IST1 stack every exception runs on, and an IDT routing the 32
//! architectural exceptions to one handler that prints a register dump and
//! aborts. See Intel SDM vol. 3, chapters 3 (segments), 6 (interrupts) and
//! 7 (the TSS).
//!
//! The design and most of the code are kiln-solo5's (`sys/cpu.rs`): few
//! instructions at CPL 0, the unikernel at CPL 3, page tables loaded through
//! a `ud2` only kiln's #UD handler answers. Differences: the TSS's I/O
//! permission bitmap opens the legacy devices' ports instead of the
//! hypercall ports (KVM's PVM keeps IOPL at 0 for the guest's CPL 3 and
//! consults the bitmap), and user mode is entered on a new stack.

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::console::BufferedWriter;
use crate::trap::{Report, TRAP_FRAME_SIZE, TrapFrame, exception_name};

/// Selectors into [`GDT`]; the user ones carry requested privilege level 3.
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;
const USER_DATA_SELECTOR: u16 = 0x28 | 3;
const USER_CODE_SELECTOR: u16 = 0x30 | 3;

/// RFLAGS.IOPL = 3: `out` (the hypercall instruction) is allowed at CPL 3.
const RFLAGS_IOPL3: u64 = 3 << 12;

/// Size of the stack exceptions run on (IST1), so that a fault caused by
/// the normal stack overflowing can still be reported.
const TRAP_STACK_SIZE: usize = 16 * 1024;

/// Number of architectural exception vectors.
const EXCEPTIONS: usize = 32;
/// Entries of the IDT: every vector, so that the interrupt vectors below
/// and the spurious vector have gates.
const VECTORS: usize = 256;
/// The vector the virtio devices' interrupts arrive on (IOAPIC).
pub const DEVICE_VECTOR: u8 = 0x30;
/// The vector of the LAPIC timer (TSC-deadline mode).
pub const TIMER_VECTOR: u8 = 0x31;
/// The LAPIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

#[repr(C, align(16))]
struct TrapStack([u8; TRAP_STACK_SIZE]);

static mut TRAP_STACK: TrapStack = TrapStack([0; TRAP_STACK_SIZE]);

/// The 64-bit TSS (SDM vol. 3, figure 8-11) as 26 dwords (RSP0, IST1 and
/// the I/O map base are used), followed by the I/O permission bitmap
/// (SDM vol. 1, 19.5.2) that lets CPL 3 reach the devices' ports.
#[repr(C, align(8))]
struct Tss {
    dwords: [u32; 26],
    io_bitmap: [u8; IO_BITMAP_SIZE],
}

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

/// Ports 0 to 0xcff are covered; the last byte is the all-ones terminator
/// the CPU may read past the last port.
const IO_BITMAP_SIZE: usize = 0xd00 / 8 + 1;

static mut TSS: Tss = Tss {
    dwords: [0; 26],
    io_bitmap: io_bitmap(),
};

/// Every port denied but [`PORTS`].
const fn io_bitmap() -> [u8; IO_BITMAP_SIZE] {
    let mut map = [0xff; IO_BITMAP_SIZE];
    let mut i = 0;
    while i < PORTS.len() {
        let mut port = PORTS[i].start;
        while port < PORTS[i].end {
            map[port as usize / 8] &= !(1 << (port % 8));
            port += 1;
        }
        i += 1;
    }
    map
}

/// Null, code (64-bit, DPL 0), data, the two slots of the TSS descriptor,
/// then data and 64-bit code for CPL 3.
#[repr(C, align(16))]
struct Gdt([u64; 7]);

static mut GDT: Gdt = Gdt([
    0,
    // Present, DPL 0, code, execute/read, long mode (L), 4 KiB granularity.
    0x00af_9a00_0000_ffff,
    // Present, DPL 0, data, read/write, 4 KiB granularity.
    0x00cf_9200_0000_ffff,
    0,
    0,
    // Present, DPL 3, data, read/write, 4 KiB granularity.
    0x00cf_f200_0000_ffff,
    // Present, DPL 3, code, execute/read, long mode (L), 4 KiB granularity.
    0x00af_fa00_0000_ffff,
]);

/// One 16-byte interrupt gate (SDM vol. 3, figure 6-8).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; VECTORS]);

static mut IDT: Idt = Idt([Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; VECTORS]);

/// The operand of `lgdt` and `lidt`.
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

// Entry stubs for the 32 exceptions. Those for which the CPU pushes no
// error code push a zero, so every frame has the same shape; then each
// pushes its vector and jumps to the common part, which saves the
// general-purpose registers in `TrapFrame` order and calls the handler.
// The table `kiln_trap_stubs` lists the stubs' addresses by vector.
global_asm!(
    r#"
    .macro KILN_TRAP_STUB vector, has_error_code
    .section .text.kiln_trap, "ax"
    .balign 16
    kiln_trap_stub_\vector:
    .if \has_error_code == 0
        push 0
    .endif
        push \vector
        jmp kiln_trap_common
    .section .rodata.kiln_trap_stubs, "a"
        .quad kiln_trap_stub_\vector
    .endm

    .section .rodata.kiln_trap_stubs, "a"
    .balign 8
    .global kiln_trap_stubs
    kiln_trap_stubs:

    KILN_TRAP_STUB 0, 0
    KILN_TRAP_STUB 1, 0
    KILN_TRAP_STUB 2, 0
    KILN_TRAP_STUB 3, 0
    KILN_TRAP_STUB 4, 0
    KILN_TRAP_STUB 5, 0
    // #UD, with one exception to the rule that exceptions abort: the
    // `ud2` at `kiln_load_page_tables_ud2` asks CPL 0 to load the page
    // tables at RDI (see `load_page_tables`); the handler does and returns
    // past it.
    .section .text.kiln_trap, "ax"
    .balign 16
    kiln_trap_stub_6:
        push rax
        lea rax, [rip + kiln_load_page_tables_ud2]
        cmp rax, [rsp + 8]
        pop rax
        jne 1f
        mov cr3, rdi
        add qword ptr [rsp], 2
        iretq
    1:
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
        push 0
        push 6
        jmp kiln_trap_common
    .section .rodata.kiln_trap_stubs, "a"
        .quad kiln_trap_stub_6
    .section .text.kiln_trap, "ax"
    .balign 16
    .global kiln_load_page_tables
    kiln_load_page_tables:
    kiln_load_page_tables_ud2:
        ud2
        ret
    .global kiln_halt
    kiln_halt:
    kiln_halt_ud2:
        ud2
        ret
    // The device and timer interrupts: end of interrupt at the LAPIC
    // (xAPIC registers at 0xfee00000, mapped by kiln's device window),
    // then back to the `hlt` they woke.
    .balign 16
    .global kiln_irq_stub
    kiln_irq_stub:
        push rax
        mov eax, 0xfee000b0
        mov dword ptr [rax], 0
        pop rax
        iretq
    .balign 16
    .global kiln_spurious_stub
    kiln_spurious_stub:
        iretq
    KILN_TRAP_STUB 7, 0
    KILN_TRAP_STUB 8, 1
    KILN_TRAP_STUB 9, 0
    KILN_TRAP_STUB 10, 1
    KILN_TRAP_STUB 11, 1
    KILN_TRAP_STUB 12, 1
    KILN_TRAP_STUB 13, 1
    KILN_TRAP_STUB 14, 1
    KILN_TRAP_STUB 15, 0
    KILN_TRAP_STUB 16, 0
    KILN_TRAP_STUB 17, 1
    KILN_TRAP_STUB 18, 0
    KILN_TRAP_STUB 19, 0
    KILN_TRAP_STUB 20, 0
    KILN_TRAP_STUB 21, 1
    KILN_TRAP_STUB 22, 0
    KILN_TRAP_STUB 23, 0
    KILN_TRAP_STUB 24, 0
    KILN_TRAP_STUB 25, 0
    KILN_TRAP_STUB 26, 0
    KILN_TRAP_STUB 27, 0
    KILN_TRAP_STUB 28, 0
    KILN_TRAP_STUB 29, 1
    KILN_TRAP_STUB 30, 1
    KILN_TRAP_STUB 31, 0

    .section .text.kiln_trap, "ax"
    .balign 16
    .balign 16
    kiln_trap_common:
        push rax
        push rbx
        push rcx
        push rdx
        push rsi
        push rdi
        push rbp
        push r8
        push r9
        push r10
        push r11
        push r12
        push r13
        push r14
        push r15
        mov rdi, rsp
        and rsp, -16
        call {handler}
        ud2
    "#,
    handler = sym kiln_virtio_trap,
);

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
    fn kiln_irq_stub();
    fn kiln_spurious_stub();
}

/// The unmapped page below the stack, once paging is set up, so that
/// reports can name a stack overflow.
pub static GUARD_PAGE: AtomicU64 = AtomicU64::new(0);

/// Set while an exception is being reported, so that a fault inside the
/// report halts at once instead of recursing.
static IN_TRAP: AtomicBool = AtomicBool::new(false);

/// The Rust side of every exception: report and abort.
extern "C" fn kiln_virtio_trap(frame: *const TrapFrame) -> ! {
    if IN_TRAP.swap(true, Ordering::AcqRel) {
        super::host::abort(format_args!("exception while reporting an exception"))
    }
    // SAFETY: `frame` points at the TRAP_FRAME_SIZE bytes the stub just
    // pushed on the trap stack, laid out as TrapFrame.
    let frame = unsafe { &*frame };
    let cr2 = super::arch::cr2();
    {
        let mut out = BufferedWriter::<_, 512>::new(super::host::puts);
        let guard_page = GUARD_PAGE.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "{}",
            Report {
                frame,
                cr2,
                guard_page
            }
        );
    }
    let (mnemonic, name) = exception_name(frame.vector);
    super::host::abort(format_args!(
        "exception {mnemonic} ({name}) at rip {:#x}, error code {:#x}, cr2 {cr2:#x}",
        frame.rip, frame.error_code
    ))
}

const _: () = assert!(size_of::<TrapFrame>() == TRAP_FRAME_SIZE);
const _: () = assert!(size_of::<Gate>() == 16);
const _: () = assert!(size_of::<[u32; 26]>() == 104);
const _: () = assert!(core::mem::offset_of!(Tss, io_bitmap) == 104);

/// Loads kiln's GDT, TSS and IDT; the IDT's gates are filled later, at
/// CPL 3, by [`install_handlers`] (fewer instructions at CPL 0, where some
/// hypervisors emulate each one). An exception in between is a triple
/// fault, which resets the VM.
///
/// # Safety
///
/// Call once, at boot, before anything relies on the entry code's GDT.
pub unsafe fn init() {
    let gdt = &raw mut GDT;
    let tss = &raw mut TSS;
    let idt = &raw mut IDT;

    let trap_stack_top = (&raw mut TRAP_STACK as u64) + TRAP_STACK_SIZE as u64;
    // SAFETY: boot runs alone on the only vCPU; nothing else refers to
    // these statics yet.
    unsafe {
        // RSP0 at byte 4 (unused while every gate names IST1), IST1 at
        // byte 36, the I/O map base (right after the 104 bytes) at 102.
        (*tss).dwords[1] = trap_stack_top as u32;
        (*tss).dwords[2] = (trap_stack_top >> 32) as u32;
        (*tss).dwords[9] = trap_stack_top as u32;
        (*tss).dwords[10] = (trap_stack_top >> 32) as u32;
        (*tss).dwords[25] = (size_of::<[u32; 26]>() as u32) << 16;

        // A 64-bit available TSS descriptor (type 9), present.
        let base = tss as u64;
        let limit = (104 + IO_BITMAP_SIZE - 1) as u64;
        (*gdt).0[3] = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        (*gdt).0[4] = base >> 32;

        let gdtr = DescriptorPointer {
            limit: (size_of::<Gdt>() - 1) as u16,
            base: gdt as u64,
        };
        let idtr = DescriptorPointer {
            limit: (size_of::<Idt>() - 1) as u16,
            base: idt as u64,
        };
        // Load the GDT, reload CS with a far return and the data segments
        // with the data selector, load the task register and the IDT.
        asm!(
            "lgdt [{gdtr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "mov fs, {data:x}",
            "mov gs, {data:x}",
            "ltr {tss:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &raw const gdtr,
            idtr = in(reg) &raw const idtr,
            code = in(reg) u64::from(CODE_SELECTOR),
            data = in(reg) u32::from(DATA_SELECTOR),
            tss = in(reg) u32::from(TSS_SELECTOR),
            tmp = out(reg) _,
        );
    }
}

/// Points the IDT's 32 exception gates at kiln's handlers, and the device,
/// timer and spurious vectors at theirs. The IDT is plain memory, already
/// loaded by [`init`]: this runs at CPL 3.
pub fn install_handlers() {
    let idt = &raw mut IDT;
    let gate = |handler: u64, ist: u8| Gate {
        offset_low: handler as u16,
        selector: CODE_SELECTOR,
        ist,
        // Present, DPL 0, 64-bit interrupt gate.
        attributes: 0x8e,
        offset_mid: (handler >> 16) as u16,
        offset_high: (handler >> 32) as u32,
        reserved: 0,
    };
    // SAFETY: boot runs alone on the only vCPU; the IDT is written only
    // here, and each gate names a stub defined above with kiln's code
    // selector. Exceptions run on IST1; the interrupts arrive only inside
    // the halt gate, at CPL 0, and stay on its stack.
    unsafe {
        for (slot, &handler) in (*idt).0.iter_mut().zip(kiln_trap_stubs.iter()) {
            *slot = gate(handler, 1);
        }
        let irq = kiln_irq_stub as *const () as u64;
        (*idt).0[usize::from(DEVICE_VECTOR)] = gate(irq, 0);
        (*idt).0[usize::from(TIMER_VECTOR)] = gate(irq, 0);
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
