//! The PVH entry: the Xen ELF note that names it, and the 32-bit code the
//! VMM starts (x86 boot protocol "PVH", Xen's `docs/misc/pvh.pandoc`): flat
//! 32-bit protected mode, paging off, EBX = the start info's physical
//! address, no stack. It turns on PAE paging with an identity map of the
//! first GiB (2 MiB user pages, built by the assembler: no loop at CPL 0)
//! and long mode, loads a GDT with a 64-bit code segment and calls
//! `boot::kiln_virtio_boot` on a small stack in the image's bss.

use core::arch::global_asm;

/// The boot stack's size: enough for the CPL 0 part of boot and for the
/// CPL 3 part until the stack at the top of memory is mapped.
pub const BOOT_STACK_SIZE: usize = 16 * 1024;

// The PVH note: type XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", the entry's
// physical address as 8 bytes (as Linux writes it; QEMU reads a size_t,
// Firecracker and cloud-hypervisor the low 4 bytes).
global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad kiln_pvh_start

    /* kiln's features note (`crate::power::FEATURES_NOTE`): name "kiln",
       type 1, a 32-bit mask; bit 0: the command line's kiln.ged= word is
       read. VMMs look only for Xen's note. */
    .balign 4
    .long 5
    .long 4
    .long 1
    .asciz "kiln"
    .balign 4
    .long 1
    .popsection

    .pushsection .text.kiln_start, "ax"
    .code32
    .global _start
    .global kiln_pvh_start
    _start:
    kiln_pvh_start:
        cli
        cld
        mov %ebx, %edi
        /* CR4.PAE, CR3 = the identity map. */
        mov %cr4, %eax
        or $0x20, %eax
        mov %eax, %cr4
        mov $kiln_pvh_pml4, %eax
        mov %eax, %cr3
        /* EFER.LME and EFER.NXE. */
        mov $0xc0000080, %ecx
        rdmsr
        or $0x900, %eax
        wrmsr
        /* CR0.PG, CR0.WP, CR0.PE: long mode is active. */
        mov %cr0, %eax
        or $0x80010001, %eax
        mov %eax, %cr0
        lgdt kiln_pvh_gdtr
        ljmp $0x08, $1f
    .code64
    1:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        mov $kiln_boot_stack_top, %esp
        xor %ebp, %ebp
        call {boot}
        ud2
    .popsection

    .pushsection .data.kiln_pvh, "aw"
    .balign 4096
    kiln_pvh_pml4:
        .quad kiln_pvh_pdpt + 0x7
        .fill 511, 8, 0
    kiln_pvh_pdpt:
        .quad kiln_pvh_pd + 0x7
        .fill 511, 8, 0
    kiln_pvh_pd:
        .set kiln_pvh_i, 0
        .rept 512
        .quad (kiln_pvh_i << 21) + 0x87
        .set kiln_pvh_i, kiln_pvh_i + 1
        .endr
    .balign 16
    kiln_pvh_gdt:
        .quad 0
        .quad 0x00af9a000000ffff
        .quad 0x00cf92000000ffff
    kiln_pvh_gdtr:
        .word 23
        .long kiln_pvh_gdt
    .popsection

    .pushsection .bss.kiln_boot_stack, "aw", @nobits
    .balign 16
    .global kiln_boot_stack_top
    kiln_boot_stack:
        .skip {stack}
    kiln_boot_stack_top:
    .popsection
    "#,
    boot = sym super::boot::kiln_virtio_boot,
    stack = const BOOT_STACK_SIZE,
    options(att_syntax),
);
