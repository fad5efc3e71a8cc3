//! `--dumpcore=DIR`, the part both tenders share: the ELF core file
//! (`ET_CORE`: an `NT_PRSTATUS` note with the registers and the signal, an
//! optional `NT_PRFPREG` note with the x87/SSE state, then guest memory
//! as `PT_LOAD` segments at the guest's own addresses), the layout Solo5's
//! `hvt_dumpcore.c` writes and `gdb IMAGE CORE` reads, and the file it goes
//! to.
//!
//! The file is created unnamed (`O_TMPFILE`) in DIR before the guest
//! starts ([`CoreFile::prepare`]): a DIR that is missing, not a directory,
//! a symbolic link or not writable is refused then, with the guest not yet
//! run. It is named `core.TENDER.PID` only once written, with `linkat`,
//! which never follows or replaces an existing name, relative to DIR's
//! descriptor: the core lands in DIR or nowhere. Its size is bounded by
//! the caller's limit (guest memory's size) plus the headers, whatever the
//! segments a hostile guest's state describes.
//!
//! Each tender says where guest memory's bytes come from ([`Memory`]):
//! kiln-hvt's mapping of guest-physical memory, kiln-spt's memory file,
//! which outlives the guest process.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use object::elf;
use object::write::StreamingBuffer;
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use thiserror::Error;

/// Page size: segments are page-aligned in the file.
pub const PAGE: u64 = 4096;

/// Why a core file was not written.
#[derive(Debug, Error)]
pub enum DumpError {
    /// DIR is a symbolic link.
    #[error(
        "--dumpcore: {dir} is a symbolic link; hint: name the directory it points to (a core is never written through a link)"
    )]
    Link {
        /// The directory.
        dir: PathBuf,
    },
    /// DIR or the file in it cannot be created.
    #[error(
        "cannot create a core file in {dir}; hint: --dumpcore needs an existing, writable directory on a file system with O_TMPFILE (ext4, xfs, btrfs, tmpfs)"
    )]
    Create {
        /// The directory.
        dir: PathBuf,
        /// What the host said.
        #[source]
        source: io::Error,
    },
    /// Writing or naming the file failed.
    #[error("cannot write the core file {path}")]
    Write {
        /// Where it was going.
        path: PathBuf,
        /// What the host said.
        #[source]
        source: io::Error,
    },
}

/// The registers a core records (`struct user_regs_struct`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreRegs {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8 to r15.
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// cs, ss, ds, es, fs, gs selectors.
    pub segments: [u64; 6],
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
}

/// `SIGABRT`: the signal of a guest that aborted without a fault.
pub const SIGABRT: u32 = 6;

/// Size of the x87/SSE state of an `NT_PRFPREG` note (`fxsave`'s).
pub const FPREGS_SIZE: usize = 512;

/// What the notes say about the guest.
#[derive(Debug, Clone, Copy)]
pub struct CoreState<'a> {
    /// The registers.
    pub regs: &'a CoreRegs,
    /// The signal the core names (`Program terminated with signal ...`).
    pub signal: u32,
    /// The process id the core names.
    pub pid: u32,
    /// The x87/SSE state in `fxsave` layout, when known.
    pub fpregs: Option<&'a [u8; FPREGS_SIZE]>,
}

/// A run of guest memory in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The guest's (virtual) address of its first byte.
    pub va: u64,
    /// Where its bytes are in the tender's view of guest memory
    /// ([`Memory::copy`]'s offset; the core's `p_paddr`).
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Writable by the guest.
    pub writable: bool,
    /// Executable by the guest.
    pub executable: bool,
}

/// Where the bytes of guest memory come from.
pub trait Memory {
    /// Hands the `len` bytes at `offset` to `out`, in order, in one or
    /// more pieces of `len` bytes in all; an error if the range is not
    /// guest memory.
    fn copy(&self, offset: u64, len: u64, out: &mut dyn FnMut(&[u8])) -> io::Result<()>;
}

/// Most segments in a core (below ELF's `PN_XNUM`).
pub const MAX_SEGMENTS: usize = 0xff00;

