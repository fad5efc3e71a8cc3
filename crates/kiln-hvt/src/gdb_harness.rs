//! The gdb stub without a VM, for its fuzz target (`fuzz/`, target `gdb`)
//! and the replay of its seed corpus: [`run`] drives the real stub
//! ([`crate::gdb::serve_with`], gdbstub's packet parser and kiln-hvt's
//! target: memory access through the guest's page tables, register
//! conversions, breakpoints, the trap frames it reads back) with arbitrary
//! bytes as gdb's side of the connection, against a [`FakeGuest`] whose
//! registers, page tables, trap frames and memory are arbitrary bytes too.
//!
//! An input is a header ([`HEADER`] bytes: flags, CR3, TR base, the
//! registers, a script of stops), then a length-prefixed run of bytes
//! written to guest memory at an address the header picks (page tables,
//! TSS, trap frame, code: whatever the fuzzer finds), then what gdb sends.
//! Nothing may panic, hang or touch memory outside guest memory.

use std::io;

use gdbstub::conn::{Connection, ConnectionExt};
use kvm_bindings::{kvm_fpu, kvm_guest_debug, kvm_regs, kvm_sregs};

use crate::gdb::Guest;
use crate::guest::GuestMemory;
use crate::vm::{IoExit, Stop, VmError};
use crate::{Exit, Served, TenderError};

/// Guest memory of the fake guest: 4 MiB.
pub const MEM: u64 = 4 << 20;
/// Where the default page tables are (PML4, PDPT, PD), identity-mapping
/// the 4 MiB with two large pages.
const TABLES: u64 = 0x1000;
/// The default TSS, whose IST1 top is [`TRAP_TOP`].
const TSS: u64 = 0x5000;
/// The default IST1 top.
const TRAP_TOP: u64 = 0x30_0000;
/// The read-only "code" pages (writes go through the write protection).
const CODE: std::ops::Range<u64> = 0x10_0000..0x10_2000;
/// Most stops one input may script before the guest ends (so that no
/// input runs forever).
const MAX_STOPS: u32 = 64;

/// Size of an input's header.
pub const HEADER: usize = 1 + 8 + 8 + 18 * 8 + 2 + 8;

/// A guest whose state is the fuzz input's.
pub struct FakeGuest {
    mem: GuestMemory,
    regs: std::cell::Cell<kvm_regs>,
    sregs: std::cell::Cell<kvm_sregs>,
    fpu: kvm_fpu,
    script: [u8; 8],
    stops: u32,
    /// Every debug control set fails (a vCPU that went away).
    debug_fails: bool,
}

/// Little-endian u64 at `at` of `b` (zero past its end).
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut q = [0u8; 8];
    for (i, byte) in q.iter_mut().enumerate() {
        *byte = b.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(q)
}

