//! The CPU tables kiln's x86_64 platforms own once booted: a GDT (64-bit
//! code, data, TSS, and data and code for CPL 3), a TSS whose IST1 stack
//! every exception runs on and whose I/O permission bitmap opens the ports
//! the platform names, and an IDT. Each platform keeps its tables in its
//! own statics (their sizes differ: the bitmap, the vectors), assembles
//! the entry stubs from [`trap_stubs_asm!`](crate::trap_stubs_asm) with
//! its own extra gates, and loads the tables at CPL 0 with [`load`]. The
//! Rust side of an exception, [`report_trap`], is shared too. See Intel SDM
//! vol. 3, chapters 3 (segments), 6 (interrupts) and 7 (the TSS).
#![allow(unsafe_code)]

use core::arch::asm;
use core::fmt::Write;
use core::mem::size_of;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::console::BufferedWriter;
use crate::trap::{Report, TRAP_FRAME_SIZE, TrapFrame, exception_name};
use crate::{Abort, Puts};

/// Selectors into [`Gdt`]; the user ones carry requested privilege level 3.
pub const CODE_SELECTOR: u16 = 0x08;
/// Kernel data.
pub const DATA_SELECTOR: u16 = 0x10;
/// The TSS (two slots).
pub const TSS_SELECTOR: u16 = 0x18;
/// Data for CPL 3.
pub const USER_DATA_SELECTOR: u16 = 0x28 | 3;
/// 64-bit code for CPL 3.
pub const USER_CODE_SELECTOR: u16 = 0x30 | 3;

/// RFLAGS.IOPL = 3: `in`/`out` are allowed at CPL 3 where the hypervisor
/// honours IOPL (else the TSS's bitmap decides).
pub const RFLAGS_IOPL3: u64 = 3 << 12;

/// Size of the stack exceptions run on (IST1), so that a fault caused by
/// the normal stack overflowing can still be reported.
pub const TRAP_STACK_SIZE: usize = 16 * 1024;

/// Number of architectural exception vectors.
pub const EXCEPTIONS: usize = 32;

/// The stack exceptions run on.
#[repr(C, align(16))]
pub struct TrapStack([u8; TRAP_STACK_SIZE]);

impl TrapStack {
    /// A zeroed stack (bss).
    pub const fn new() -> TrapStack {
        TrapStack([0; TRAP_STACK_SIZE])
    }
}

impl Default for TrapStack {
    fn default() -> Self {
        Self::new()
    }
}

/// The size of an I/O permission bitmap covering ports below `end`: one
/// bit a port, plus the all-ones terminator byte the CPU may read past the
/// last port.
pub const fn io_bitmap_size(end: u16) -> usize {
    (end as usize).div_ceil(8) + 1
}

/// The 64-bit TSS (SDM vol. 3, figure 8-11) as 26 dwords (RSP0, IST1 and
/// the I/O map base are used), followed by the I/O permission bitmap
/// (SDM vol. 1, 19.5.2) of `N` bytes (see [`io_bitmap_size`]).
#[repr(C, align(8))]
pub struct Tss<const N: usize> {
    dwords: [u32; 26],
    io_bitmap: [u8; N],
}

impl<const N: usize> Tss<N> {
    /// A TSS whose bitmap denies every port but those in `open` (each
    /// below `(N - 1) * 8`, else the build fails: this runs at compile
    /// time in a `static`'s initialiser).
    pub const fn new(open: &[Range<u16>]) -> Tss<N> {
        let mut map = [0xff; N];
        let mut i = 0;
        while i < open.len() {
            let mut port = open[i].start;
            while port < open[i].end {
                assert!((port as usize) / 8 < N - 1, "port beyond the I/O bitmap");
                map[port as usize / 8] &= !(1 << (port % 8));
                port += 1;
            }
            i += 1;
        }
        Tss {
            dwords: [0; 26],
            io_bitmap: map,
        }
    }
}

/// Null, code (64-bit, DPL 0), data, the two slots of the TSS descriptor,
/// then data and 64-bit code for CPL 3.
#[repr(C, align(16))]
pub struct Gdt([u64; 7]);

impl Gdt {
    /// kiln's GDT, the TSS descriptor left for [`load`] to fill.
    pub const fn new() -> Gdt {
        Gdt([
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
        ])
    }
}

impl Default for Gdt {
    fn default() -> Self {
        Self::new()
    }
}

/// One 16-byte interrupt gate (SDM vol. 3, figure 6-8).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// A gate that is not present.
    pub const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present, DPL 0, 64-bit interrupt gate to `handler` in kiln's code
    /// segment, on stack `ist` of the TSS (0: the current stack).
    pub const fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// An IDT of `N` gates.