/// The segments of `segments` that fit `limit` bytes in all, in order:
/// the first that would pass it is cut short and the rest dropped.
pub fn bounded(segments: &[Segment], limit: u64) -> Vec<Segment> {
    let mut left = limit;
    let mut out = Vec::new();
    for s in segments.iter().take(MAX_SEGMENTS) {
        if left == 0 {
            break;
        }
        let len = s.len.min(left);
        if len > 0 {
            out.push(Segment { len, ..*s });
        }
        left -= len;
    }
    out
}

/// `struct elf_prstatus` for x86_64 (336 bytes, `pr_reg` at 112).
fn prstatus(state: &CoreState<'_>) -> [u8; 336] {
    let regs = state.regs;
    let mut d = [0u8; 336];
    d[0..4].copy_from_slice(&state.signal.to_le_bytes()); // si_signo
    d[12..14].copy_from_slice(&(state.signal as u16).to_le_bytes()); // pr_cursig
    d[32..36].copy_from_slice(&state.pid.to_le_bytes()); // pr_pid
    let g = &regs.gpr;
    let [cs, ss, ds, es, fs, gs] = regs.segments;
    // user_regs_struct order.
    let pr_reg = [
        g[15],
        g[14],
        g[13],
        g[12],
        g[6],
        g[1],
        g[11],
        g[10],
        g[9],
        g[8],
        g[0],
        g[2],
        g[3],
        g[4],
        g[5],
        u64::MAX,
        regs.rip,
        cs,
        regs.rflags,
        g[7],
        ss,
        regs.fs_base,
        regs.gs_base,
        ds,
        es,
        fs,
        gs,
    ];
    for (i, v) in pr_reg.iter().enumerate() {
        d[112 + i * 8..120 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

/// One note: header, "CORE" padded to 8, the descriptor (a multiple of 4).
fn note(kind: u32, desc: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&5u32.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(b"CORE\0\0\0\0");
    out.extend_from_slice(desc);
}

/// The notes: `NT_PRSTATUS`, then `NT_PRFPREG` when the state is known.
fn notes(state: &CoreState<'_>) -> Vec<u8> {
    let mut n = Vec::with_capacity(2 * 20 + 336 + FPREGS_SIZE);
    note(elf::NT_PRSTATUS.0, &prstatus(state), &mut n);
    if let Some(fp) = state.fpregs {
        note(elf::NT_PRFPREG.0, fp, &mut n);
    }
    n
}

/// Writes a core of `segments` of `mem` (at most `limit` bytes of them,
/// see [`bounded`]) with `state` to `out`.
pub fn write_core(
    out: impl Write,
    state: &CoreState<'_>,
    segments: &[Segment],
    limit: u64,
    mem: &dyn Memory,
) -> io::Result<()> {
    let segments = bounded(segments, limit);
    let notes = notes(state);

    let mut buffer = StreamingBuffer::new(out);
    let mut w = Writer::new(object::Endianness::Little, true, &mut buffer);
    w.reserve_file_header();
    w.reserve_program_headers(1 + segments.len() as u32);
    let note_offset = w.reserve(notes.len() as u64, 4);
    let offsets: Vec<u64> = segments.iter().map(|s| w.reserve(s.len, PAGE)).collect();
    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_CORE,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: Default::default(),
    })
    .map_err(io::Error::other)?;
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_NOTE,
        p_flags: Default::default(),
        p_offset: note_offset,
        p_vaddr: 0,
        p_paddr: 0,
        p_filesz: notes.len() as u64,
        p_memsz: 0,
        p_align: 4,
    });
    for (s, offset) in segments.iter().zip(&offsets) {
        let mut flags = elf::PF_R;
        if s.writable {
            flags |= elf::PF_W;
        }
        if s.executable {
            flags |= elf::PF_X;
        }
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: flags,
            p_offset: *offset,
            p_vaddr: s.va,
            p_paddr: s.offset,
            p_filesz: s.len,
            p_memsz: s.len,
            p_align: PAGE,
        });
    }
    w.pad_until(note_offset);
    w.write(&notes);
    for (s, offset) in segments.iter().zip(&offsets) {
        w.pad_until(*offset);
        let mut written = 0u64;
        mem.copy(s.offset, s.len, &mut |bytes| {
            // Never more than the header promised.
            let take = bytes.len().min((s.len - written) as usize);
            w.write(&bytes[..take]);
            written += take as u64;
        })?;
        if written != s.len {
            return Err(io::Error::other("guest memory ended inside a segment"));
        }
    }
    buffer.result()?;
    let mut out = buffer.into_inner();
    out.flush()
}