impl FakeGuest {
    /// The guest an input's header and memory bytes describe; the rest of
    /// the input is gdb's. `None` where the host cannot map guest memory.
    pub fn new(input: &[u8]) -> Option<(Self, &[u8])> {
        let header = input.get(..HEADER).unwrap_or(input);
        let flags = header.first().copied().unwrap_or(0);
        let mut mem = GuestMemory::new(MEM).ok()?;
        if flags & 1 == 0 {
            // Sane tables, TSS and a #PF trap frame under the IST1 top.
            let set = |mem: &mut GuestMemory, at: u64, v: u64| {
                let _ = mem.write(at, &v.to_le_bytes());
            };
            set(&mut mem, TABLES, (TABLES + 0x1000) | 3);
            set(&mut mem, TABLES + 0x1000, (TABLES + 0x2000) | 3);
            set(&mut mem, TABLES + 0x2000, 0x83);
            set(&mut mem, TABLES + 0x2008, 0x20_0000 | 0x83);
            set(&mut mem, TSS + 36, TRAP_TOP);
            let frame = TRAP_TOP - crate::dumpcore::TRAP_FRAME_SIZE;
            set(&mut mem, frame + 15 * 8, u64::from(flags >> 4)); // vector
            set(&mut mem, frame + 17 * 8, CODE.start + 1); // rip
            set(&mut mem, frame + 18 * 8, 0x33); // cs
        }
        let mut rest = input.get(HEADER..).unwrap_or(&[]);
        // Hostile bytes anywhere in memory (a length of up to 64 KiB, at
        // an address the header picks).
        if rest.len() >= 6 {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 6);
            let at = u64::from(u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]])) % MEM;
            let bytes = &rest[6..6 + len];
            let n = (bytes.len() as u64).min(MEM - at) as usize;
            let _ = mem.write(at, &bytes[..n]);
            rest = &rest[6 + len..];
        }
        if flags & 2 == 0 {
            let _ = mem.protect(CODE.start, CODE.end);
        }
        let q = |i: usize| u64_at(header, 17 + i * 8);
        let regs = kvm_regs {
            rax: q(0),
            rbx: q(1),
            rcx: q(2),
            rdx: q(3),
            rsi: q(4),
            rdi: q(5),
            rbp: q(6),
            rsp: q(7),
            r8: q(8),
            r9: q(9),
            r10: q(10),
            r11: q(11),
            r12: q(12),
            r13: q(13),
            r14: q(14),
            r15: q(15),
            rip: q(16),
            rflags: q(17),
        };
        let mut sregs = kvm_sregs {
            cr3: if flags & 4 == 0 {
                TABLES
            } else {
                u64_at(header, 1)
            },
            ..Default::default()
        };
        sregs.tr.base = if flags & 8 == 0 {
            TSS
        } else {
            u64_at(header, 9)
        };
        let selectors = [
            header.get(161).copied().unwrap_or(0),
            header.get(162).copied().unwrap_or(0),
        ];
        sregs.cs.selector = u16::from(selectors[0]);
        sregs.ss.selector = u16::from(selectors[1]);
        let mut fpu = kvm_fpu::default();
        for (i, r) in fpu.fpr.iter_mut().enumerate() {
            r[0] = header.get(17 + i).copied().unwrap_or(0);
        }
        fpu.mxcsr = q(17) as u32;
        let mut script = [0u8; 8];
        for (i, s) in script.iter_mut().enumerate() {
            *s = header.get(163 + i).copied().unwrap_or(0);
        }
        Some((
            Self {
                mem,
                regs: std::cell::Cell::new(regs),
                sregs: std::cell::Cell::new(sregs),
                fpu,
                script,
                stops: 0,
                debug_fails: flags & 0x80 != 0 && flags & 0x40 != 0,
            },
            rest,
        ))
    }
}

impl Guest for FakeGuest {
    fn regs(&self) -> Result<kvm_regs, VmError> {
        Ok(self.regs.get())
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<(), VmError> {
        self.regs.set(*regs);
        Ok(())
    }

    fn sregs(&self) -> Result<kvm_sregs, VmError> {
        Ok(self.sregs.get())
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), VmError> {
        self.sregs.set(*sregs);
        Ok(())
    }

    fn fpu(&self) -> Result<kvm_fpu, VmError> {
        Ok(self.fpu)
    }

    fn set_guest_debug(&self, _debug: &kvm_guest_debug) -> Result<(), VmError> {
        if self.debug_fails {
            Err(VmError::Cpuid)
        } else {
            Ok(())
        }
    }

    fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    fn mem_mut(&mut self) -> &mut GuestMemory {
        &mut self.mem
    }

    fn clear_immediate_exit(&mut self) {}

    /// The script's next stop: a hypercall (after which the trap frame in
    /// memory is read back), a breakpoint or step exit, an interrupt, or a
    /// failure; the guest halts after [`MAX_STOPS`].
    fn run_debug(&mut self) -> Result<Stop, VmError> {
        self.stops += 1;
        if self.stops > MAX_STOPS {
            return Ok(Stop::Io(IoExit {
                port: 0,
                data: [0; 8],
                size: 0,
            }));
        }
        let op = self.script[(self.stops as usize - 1) % self.script.len()];
        let pc = self.regs.get().rip;
        Ok(match op % 6 {
            0 => Stop::Io(IoExit {
                port: u16::from(op),
                data: [op; 8],
                size: usize::from(op >> 4),
            }),
            1 => Stop::Debug {
                exception: 3,
                pc,
                dr6: 0,
            },
            2 => Stop::Debug {
                exception: 1,
                pc,
                dr6: u64::from(op) << 8,
            },
            3 => Stop::Debug {
                exception: 1,
                pc,
                dr6: u64::from(op & 0xf),
            },
            4 => Stop::Interrupted,
            _ => return Err(VmError::Cpuid),
        })
    }

    /// A hypercall goes on, except port 0 (the guest halts with the
    /// status in its data) and odd ports above 0xf0 (a bad hypercall).
    fn serve(&mut self, io: IoExit) -> Result<Served, TenderError> {
        match io.port {
            0 => Ok(Served::Exit(i32::from(io.data[0]))),
            p if p > 0xf0 && p % 2 == 1 => Err(TenderError::Vm(VmError::Cpuid)),
            _ => Ok(Served::Continue),
        }
    }

    fn fail(&mut self, e: VmError) -> TenderError {
        TenderError::Vm(e)
    }

    fn run_on(&mut self) -> Result<Exit, TenderError> {
        Ok(Exit::Status(0))
    }
}

/// gdb's side of the connection: reads the input, discards the replies
/// (counting them, so that a reply loop ends too).
pub struct FakeConnection<'a> {
    input: &'a [u8],
    written: usize,
    max_written: usize,
}