#[repr(C, align(16))]
pub struct Idt<const N: usize>(pub [Gate; N]);

impl<const N: usize> Idt<N> {
    /// Every gate absent.
    pub const fn new() -> Idt<N> {
        Idt([Gate::EMPTY; N])
    }
}

impl<const N: usize> Default for Idt<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The operand of `lgdt` and `lidt`.
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

const _: () = assert!(size_of::<TrapFrame>() == TRAP_FRAME_SIZE);
const _: () = assert!(size_of::<Gate>() == 16);
const _: () = assert!(size_of::<[u32; 26]>() == 104);
const _: () = assert!(core::mem::offset_of!(Tss<1>, io_bitmap) == 104);

/// Points the TSS's RSP0 and IST1 at `trap_stack_top`, writes the TSS
/// descriptor, and loads the GDT (reloading CS and the data segments), the
/// task register and the IDT. Inlined into the platform's boot code: the
/// same instructions at CPL 0 as when each platform had its own copy.
///
/// # Safety
///
/// At CPL 0, once, at boot, alone on the only vCPU, with pointers to the
/// platform's statics, which nothing else refers to yet, and the top of a
/// trap stack used by nothing else.
#[inline(always)]
pub unsafe fn load<const IO: usize, const VECTORS: usize>(
    gdt: *mut Gdt,
    tss: *mut Tss<IO>,
    idt: *mut Idt<VECTORS>,
    trap_stack_top: u64,
) {
    // SAFETY: the caller's: boot runs alone; nothing else refers to these
    // statics yet.
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
        let limit = (104 + IO - 1) as u64;
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
            limit: (size_of::<Idt<VECTORS>>() - 1) as u16,
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

/// Set while an exception is being reported, so that a fault inside the
/// report halts at once instead of recursing.
static IN_TRAP: AtomicBool = AtomicBool::new(false);

/// The Rust side of every exception, called by the platform's entry stub:
/// prints the report (name, error code, CR2, registers; `guard_page` names
/// a stack overflow) with `puts`, then ends the guest through `abort`.
///
/// # Safety
///
/// `frame` points at the [`TRAP_FRAME_SIZE`] bytes the stub pushed,
/// laid out as [`TrapFrame`]; runs at CPL 0 (it reads CR2).
pub unsafe fn report_trap(frame: *const TrapFrame, guard_page: u64, puts: Puts, abort: Abort) -> ! {
    if IN_TRAP.swap(true, Ordering::AcqRel) {
        abort(format_args!("exception while reporting an exception"))
    }
    // SAFETY: the caller's: `frame` points at the frame the stub pushed.
    let frame = unsafe { &*frame };
    let cr2 = crate::arch::cr2();
    {
        let mut out = BufferedWriter::<_, 512>::new(puts);
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
    abort(format_args!(
        "exception {mnemonic} ({name}) at rip {:#x}, error code {:#x}, cr2 {cr2:#x}",
        frame.rip, frame.error_code
    ))
}

/// The exception entry stubs and their common part, as the assembly text
/// of a platform's `global_asm!`, whose `handler` operand names the Rust
/// side (`extern "C" fn(*const TrapFrame) -> !`, which calls
/// [`report_trap`]). Those for which the CPU pushes no error code push a
/// zero, so every frame has the same shape; then each pushes its vector
/// and jumps to the common part, which saves the general-purpose registers
/// in [`TrapFrame`] order and calls the handler. The table
/// `kiln_trap_stubs` lists the stubs' addresses by vector.
///
/// #UD is the one exception that may return: the `ud2` at
/// `kiln_load_page_tables_ud2` (the function `kiln_load_page_tables`)
/// asks CPL 0 to load the page tables at RDI. `$ud_gates` is assembly run
/// in the #UD stub when the fault is not that `ud2`, for the platform's
/// other gates (falling through, it must leave the stack and registers as
/// it found them); `$extra` follows the page-table gate's `ud2; ret` in
/// the same section. Both are inserted as they are: a platform with no
/// other gate passes `""`, and its stubs assemble to the same
/// instructions as before they were shared.
#[macro_export]
macro_rules! trap_stubs_asm {
    ($ud_gates:literal, $extra:literal) => {
        concat!(
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
"#,
            $ud_gates,
            r#"        push 0
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
"#,
            $extra,
            r#"    KILN_TRAP_STUB 7, 0
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
    "#
        )
    };
}