/// A core file waiting for the guest to fail.
#[derive(Debug)]
pub struct CoreFile {
    dir: OwnedFd,
    file: OwnedFd,
    path: PathBuf,
    name: String,
}

impl CoreFile {
    /// Opens `dir` (never through a symbolic link) and an unnamed file in
    /// it, to be named `core.TENDER.PID`.
    pub fn prepare(dir: &Path, tender: &str) -> Result<Self, DumpError> {
        let (dir_fd, file) = crate::sys::open_unnamed_in(dir).map_err(|source| {
            // O_NOFOLLOW with O_DIRECTORY refuses a link with ENOTDIR (or
            // ELOOP): say which it was.
            let link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                DumpError::Link {
                    dir: dir.to_path_buf(),
                }
            } else {
                DumpError::Create {
                    dir: dir.to_path_buf(),
                    source,
                }
            }
        })?;
        let name = format!("core.{tender}.{}", std::process::id());
        // The ELF writer's hash maps take their keys from std, which asks
        // the kernel (getrandom) once per thread: before a seccomp filter
        // that does not allow it.
        let _ = std::collections::hash_map::RandomState::new();
        // The report says where the core went: an absolute path (DIR as
        // given, joined to the working directory, links not resolved).
        let path = std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(&name);
        Ok(Self {
            dir: dir_fd,
            file,
            path,
            name,
        })
    }

    /// The descriptors a seccomp filter must allow: the file (written,
    /// linked) and the directory (linked into).
    pub fn fds(&self) -> (RawFd, RawFd) {
        (self.file.as_raw_fd(), self.dir.as_raw_fd())
    }

    /// Where the core goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the core ([`write_core`]) and names it; returns its path.
    /// `sparse`: pages of zeros are left as holes ([`Sparse`]; needs
    /// `pwrite64` and `ftruncate` on the file), so never-touched guest
    /// memory costs neither time nor disk; otherwise plain `write`s.
    pub fn write(
        self,
        state: &CoreState<'_>,
        segments: &[Segment],
        limit: u64,
        mem: &dyn Memory,
        sparse: bool,
    ) -> Result<PathBuf, DumpError> {
        let path = self.path.clone();
        let err = |source| DumpError::Write {
            path: path.clone(),
            source,
        };
        let file = File::from(self.file);
        if sparse {
            // Buffered, so that pieces of guest memory make whole pages.
            let mut out = BufWriter::with_capacity(1 << 20, Sparse::new(&file));
            write_core(&mut out, state, segments, limit, mem).map_err(err)?;
            out.into_inner()
                .map_err(|e| err(e.into_error()))?
                .finish()
                .map_err(err)?;
        } else {
            let mut out = BufWriter::with_capacity(1 << 20, &file);
            write_core(&mut out, state, segments, limit, mem).map_err(err)?;
            drop(out);
        }
        crate::sys::link_into(file.as_raw_fd(), self.dir.as_raw_fd(), &self.name).map_err(err)?;
        Ok(self.path)
    }
}

/// A writer to a new, empty file that leaves every page-aligned page of
/// zeros as a hole: the file reads the same, but only the pages with data
/// take disk space and writing time.
pub struct Sparse<'a> {
    file: &'a File,
    /// The file offset of the next byte.
    pos: u64,
}

impl<'a> Sparse<'a> {
    /// Writes to `file` (new and empty) from offset 0.
    pub fn new(file: &'a File) -> Self {
        Self { file, pos: 0 }
    }

    /// Sets the file's length to what was written (a trailing hole
    /// included).
    pub fn finish(self) -> io::Result<()> {
        self.file.set_len(self.pos)
    }
}

