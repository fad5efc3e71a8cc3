//! Test support: a tiny ELF writer and x86 assembler for test guests, and a
//! bounded runner for the `kiln-hvt` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kiln_abi::{AbiNote, MftEntry, MftNote};
use zerocopy::IntoBytes;

pub const CODE_BASE: u64 = 0x10_0000;
pub const DATA_BASE: u64 = 0x10_1000;
const NOTE_OFF: u64 = 0x200;
const CODE_OFF: u64 = 0x1000;
const DATA_OFF: u64 = 0x2000;
/// What test guests put in an OUT field the tender must overwrite.
pub const UNSET: u64 = 0xeeee_eeee_eeee_eeee;
pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// One program header.
#[derive(Clone, Copy, Debug)]
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A test guest: code at CODE_BASE, data at DATA_BASE, the two notes.
#[derive(Clone, Debug)]
pub struct Guest {
    pub code: Vec<u8>,
    pub data: Vec<u8>,
    pub abi_note: Vec<u8>,
    pub mft_note: Vec<u8>,
    pub entry: u64,
    pub e_type: u16,
    pub machine: u16,
    pub extra_phdrs: Vec<Phdr>,
    pub with_notes: bool,
}

/// `words` as little-endian 64-bit values.
pub fn le_words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A page-aligned `PT_LOAD` header, for the extra segments of hostile images.
pub fn load_phdr(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Phdr {
    Phdr {
        p_type: PT_LOAD,
        flags,
        offset,
        vaddr,
        filesz,
        memsz,
        align: 0x1000,
    }
}

pub fn mft_bytes<const N: usize>(note: &MftNote<N>) -> Vec<u8> {
    let mut buf = vec![0u8; MftNote::<N>::SIZE];
    let n = note.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

impl Default for Guest {
    fn default() -> Self {
        Self::new()
    }
}

impl Guest {
    /// A guest with no devices.
    pub fn new() -> Self {
        Self::with_manifest(mft_bytes(&MftNote::<0>::new([])))
    }

    /// A guest with the given manifest note bytes.
    pub fn with_manifest(mft_note: Vec<u8>) -> Self {
        Self {
            code: Vec::new(),
            data: Vec::new(),
            abi_note: AbiNote::hvt().as_bytes().to_vec(),
            mft_note,
            entry: CODE_BASE,
            e_type: 2,
            machine: 62,
            extra_phdrs: Vec::new(),
            with_notes: true,
        }
    }

    /// A guest declaring `devices`.
    pub fn with_devices<const N: usize>(devices: [MftEntry; N]) -> Self {
        Self::with_manifest(mft_bytes(&MftNote::new(devices)))
    }

    /// Appends data (8-aligned) and returns its guest address.
    pub fn data(&mut self, bytes: &[u8]) -> u64 {
        while !self.data.len().is_multiple_of(8) {
            self.data.push(0);
        }
        let gpa = DATA_BASE + self.data.len() as u64;
        self.data.extend_from_slice(bytes);
        gpa
    }

    /// Appends `words` as little-endian 64-bit values to data (a hypercall
    /// argument structure) and returns its guest address.
    pub fn words(&mut self, words: &[u64]) -> u64 {
        self.data(&le_words(words))
    }

    /// `mov eax, imm32; mov dx, port; out dx, eax`.
    pub fn out(&mut self, port: u16, value: u32) -> &mut Self {
        self.code.push(0xb8);
        self.code.extend_from_slice(&value.to_le_bytes());
        self.code.extend_from_slice(&[0x66, 0xba]);
        self.code.extend_from_slice(&port.to_le_bytes());
        self.code.push(0xef);
        self
    }

    /// Code address of the next instruction (a jump target).
    pub fn here(&self) -> u64 {
        CODE_BASE + self.code.len() as u64
    }

    /// An instruction addressing `[addr]` absolutely: `opcode` (with its
    /// ModRM and SIB bytes) followed by the 32-bit address.
    pub fn at_addr(&mut self, opcode: &[u8], addr: u64) -> &mut Self {
        self.code.extend_from_slice(opcode);
        self.code
            .extend_from_slice(&u32::try_from(addr).unwrap().to_le_bytes());
        self
    }

    /// `mov qword [addr], imm32` (sign-extended).
    pub fn store_imm(&mut self, addr: u64, value: i32) -> &mut Self {
        self.at_addr(&[0x48, 0xc7, 0x04, 0x25], addr);
        self.code.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `mov rax, qword [addr]`.
    pub fn load_rax(&mut self, addr: u64) -> &mut Self {
        self.at_addr(&[0x48, 0x8b, 0x04, 0x25], addr)
    }

    /// `mov qword [addr], rax`.
    pub fn store_rax(&mut self, addr: u64) -> &mut Self {
        self.at_addr(&[0x48, 0x89, 0x04, 0x25], addr)
    }

    /// `cmp dword [addr], imm8`.
    pub fn cmp_dword(&mut self, addr: u64, value: i8) -> &mut Self {
        self.at_addr(&[0x83, 0x3c, 0x25], addr);
        self.code.push(value as u8);
        self
    }

    /// `dec qword [addr]` (sets ZF when it reaches zero).
    pub fn dec(&mut self, addr: u64) -> &mut Self {
        self.at_addr(&[0x48, 0xff, 0x0c, 0x25], addr)
    }

    /// `cpuid` for `leaf` (subleaf 0), then the four 32-bit results
    /// stored as eax, ebx, ecx, edx at `addr`.
    pub fn cpuid_to(&mut self, leaf: u32, addr: u64) -> &mut Self {
        self.code.push(0xb8);
        self.code.extend_from_slice(&leaf.to_le_bytes());
        self.code.extend_from_slice(&[0x31, 0xc9, 0x0f, 0xa2]);
        for (i, modrm) in [0x04u8, 0x1c, 0x0c, 0x14].into_iter().enumerate() {
            self.at_addr(&[0x89, modrm, 0x25], addr + 4 * i as u64);
        }
        self
    }

    /// `cmp rax, imm8`.
    pub fn cmp_rax(&mut self, value: i8) -> &mut Self {
        self.code
            .extend_from_slice(&[0x48, 0x83, 0xf8, value as u8]);
        self
    }

    /// A jump with a 32-bit displacement to be patched: `opcode` is
    /// `[0xe9]` (jmp), `[0x0f, 0x84]` (je) or `[0x0f, 0x85]` (jne). Returns
    /// the offset of the displacement for [`Guest::patch`].
    pub fn jump(&mut self, opcode: &[u8]) -> usize {
        self.code.extend_from_slice(opcode);
        let at = self.code.len();
        self.code.extend_from_slice(&[0; 4]);
        at
    }

    /// Points the jump whose displacement is at `at` to `target`.
    pub fn patch(&mut self, at: usize, target: u64) -> &mut Self {
        let next = CODE_BASE + at as u64 + 4;
        let rel = i32::try_from(target as i64 - next as i64).unwrap();
        self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        self
    }

    /// A hypercall with its argument structure at `arg`.
    pub fn hypercall(&mut self, nr: u16, arg: u64) -> &mut Self {
        self.out(0x500 + nr, u32::try_from(arg).unwrap())
    }

    /// `puts(gpa, len)` with the struct placed in data.
    pub fn puts_at(&mut self, data: u64, len: u64) -> &mut Self {
        let a = self.words(&[data, len]);
        self.hypercall(2, a)
    }

    /// `puts(text)`.
    pub fn puts(&mut self, text: &[u8]) -> &mut Self {
        let d = self.data(text);
        self.puts_at(d, text.len() as u64)
    }

    /// `halt(status, cookie)`.
    pub fn halt_cookie(&mut self, status: i32, cookie: u64) -> &mut Self {
        // The status is an i32 followed by 4 bytes of padding.
        let a = self.words(&[cookie, u64::from(status as u32)]);
        self.hypercall(8, a);
        // Never reached: spin.
        self.code.extend_from_slice(&[0xeb, 0xfe]);
        self
    }

    /// `halt(status)`.
    pub fn halt(&mut self, status: i32) -> &mut Self {
        self.halt_cookie(status, 0)
    }

    /// The program headers the guest gets.
    pub fn phdrs(&self) -> Vec<Phdr> {
        let mut p = Vec::new();
        if self.with_notes {
            p.push(Phdr {
                p_type: PT_NOTE,
                flags: PF_R,
                offset: NOTE_OFF,
                vaddr: 0,
                filesz: (self.abi_note.len() + self.mft_note.len()) as u64,
                memsz: 0,
                align: 4,
            });
        }
        p.push(Phdr {
            p_type: PT_LOAD,
            flags: PF_R | PF_X,
            offset: CODE_OFF,
            vaddr: CODE_BASE,
            filesz: self.code.len() as u64,
            memsz: self.code.len() as u64,
            align: 0x1000,
        });
        if !self.data.is_empty() {
            p.push(Phdr {
                p_type: PT_LOAD,
                flags: PF_R | PF_W,
                offset: DATA_OFF,
                vaddr: DATA_BASE,
                filesz: self.data.len() as u64,
                memsz: self.data.len() as u64 + 0x1000,
                align: 0x1000,
            });
        }
        p.extend_from_slice(&self.extra_phdrs);
        p
    }

    /// The ELF file.
    pub fn build(&self) -> Vec<u8> {
        assert!(self.code.len() <= 0x1000 && self.abi_note.len() + self.mft_note.len() <= 0x10000);
        let phdrs = self.phdrs();
        let data_end = DATA_OFF as usize + self.data.len();
        let notes_end = NOTE_OFF as usize + self.abi_note.len() + self.mft_note.len();
        // Notes may be large (hostile manifests): place code/data after them.
        let shift = if notes_end > CODE_OFF as usize {
            (notes_end - CODE_OFF as usize).div_ceil(0x1000) * 0x1000
        } else {
            0
        };
        let mut f = vec![0u8; data_end.max(CODE_OFF as usize + self.code.len()) + shift];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        f[18..20].copy_from_slice(&self.machine.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&self.entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            let o = 64 + i * 56;
            let offset = if p.offset >= CODE_OFF && p.p_type == PT_LOAD {
                p.offset + shift as u64
            } else {
                p.offset
            };
            f[o..o + 4].copy_from_slice(&p.p_type.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&p.flags.to_le_bytes());
            f[o + 8..o + 16].copy_from_slice(&offset.to_le_bytes());
            f[o + 16..o + 24].copy_from_slice(&p.vaddr.to_le_bytes());
            f[o + 24..o + 32].copy_from_slice(&p.vaddr.to_le_bytes());
            f[o + 32..o + 40].copy_from_slice(&p.filesz.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&p.memsz.to_le_bytes());
            f[o + 48..o + 56].copy_from_slice(&p.align.to_le_bytes());
        }
        assert!(
            64 + phdrs.len() * 56 <= NOTE_OFF as usize,
            "too many phdrs for the test layout"
        );
        let n = NOTE_OFF as usize;
        f[n..n + self.abi_note.len()].copy_from_slice(&self.abi_note);
        let m = n + self.abi_note.len();
        f[m..m + self.mft_note.len()].copy_from_slice(&self.mft_note);
        let c = CODE_OFF as usize + shift;
        f[c..c + self.code.len()].copy_from_slice(&self.code);
        let d = DATA_OFF as usize + shift;
        f[d..d + self.data.len()].copy_from_slice(&self.data);
        f
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-hvt-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KILN_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether KVM tests can run; skips loudly, or fails under CI=true.
pub fn kvm_available() -> bool {
    kiln_testsupport::skip::kvm_or_skip("a kiln-hvt KVM test")
}

/// What a tender run produced.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The `kiln-hvt` binary under test, as a command to add arguments to.
pub fn hvt_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln-hvt"))
}

/// Runs `kiln-hvt ARGS`, killed after 30 s.
pub fn run_hvt<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    run_cmd(hvt_cmd().args(args))
}

pub fn run_cmd(cmd: &mut Command) -> Run {
    finish(spawn(cmd))
}

/// Starts `cmd` with piped output.
pub fn spawn(cmd: &mut Command) -> std::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln-hvt")
}

/// Waits (at most 30 s, then kills) for `child` and collects its output.
pub fn finish(mut child: std::process::Child) -> Run {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln-hvt did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    }
}

/// Asserts that the tender refused (exit 1, no crash, no panic) with an
/// error naming each of `needles`.
pub fn assert_refused(run: &Run, needles: &[&str]) {
    assert_eq!(run.signal, None, "tender crashed: {run:?}");
    assert_eq!(run.code, Some(1), "expected exit 1: {run:?}");
    assert!(
        run.stderr.starts_with("kiln-hvt: error: "),
        "{}",
        run.stderr
    );
    for n in needles {
        assert!(
            run.stderr.contains(n),
            "stderr lacks {n:?}:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// What every test repeats to run a hand-made guest: the image written to
/// a test directory and `kiln-hvt FLAGS IMAGE`, to which guest arguments
/// and the tender's environment are added before it is run or spawned.
pub struct Launch {
    /// The image file.
    pub path: PathBuf,
    cmd: Command,
}

impl Guest {
    /// Writes the guest to `dir` as `name` and prepares
    /// `kiln-hvt FLAGS IMAGE`.
    pub fn launch(&self, dir: &TempDir, name: &str, flags: &[&str]) -> Launch {
        let path = dir.write(name, &self.build());
        let mut cmd = hvt_cmd();
        cmd.args(flags).arg(&path);
        Launch { path, cmd }
    }
}

impl Launch {
    /// Adds the guest's arguments, after the image.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable of the tender.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Starts the tender with piped output.
    pub fn spawn(mut self) -> std::process::Child {
        spawn(&mut self.cmd)
    }

    /// Runs the tender to its end (killed after 30 s).
    pub fn run(mut self) -> Run {
        run_cmd(&mut self.cmd)
    }
}

/// Writes the guest to a file in `dir` and runs it with `flags` before it.
pub fn run_guest(dir: &TempDir, guest: &Guest, flags: &[&str]) -> (Run, PathBuf) {
    let launch = guest.launch(dir, "guest.hvt", flags);
    let path = launch.path.clone();
    (launch.run(), path)
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A datagram socket pair whose guest end a `kiln-hvt` child inherits by
/// number: the host end (reads time out after 10 s), the guest end (drop it
/// once the child runs) and the flag attaching it as net device `service`.
pub fn inherited_socket() -> (
    std::os::unix::net::UnixDatagram,
    std::os::fd::OwnedFd,
    String,
) {
    use std::os::fd::AsRawFd;
    let (host, guest_end) = std::os::unix::net::UnixDatagram::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // SAFETY: F_SETFD on a descriptor this test owns only clears CLOEXEC.
    let ret = unsafe { libc::fcntl(guest_end.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(ret, 0);
    let flag = format!("--net:service=@{}", guest_end.as_raw_fd());
    (host, guest_end.into(), flag)
}