/// Most reply bytes one input may cause: then gdb "goes away" (a write
/// error). A stub that answered forever fails here instead of hanging, and
/// a read of all guest memory (`m0,ffffffffffffffff`: 4 MiB, 8 MiB of hex)
/// costs no more than a small one.
const MAX_WRITTEN: usize = 256 << 10;

impl Connection for FakeConnection<'_> {
    type Error = io::Error;

    fn write(&mut self, _byte: u8) -> Result<(), io::Error> {
        self.write_all(&[0])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), io::Error> {
        self.written += buf.len();
        if self.written > self.max_written {
            return Err(io::Error::other(
                "the stub answered more than the fake gdb reads",
            ));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), io::Error> {
        Ok(())
    }
}

impl ConnectionExt for FakeConnection<'_> {
    fn read(&mut self) -> Result<u8, io::Error> {
        let (&b, rest) = self
            .input
            .split_first()
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        self.input = rest;
        Ok(b)
    }

    fn peek(&mut self) -> Result<Option<u8>, io::Error> {
        Ok(self.input.first().copied())
    }
}

/// One fuzz input: the stub serves its gdb bytes against its guest until
/// they run out (an error: gdb went away), gdb kills or detaches, or the
/// guest ends. Returns how the session ended, for the seeds' checks.
pub fn run(input: &[u8]) -> Option<Result<Exit, TenderError>> {
    run_reading(input, MAX_WRITTEN)
}

/// [`run`] with gdb reading at most `max_written` bytes of replies.
pub fn run_reading(input: &[u8], max_written: usize) -> Option<Result<Exit, TenderError>> {
    let (mut guest, gdb) = FakeGuest::new(input)?;
    let conn = FakeConnection {
        input: gdb,
        written: 0,
        max_written,
    };
    Some(crate::gdb::serve_with(&mut guest, conn))
}

/// gdb's packet `$BODY#XX` for `body`, with its checksum.
pub fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

/// An input: the header with `flags` and `script` (everything else zero),
/// no memory bytes, then `gdb`.
pub fn input(flags: u8, script: [u8; 8], gdb: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    out[0] = flags;
    // A CPL 3 code selector and rip in the code pages.
    out[161] = 0x33;
    out[17 + 16 * 8..17 + 17 * 8].copy_from_slice(&(CODE.start + 0x10).to_le_bytes());
    out[163..171].copy_from_slice(&script);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(gdb);
    out
}