impl Write for Sparse<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        // Pieces ending at page boundaries of the file; consecutive pieces
        // with data are written together.
        let mut data: Option<(u64, usize)> = None;
        let mut at = 0usize;
        while at < buf.len() {
            let pos = self.pos + at as u64;
            let to_boundary = (PAGE - pos % PAGE) as usize;
            let end = (at + to_boundary).min(buf.len());
            let piece = &buf[at..end];
            let hole = piece.len() == PAGE as usize && piece.iter().all(|&b| b == 0);
            match (&mut data, hole) {
                (Some((_, len)), false) => *len += piece.len(),
                (None, false) => data = Some((at as u64, piece.len())),
                (Some((from, len)), true) => {
                    let from = *from as usize;
                    self.file
                        .write_all_at(&buf[from..from + *len], self.pos + from as u64)?;
                    data = None;
                }
                (None, true) => {}
            }
            at = end;
        }
        if let Some((from, len)) = data {
            let from = from as usize;
            self.file
                .write_all_at(&buf[from..from + len], self.pos + from as u64)?;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory as bytes, handed out in pieces of 1000 bytes.
    struct Bytes(Vec<u8>);

    impl Memory for Bytes {
        fn copy(&self, offset: u64, len: u64, out: &mut dyn FnMut(&[u8])) -> io::Result<()> {
            let range = usize::try_from(offset)
                .ok()
                .and_then(|o| Some(o..o.checked_add(usize::try_from(len).ok()?)?))
                .filter(|r| r.end <= self.0.len())
                .ok_or_else(|| io::Error::other("outside"))?;
            for piece in self.0[range].chunks(1000) {
                out(piece);
            }
            Ok(())
        }
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn memory() -> Bytes {
        Bytes((0..4 * PAGE).map(|i| (i / PAGE) as u8 + 1).collect())
    }

    fn segments() -> Vec<Segment> {
        vec![
            Segment {
                va: 0x10_0000,
                offset: 0,
                len: PAGE,
                writable: false,
                executable: true,
            },
            Segment {
                va: 0x20_0000,
                offset: 2 * PAGE,
                len: 2 * PAGE,
                writable: true,
                executable: false,
            },
        ]
    }

    #[test]
    fn the_core_has_the_notes_and_the_segments() {
        let regs = CoreRegs {
            rip: 0x10_0123,
            gpr: [7; 16],
            ..Default::default()
        };
        let fp = [0x5a; FPREGS_SIZE];
        let state = CoreState {
            regs: &regs,
            signal: 11,
            pid: 42,
            fpregs: Some(&fp),
        };
        let mut out = Vec::new();
        write_core(&mut out, &state, &segments(), u64::MAX, &memory()).unwrap();
        assert_eq!(&out[..4], b"\x7fELF");
        assert_eq!(u16_at(&out, 16), 4); // ET_CORE
        assert_eq!(u16_at(&out, 18), 62); // EM_X86_64
        assert_eq!(u16_at(&out, 56), 3); // the notes and two segments
        let phoff = u64_at(&out, 32) as usize;
        let notes = u64_at(&out, phoff + 8) as usize;
        assert_eq!(u32_at(&out, notes + 8), 1); // NT_PRSTATUS
        assert_eq!(&out[notes + 12..notes + 16], b"CORE");
        assert_eq!(u32_at(&out, notes + 20), 11); // si_signo
        assert_eq!(u32_at(&out, notes + 20 + 32), 42); // pr_pid
        assert_eq!(u64_at(&out, notes + 20 + 112 + 16 * 8), 0x10_0123);
        let fp_note = notes + 20 + 336;
        assert_eq!(u32_at(&out, fp_note + 8), 2); // NT_PRFPREG
        assert_eq!(&out[fp_note + 20..fp_note + 20 + FPREGS_SIZE], &fp[..]);
        // The second segment: flags R+W, its bytes from offset 2 pages.
        let load = phoff + 2 * 56;
        assert_eq!(u32_at(&out, load + 4), 6); // PF_R | PF_W
        assert_eq!(u64_at(&out, load + 16), 0x20_0000);
        let data = u64_at(&out, load + 8) as usize;
        assert_eq!(out[data], 3);
        assert_eq!(out[data + 2 * PAGE as usize - 1], 4);
        assert_eq!(out.len(), data + 2 * PAGE as usize);
    }

    #[test]
    fn the_limit_bounds_the_memory_dumped() {
        let mut many = Vec::new();
        for _ in 0..100 {
            many.extend(segments());
        }
        let kept = bounded(&many, 5 * PAGE / 2);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].len, 3 * PAGE / 2);
        let regs = CoreRegs::default();
        let state = CoreState {
            regs: &regs,
            signal: SIGABRT,
            pid: 1,
            fpregs: None,
        };
        let mut out = Vec::new();
        write_core(&mut out, &state, &many, 3 * PAGE, &memory()).unwrap();
        assert!(out.len() as u64 <= 3 * PAGE + 2 * PAGE, "{}", out.len());
    }

    #[test]
    fn a_segment_outside_memory_is_an_error_not_a_panic() {
        let regs = CoreRegs::default();
        let state = CoreState {
            regs: &regs,
            signal: SIGABRT,
            pid: 1,
            fpregs: None,
        };
        let bad = [Segment {
            va: 0,
            offset: u64::MAX - 5,
            len: 100,
            writable: true,
            executable: false,
        }];
        assert!(write_core(Vec::new(), &state, &bad, u64::MAX, &memory()).is_err());
    }

    #[test]
    fn a_sparse_core_reads_the_same_and_leaves_zero_pages_as_holes() {
        let dir = std::env::temp_dir().join(format!("kiln-tender-sparse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let regs = CoreRegs::default();
        let state = CoreState {
            regs: &regs,
            signal: SIGABRT,
            pid: 1,
            fpregs: None,
        };
        // 64 pages: data in the first and one byte in the 40th.
        let mut bytes = vec![0u8; 64 * PAGE as usize];
        bytes[..100].fill(7);
        bytes[40 * PAGE as usize + 5] = 9;
        let mem = Bytes(bytes);
        let segs = [Segment {
            va: 0x10_0000,
            offset: 0,
            len: 64 * PAGE,
            writable: true,
            executable: false,
        }];
        let mut plain = Vec::new();
        write_core(&mut plain, &state, &segs, u64::MAX, &mem).unwrap();
        let path = CoreFile::prepare(&dir, "kiln-test")
            .unwrap()
            .write(&state, &segs, u64::MAX, &mem, true)
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), plain);
        // Headers, the first page and the 40th: a few pages of disk.
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(blocks <= 8 * PAGE, "{blocks} bytes on disk");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_core_is_named_only_in_its_directory_and_never_through_a_link() {
        let base = std::env::temp_dir().join(format!("kiln-tender-core-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("cores");
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let regs = CoreRegs::default();
        let state = CoreState {
            regs: &regs,
            signal: SIGABRT,
            pid: 1,
            fpregs: None,
        };
        let mem = memory();
        let segs = segments();
        // A missing directory, a file, a link to a directory.
        assert!(matches!(
            CoreFile::prepare(&base.join("missing"), "kiln-test"),
            Err(DumpError::Create { .. })
        ));
        std::fs::write(base.join("file"), b"").unwrap();
        assert!(matches!(
            CoreFile::prepare(&base.join("file"), "kiln-test"),
            Err(DumpError::Create { .. })
        ));
        std::os::unix::fs::symlink(&elsewhere, base.join("link")).unwrap();
        let err = CoreFile::prepare(&base.join("link"), "kiln-test").unwrap_err();
        assert!(matches!(err, DumpError::Link { .. }), "{err:?}");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        // Nothing appears before the core is written.
        let core = CoreFile::prepare(&dir, "kiln-test").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let path = core.write(&state, &segs, u64::MAX, &mem, false).unwrap();
        assert_eq!(path.parent(), Some(dir.as_path()));
        assert!(path.is_absolute());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("core.kiln-test.{}", std::process::id()));
        assert!(std::fs::metadata(&path).unwrap().len() > 3 * PAGE);
        // A link planted at the name is neither followed nor replaced.
        std::fs::remove_file(&path).unwrap();
        let target = elsewhere.join("victim");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let core = CoreFile::prepare(&dir, "kiln-test").unwrap();
        assert!(matches!(
            core.write(&state, &segs, u64::MAX, &mem, false),
            Err(DumpError::Write { .. })
        ));
        assert!(!target.exists());
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        let _ = std::fs::remove_dir_all(&base);
    }
}
