//! What the CPU saved when an exception struck, and how it is reported:
//! the exception's name, its error code, CR2 and every register.

use core::fmt;

/// The registers saved by the exception entry stubs (`sys::cpu`), in memory
/// order: the general-purpose registers pushed by the stub, the vector and
/// error code (0 when the exception has none), then the frame the CPU
/// pushed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Size of [`TrapFrame`], which the assembly stubs rely on.
pub const TRAP_FRAME_SIZE: usize = 22 * 8;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == TRAP_FRAME_SIZE);

/// The mnemonic and name of exception `vector` (Intel SDM vol. 3, table 6-1).
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        _ => ("#??", "reserved exception"),
    }
}

/// Describes a page fault's error code: what access, and why it faulted.
fn page_fault_cause(code: u64) -> (&'static str, &'static str) {
    let access = if code & 0x10 != 0 {
        "instruction fetch"
    } else if code & 0x2 != 0 {
        "write"
    } else {
        "read"
    };
    let why = if code & 0x1 == 0 {
        "page not present"
    } else if code & 0x8 != 0 {
        "reserved bit set"
    } else {
        "protection violation"
    };
    (access, why)
}

/// The report printed for an exception: a headline, then a register dump.
pub struct Report<'a> {
    /// The saved registers.
    pub frame: &'a TrapFrame,
    /// CR2 at the time of the exception (the faulting address of a #PF).
    pub cr2: u64,
    /// The unmapped page below the stack (0 if not known yet).
    pub guard_page: u64,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.frame;
        let (mnemonic, name) = exception_name(t.vector);
        write!(
            f,
            "kiln: exception {mnemonic} ({name}, vector {}) at rip {:#018x}, error code {:#x}",
            t.vector, t.rip, t.error_code
        )?;
        if t.vector == 14 {
            let (access, why) = page_fault_cause(t.error_code);
            let hint = if self.cr2 < 0x1000 {
                "; hint: this is a null pointer dereference"
            } else if self.guard_page != 0 && self.cr2 / 0x1000 == self.guard_page / 0x1000 {
                "; hint: this is a stack overflow (the stack is 1 MiB)"
            } else {
                ""
            };
            write!(f, ": {access} of address {:#x}, {why}{hint}", self.cr2)?;
        }
        writeln!(f)?;
        let rows: [[(&str, u64); 3]; 8] = [
            [("rax", t.rax), ("rbx", t.rbx), ("rcx", t.rcx)],
            [("rdx", t.rdx), ("rsi", t.rsi), ("rdi", t.rdi)],
            [("rbp", t.rbp), ("rsp", t.rsp), ("r8", t.r8)],
            [("r9", t.r9), ("r10", t.r10), ("r11", t.r11)],
            [("r12", t.r12), ("r13", t.r13), ("r14", t.r14)],
            [("r15", t.r15), ("rip", t.rip), ("rflags", t.rflags)],
            [("cs", t.cs), ("ss", t.ss), ("cr2", self.cr2)],
            [("vector", t.vector), ("error", t.error_code), ("", 0)],
        ];
        for row in rows {
            let mut first = true;
            for (name, value) in row.into_iter().filter(|(n, _)| !n.is_empty()) {
                if !first {
                    f.write_str("  ")?;
                }
                first = false;
                write!(f, "{name:>6} {value:#018x}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    /// The report of `frame` with CR2 `cr2`, the guard page at 0x3ef000.
    fn report(frame: TrapFrame, cr2: u64) -> String {
        Report {
            frame: &frame,
            cr2,
            guard_page: 0x3e_f000,
        }
        .to_string()
    }

    /// A page fault with error code `error_code`.
    fn page_fault(error_code: u64) -> TrapFrame {
        TrapFrame {
            vector: 14,
            error_code,
            ..TrapFrame::default()
        }
    }

    #[test]
    fn a_null_write_is_reported_as_such() {
        let frame = TrapFrame {
            rip: 0x10_1234,
            rax: 0xdead,
            ..page_fault(0x2)
        };
        let text = report(frame, 0);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "kiln: exception #PF (page fault, vector 14) at rip 0x0000000000101234, error code 0x2: \
             write of address 0x0, page not present; hint: this is a null pointer dereference"
        );
        assert!(text.contains("   rax 0x000000000000dead"), "{text}");
        assert!(text.contains("   cr2 0x0000000000000000"), "{text}");
        assert_eq!(text.lines().count(), 9);
    }

    #[test]
    fn a_write_to_read_only_memory_is_a_protection_violation() {
        let text = report(page_fault(0x3), 0x10_2000);
        assert!(
            text.contains("write of address 0x102000, protection violation\n"),
            "{text}"
        );
    }

    #[test]
    fn a_fault_in_the_guard_page_is_a_stack_overflow() {
        let text = report(page_fault(0x2), 0x3e_fbf0);
        assert!(
            text.contains("page not present; hint: this is a stack overflow"),
            "{text}"
        );
    }

    #[test]
    fn other_exceptions_name_themselves() {
        let frame = TrapFrame {
            vector: 6,
            ..TrapFrame::default()
        };
        let text = report(frame, 0);
        assert!(text.starts_with("kiln: exception #UD (invalid opcode, vector 6)"));
        assert_eq!(exception_name(200).0, "#??");
    }
}