/// An input whose page tables map every address onto the PML4's page
/// (each of its entries points at itself), then `gdb`.
pub fn self_mapped(gdb: &[u8]) -> Vec<u8> {
    let mut i = input(0x01, [1; 8], b"");
    i.truncate(HEADER);
    let tables: Vec<u8> = (0..512u64)
        .flat_map(|_| (TABLES | 3).to_le_bytes())
        .collect();
    i.extend_from_slice(&(tables.len() as u16).to_le_bytes());
    i.extend_from_slice(&(TABLES as u32).to_le_bytes());
    i.extend_from_slice(&tables);
    i.extend_from_slice(gdb);
    i
}

/// The seed corpus: gdb sessions as gdb 13 sends them (handshake, stop
/// reason, registers, memory, breakpoints, steps, continue, Ctrl-C, kill,
/// detach), and malformed ones (bad checksums, huge lengths, hostile
/// addresses, packets cut short, hostile page tables and trap frames).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let session = |packets: &[&str]| -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            out.extend_from_slice(&packet(p));
            out.push(b'+');
        }
        out
    };
    let handshake = [
        "qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;memory-tagging+",
        "vMustReplyEmpty",
        "QStartNoAckMode",
        "Hg0",
        "qXfer:features:read:target.xml:0,ffb",
        "qXfer:features:read:target.xml:ffb,ffb",
        "qTStatus",
        "?",
        "qfThreadInfo",
        "qsThreadInfo",
        "qAttached",
        "Hc-1",
        "qC",
        "qOffsets",
        "g",
    ];
    let mut seeds = vec![
        ("handshake", input(0, [1; 8], &session(&handshake))),
        (
            "registers",
            input(
                0,
                [1; 8],
                &session(&[
                    "g",
                    "p10",
                    "p0",
                    "p39",
                    "p400",
                    "P10=0000100000000000",
                    "P0=zz",
                    &format!("G{}", "00".repeat(560)),
                    "Gabc",
                ]),
            ),
        ),
        (
            "memory",
            input(
                0,
                [1; 8],
                &session(&[
                    "m100000,40",
                    "mffffffffffffffff,10",
                    "m3ffff0,40",
                    "m400000,8",
                    "M100000,4:90909090",
                    "M3ffffe,4:01020304",
                    "M0,2:zz",
                    "X100010,2:\u{7d}\u{03}x",
                    "m800000000000,8",
                ]),
            ),
        ),
        (
            "breakpoints-continue-step",
            input(
                0,
                [1, 2, 3, 0x30, 4, 6, 5, 0],
                &session(&[
                    "Z0,100010,1",
                    "Z0,100010,1",
                    "Z0,ffffffffffffffff,1",
                    "Z1,100020,1",
                    "Z1,100021,1",
                    "Z1,100022,1",
                    "Z1,100023,1",
                    "Z1,100024,1",
                    "m100010,1",
                    "vCont?",
                    "vCont;c",
                    "c",
                    "s",
                    "vCont;s:1",
                    "z0,100010,1",
                    "z0,100010,1",
                    "z1,100020,1",
                    "z2,100000,4",
                    "D",
                ]),
            ),
        ),
        (
            "ctrl-c-and-kill",
            input(0, [4; 8], &{
                let mut s = session(&["?", "c"]);
                s.push(0x03);
                s.extend_from_slice(&session(&["g", "vKill;1", "k"]));
                s
            }),
        ),
        (
            "exit-while-running",
            input(0, [0; 8], &session(&["c", "c", "g"])),
        ),
        (
            "trap-frame-reflected",
            // A #BP frame (vector 3 in the flags' high nibble) at a
            // breakpoint: the stop comes from the guest's own handler.
            input(0x30, [0, 0, 0, 0, 0, 0, 0, 0], &{
                let mut s = session(&["Z0,100000,1"]);
                s.extend_from_slice(&session(&["c", "g", "s", "g", "D"]));
                s
            }),
        ),
        (
            "bad-checksums-and-noise",
            input(
                0,
                [1; 8],
                b"$g#00-$?#3f+$m100000,4#ff+\x03\x03$#00$}}}}#00+-+-garbage$qSupported#37+$",
            ),
        ),
        (
            "huge-packet",
            input(0, [1; 8], &{
                let mut s = b"$m".to_vec();
                s.extend(std::iter::repeat_n(b'f', 8000));
                s.extend_from_slice(b",1#00+");
                s.extend_from_slice(&packet(&format!("M100000,1000:{}", "cc".repeat(4096))));
                s
            }),
        ),
        (
            "hostile-tables",
            // CR3 and TR from the header, page tables overwritten with
            // entries pointing everywhere.
            {
                let mut i = input(0x0c, [0, 1, 2, 3, 4, 5, 0, 0], b"");
                i[1..9].copy_from_slice(&0x1000u64.to_le_bytes());
                i[9..17].copy_from_slice(&u64::MAX.to_le_bytes());
                i.truncate(HEADER);
                let junk: Vec<u8> = (0..4096u32)
                    .flat_map(|n| {
                        (u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 0x81).to_le_bytes()
                    })
                    .collect();
                let junk = &junk[..0x8000];
                i.extend_from_slice(&(junk.len() as u16).to_le_bytes());
                i.extend_from_slice(&0x1000u32.to_le_bytes());
                i.extend_from_slice(junk);
                i.extend_from_slice(&session(&[
                    "m100000,100",
                    "m0,10000",
                    "M200000,4:00000000",
                    "Z0,100000,1",
                    "c",
                    "s",
                    "g",
                ]));
                i
            },
        ),
        (
            "failing-vcpu",
            input(0xc0, [5; 8], &session(&["?", "g", "c", "s", "D"])),
        ),
    ];
    seeds.push((
        "huge-read-all-memory",
        input(0, [1; 8], &packet("m0,ffffffffffffffff")),
    ));
    seeds.push((
        "huge-read-self-mapped",
        self_mapped(&[packet("m0,ffffffffffffffff"), packet("D")].concat()),
    ));
    seeds.push(("cut-short", input(0, [1; 8], &packet("m100000,40")[..5])));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_their_checksum() {
        assert_eq!(packet("g"), b"$g#67");
        assert_eq!(packet("?"), b"$?#3f");
    }

    #[test]
    fn every_seed_ends_without_a_panic() {
        for (name, input) in seeds() {
            assert!(run(&input).is_some(), "{name}");
        }
    }

    #[test]
    fn a_detach_runs_the_guest_on_and_a_kill_aborts_it() {
        let detach = input(
            0,
            [1; 8],
            &[packet("?"), b"+".to_vec(), packet("D")].concat(),
        );
        assert!(matches!(run(&detach), Some(Ok(Exit::Status(0)))));
        let kill = input(
            0,
            [1; 8],
            &[packet("?"), b"+".to_vec(), packet("k")].concat(),
        );
        assert!(matches!(run(&kill), Some(Ok(Exit::Status(255)))));
    }

    /// Regression: `m0,ffffffffffffffff` against tables whose every entry
    /// points at the PML4 (every address maps to that page) read 2^64
    /// bytes, a hang; a contiguous read now stops past guest memory's size.
    #[test]
    fn a_huge_read_through_self_mapping_tables_ends() {
        let i = self_mapped(&[packet("m0,ffffffffffffffff"), packet("D")].concat());
        let start = std::time::Instant::now();
        // gdb reads up to 64 MiB of replies: all of guest memory, in hex.
        let end = run_reading(&i, 64 << 20);
        assert!(matches!(end, Some(Ok(Exit::Status(0)))), "{end:?}");
        // Seconds in a debug build, not days.
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn memory_reads_go_through_the_guests_tables() {
        // The fake's identity tables map the code pages: a read answers
        // their bytes (zero), a read of unmapped space an error.
        let mut guest = FakeGuest::new(&input(0, [1; 8], b"")).unwrap().0;
        let t = crate::paging::translate(guest.mem(), TABLES, CODE.start).unwrap();
        assert_eq!(t.gpa, CODE.start);
        assert!(crate::paging::translate(guest.mem(), TABLES, MEM + 0x1000).is_err());
        // Breakpoints reach the read-only code pages.
        assert!(guest.mem_mut().poke(CODE.start, &[0xcc]).is_ok());
    }
}
