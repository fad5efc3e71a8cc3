//! Hand-made guests that misbehave on purpose, each a few instructions in an
//! image built here: the tender must report how each ended, with the
//! guest's instruction pointer, and then end by the guest's signal as
//! solo5-spt does (a shell sees 159 for SIGSYS, 139 for SIGSEGV), whatever
//! state the guest left its registers in (a zero stack pointer included:
//! the report comes from a signal handler on a stack of the tender's).

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

use kiln_abi::{AbiNote, MftNote};
use kiln_testsupport::image::{ENTRY, Image, notes, temp_file};

/// An spt image whose one R+X segment holds `code` at [`ENTRY`], with an
/// empty manifest.
fn image(code: &[u8]) -> Vec<u8> {
    let mft: MftNote<0> = MftNote::new([]);
    image_with(code, &mft)
}

/// The same with the manifest `mft`.
fn image_with<const N: usize>(code: &[u8], mft: &MftNote<N>) -> Vec<u8> {
    Image::guest(&notes(AbiNote::spt(), mft), code).build()
}

/// A new image file `kiln-spt-hostile-NAME-*.spt` holding `image`,
/// removed when dropped, even if the test fails.
fn temp_image(name: &str, image: &[u8]) -> tempfile::TempPath {
    temp_file(&format!("kiln-spt-hostile-{name}-"), ".spt", image)
}

/// How the tender ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Code(i32),
    Signal(i32),
}

/// Runs `code` as a guest: (how the tender ended, stderr).
fn run(name: &str, code: &[u8]) -> (End, String) {
    run_in(name, code, 4)
}

/// Runs `code` as a guest in `mem_mb` MiB.
fn run_in(name: &str, code: &[u8], mem_mb: u64) -> (End, String) {
    run_with(name, code, mem_mb, &[])
}

/// Runs `code` as a guest in `mem_mb` MiB with the tender's `flags`.
fn run_with(name: &str, code: &[u8], mem_mb: u64, flags: &[&std::ffi::OsStr]) -> (End, String) {
    let path = temp_image(name, &image(code));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-spt"))
        .arg(format!("--mem={mem_mb}"))
        .args(flags)
        .arg(&path)
        .output()
        .expect("run kiln-spt");
    let end = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => End::Code(code),
        (None, Some(signal)) => End::Signal(signal),
        (None, None) => panic!("{:?}", out.status),
    };
    assert!(!out.status.core_dumped(), "the tender dumped core");
    (end, String::from_utf8_lossy(&out.stderr).into_owned())
}

// Instructions.
const XOR_ESP_ESP: [u8; 2] = [0x31, 0xe4];
const SYSCALL: [u8; 2] = [0x0f, 0x05];
const PUSH_RAX: [u8; 1] = [0x50];
const UD2: [u8; 2] = [0x0f, 0x0b];

fn mov_eax(value: u32) -> Vec<u8> {
    let mut v = vec![0xb8];
    v.extend_from_slice(&value.to_le_bytes());
    v
}

fn mov_edi(value: u32) -> Vec<u8> {
    let mut v = vec![0xbf];
    v.extend_from_slice(&value.to_le_bytes());
    v
}

#[test]
fn a_plain_exit_is_the_guests_status() {
    let code = [mov_edi(42), mov_eax(231), SYSCALL.to_vec()].concat();
    let (status, stderr) = run("exit", &code);
    assert_eq!(status, End::Code(42), "{stderr}");
    assert_eq!(stderr, "");
}

/// Regression: kiln-spt refused `--mem=2` (it wanted 1 MiB free above the
/// image) where solo5-spt runs a small guest. This one writes to its stack
/// at the top of the 2 MiB before it exits.
#[test]
fn a_small_guest_runs_in_2_mib() {
    let push_exit = [
        PUSH_RAX.to_vec(),
        mov_edi(7),
        mov_eax(231),
        SYSCALL.to_vec(),
    ]
    .concat();
    let (status, stderr) = run_in("mem2", &push_exit, 2);
    assert_eq!(status, End::Code(7), "{stderr}");
}

#[test]
fn a_forbidden_call_without_a_stack_is_reported() {
    // getpid with RSP = 0: the kernel cannot push a signal frame on the
    // guest's stack, the handler runs on the tender's.
    let code = [XOR_ESP_ESP.to_vec(), mov_eax(39), SYSCALL.to_vec()].concat();
    let (status, stderr) = run("nostack", &code);
    assert_eq!(status, End::Signal(libc::SIGSYS), "{stderr}");
    let rip = ENTRY + code.len() as u64;
    assert_eq!(
        stderr,
        format!(
            "kiln-spt: guest killed by seccomp: forbidden system call 39 (getpid) at rip {rip:#x}\n"
        )
    );
}

#[test]
fn the_guest_can_neither_write_to_stderr_nor_return_from_a_signal() {
    let code = [mov_edi(2), mov_eax(1), SYSCALL.to_vec()].concat();
    let (status, stderr) = run("stderr", &code);
    assert_eq!(status, End::Signal(libc::SIGSYS), "{stderr}");
    assert!(
        stderr.contains("forbidden system call 1 (write)"),
        "{stderr}"
    );
    let code = [mov_eax(15), SYSCALL.to_vec()].concat();
    let (status, stderr) = run("sigreturn", &code);
    assert_eq!(status, End::Signal(libc::SIGSYS), "{stderr}");
    assert!(
        stderr.contains("forbidden system call 15 (rt_sigreturn)"),
        "{stderr}"
    );
}

#[test]
fn faults_are_reported_with_their_address() {
    // A push with RSP = 0 writes below address 0: a fault on the stack the
    // kernel would have delivered the signal on.
    let code = [XOR_ESP_ESP.to_vec(), PUSH_RAX.to_vec()].concat();
    let (status, stderr) = run("push", &code);
    assert_eq!(status, End::Signal(libc::SIGSEGV), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "kiln-spt: guest crashed: SIGSEGV at 0xfffffffffffffff8 (rip {:#x})\n",
            ENTRY + 2
        )
    );
    let (status, stderr) = run("ud2", &UD2);
    assert_eq!(status, End::Signal(libc::SIGILL), "{stderr}");
    assert_eq!(
        stderr,
        format!("kiln-spt: guest crashed: SIGILL at {ENTRY:#x} (rip {ENTRY:#x})\n")
    );
}

/// A shell (what supervisors run the tender under) sees 128 + the signal:
/// 159 for a forbidden system call, 139 for a fault, as with solo5-spt.
#[test]
fn a_shell_sees_solo5s_statuses() {
    for (name, code, want) in [
        ("sh-seccomp", [mov_eax(39), SYSCALL.to_vec()].concat(), 159),
        (
            "sh-fault",
            [XOR_ESP_ESP.to_vec(), PUSH_RAX.to_vec()].concat(),
            139,
        ),
    ] {
        let path = temp_image(name, &image(&code));
        let out = Command::new("sh")
            .arg("-c")
            .arg("\"$0\" --mem=4 \"$1\" 2>/dev/null; echo $?")
            .arg(env!("CARGO_BIN_EXE_kiln-spt"))
            .arg(&path)
            .output()
            .expect("run sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want.to_string(),
            "{name}"
        );
    }
}

/// Regression: a manifest of 63 block devices (the ABI's maximum) made the
/// guest's filter longer than the kernel accepts, and kiln-spt refused to
/// start. Now the guest starts and exits.
#[test]
fn a_guest_with_63_disks_starts() {
    let dir = tempfile::Builder::new()
        .prefix("kiln-spt-63-")
        .tempdir()
        .expect("mkdir");
    let names: Vec<String> = (0..63).map(|i| format!("disk{i}")).collect();
    let mft = MftNote::new(std::array::from_fn::<_, 63, _>(|i| {
        kiln_abi::mft::MftEntry::block(&names[i])
    }));
    let code = [mov_edi(0), mov_eax(231), SYSCALL.to_vec()].concat();
    let path = dir.path().join("disks.spt");
    std::fs::write(&path, image_with(&code, &mft)).expect("write the image");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln-spt"));
    command.arg("--mem=4");
    for (i, name) in names.iter().enumerate() {
        let disk = dir.path().join(name);
        // Different capacities: no two devices share their bounds.
        std::fs::write(&disk, vec![0u8; 512 * (i + 1)]).expect("write a disk");
        command.arg(format!("--block:{name}={}", disk.display()));
    }
    let out = command.arg(&path).output().expect("run kiln-spt");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory removed when dropped, even if the test fails.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kiln-spt-{name}-"))
        .tempdir()
        .expect("create the directory")
}

/// The files in `dir`, sorted.
fn files(dir: &tempfile::TempDir) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .expect("list the directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    files
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

/// What a core says: the signal, the registers (`user_regs_struct`
/// order), and the PT_LOAD segments as (vaddr, offset, size, flags).
struct Core {
    signal: u32,
    regs: Vec<u64>,
    loads: Vec<(u64, u64, u64, u32)>,
    bytes: Vec<u8>,
}

impl Core {
    fn read(path: &std::path::Path) -> Self {
        let b = std::fs::read(path).expect("read the core");
        assert_eq!(&b[..4], b"\x7fELF");
        assert_eq!(u16_at(&b, 16), 4, "ET_CORE");
        let phoff = u64_at(&b, 32) as usize;
        let phnum = u16_at(&b, 56) as usize;
        let mut signal = 0;
        let mut regs = Vec::new();
        let mut loads = Vec::new();
        for i in 0..phnum {
            let ph = phoff + 56 * i;
            let (kind, flags) = (u32_at(&b, ph), u32_at(&b, ph + 4));
            let (offset, vaddr, size) =
                (u64_at(&b, ph + 8), u64_at(&b, ph + 16), u64_at(&b, ph + 32));
            if kind == 4 {
                let note = offset as usize;
                assert_eq!(u32_at(&b, note + 8), 1, "NT_PRSTATUS first");
                signal = u32_at(&b, note + 20);
                regs = (0..27)
                    .map(|r| u64_at(&b, note + 20 + 112 + 8 * r))
                    .collect();
            } else if kind == 1 {
                loads.push((vaddr, offset, size, flags));
            }
        }
        Self {
            signal,
            regs,
            loads,
            bytes: b,
        }
    }

    /// The byte at guest address `va`, if the core holds it.
    fn byte(&self, va: u64) -> Option<u8> {
        let &(v, offset, ..) = self
            .loads
            .iter()
            .find(|(v, _, size, _)| (*v..*v + *size).contains(&va))?;
        self.bytes.get((offset + va - v) as usize).copied()
    }
}

/// `user_regs_struct` indices.
const RAX: usize = 10;
const RIP: usize = 16;
const RSP: usize = 19;

fn movabs_rax(value: u64) -> Vec<u8> {
    let mut v = vec![0x48, 0xb8];
    v.extend_from_slice(&value.to_le_bytes());
    v
}

/// With `--dumpcore`, a fault leaves one core in DIR with the registers at
/// the fault (a hostile stack pointer included) and guest memory at the
/// guest's addresses, at most guest memory plus headers; the report says
/// where it went, and the tender still ends by the guest's signal.
#[test]
fn a_fault_writes_a_core_with_the_registers_and_memory() {
    let dir = temp_dir("core-fault");
    let code = [
        movabs_rax(0x1122_3344_5566_7788),
        XOR_ESP_ESP.to_vec(),
        PUSH_RAX.to_vec(),
    ]
    .concat();
    let (status, stderr) = run_with(
        "core-fault",
        &code,
        4,
        &["--dumpcore".as_ref(), dir.path().as_os_str()],
    );
    assert_eq!(status, End::Signal(libc::SIGSEGV), "{stderr}");
    let files = files(&dir);
    assert_eq!(files.len(), 1, "{files:?} {stderr}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("core.kiln-spt."), "{name}");
    assert!(
        stderr.ends_with(&format!(
            "kiln-spt: core file written to {}\n",
            files[0].display()
        )),
        "{stderr}"
    );
    assert!(std::fs::metadata(&files[0]).unwrap().len() <= (4 << 20) + 3 * 4096);
    let core = Core::read(&files[0]);
    assert_eq!(core.signal, libc::SIGSEGV as u32);
    assert_eq!(core.regs[RIP], ENTRY + 12);
    assert_eq!(core.regs[RAX], 0x1122_3344_5566_7788);
    assert_eq!(core.regs[RSP], 0);
    // The code, where the guest had it, read-only and executable.
    assert_eq!(core.byte(ENTRY), Some(0x48));
    assert_eq!(core.byte(ENTRY + 12), Some(PUSH_RAX[0]));
    let code_seg = core.loads.iter().find(|l| l.0 == ENTRY).unwrap();
    assert_eq!(code_seg.3, 5, "PF_R | PF_X");
    // Nothing below guest memory, nothing past it.
    assert!(
        core.loads
            .iter()
            .all(|l| l.0 >= 0x10000 && l.0 + l.2 <= 4 << 20)
    );
}

/// An abort (exit status 255, what solo5_abort makes) and a forbidden
/// system call leave a core too, with the registers at the call; another
/// exit status leaves none and is the guest's as without the flag.
#[test]
fn an_abort_and_a_forbidden_call_write_a_core_an_exit_does_not() {
    let call = |nr: u32, edi: u32| [mov_edi(edi), mov_eax(nr), SYSCALL.to_vec()].concat();
    for (name, code, want, signal) in [
        ("core-abort", call(231, 255), End::Code(255), Some(6)),
        // exit_group(0x1ff) is status 255 as well.
        ("core-abort-high", call(231, 0x1ff), End::Code(255), Some(6)),
        (
            "core-getpid",
            call(39, 0),
            End::Signal(libc::SIGSYS),
            Some(31),
        ),
        ("core-exit", call(231, 3), End::Code(3), None),
        ("core-exit0", call(231, 0), End::Code(0), None),
    ] {
        let dir = temp_dir(name);
        let (status, stderr) = run_with(
            name,
            &code,
            4,
            &["--dumpcore".as_ref(), dir.path().as_os_str()],
        );
        assert_eq!(status, want, "{name}: {stderr}");
        let files = files(&dir);
        match signal {
            None => {
                assert!(files.is_empty(), "{name}: {files:?}");
                assert_eq!(stderr, "", "{name}");
            }
            Some(signal) => {
                assert_eq!(files.len(), 1, "{name}: {stderr}");
                let core = Core::read(&files[0]);
                assert_eq!(core.signal, signal, "{name}");
                // After the `syscall` instruction, with its arguments.
                assert_eq!(core.regs[RIP], ENTRY + code.len() as u64, "{name}");
                assert!(stderr.contains("core file written to"), "{name}: {stderr}");
            }
        }
    }
}

/// Without the flag, no core anywhere, and the guest's memory is the
/// plain anonymous mapping (the exit is the guest's).
#[test]
fn no_core_without_the_flag() {
    let dir = temp_dir("core-none");
    let code = [XOR_ESP_ESP.to_vec(), PUSH_RAX.to_vec()].concat();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-spt"))
        .current_dir(dir.path())
        .arg("--mem=4")
        .arg({
            let path = dir.path().join("guest.spt");
            std::fs::write(&path, image(&code)).unwrap();
            path
        })
        .output()
        .expect("run kiln-spt");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    assert_eq!(files(&dir), vec![dir.path().join("guest.spt")]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("core"));
}

/// A DIR that is missing, a symbolic link, not a directory or where no
/// file can be created is refused before the guest runs (exit 1, the
/// reason and a hint); nothing is written anywhere.
#[test]
fn a_bad_dumpcore_directory_is_refused_before_the_guest_runs() {
    let base = temp_dir("core-bad");
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, base.path().join("link")).unwrap();
    std::fs::write(base.path().join("file"), b"").unwrap();
    // The guest would print and exit 0 if it ran.
    let code = [mov_edi(0), mov_eax(231), SYSCALL.to_vec()].concat();
    for (dir, want) in [
        (base.path().join("missing"), "cannot create a core file in"),
        (base.path().join("link"), "is a symbolic link"),
        (base.path().join("file"), "cannot create a core file in"),
        // procfs takes no new files, even from root.
        (
            std::path::PathBuf::from("/proc"),
            "cannot create a core file in",
        ),
    ] {
        let (status, stderr) = run_with(
            "core-bad",
            &code,
            4,
            &["--dumpcore".as_ref(), dir.as_os_str()],
        );
        assert_eq!(status, End::Code(1), "{}: {stderr}", dir.display());
        assert!(stderr.contains(want), "{}: {stderr}", dir.display());
        assert!(stderr.contains("hint:"), "{stderr}");
    }
    let (status, stderr) = run_with("core-bad", &code, 4, &["--dumpcore=".as_ref()]);
    assert_eq!(status, End::Code(1), "{stderr}");
    assert!(stderr.contains("--dumpcore needs a directory"), "{stderr}");
    assert!(real.read_dir().unwrap().next().is_none());
}

/// solo5-spt's `--x-exec-heap`: code the guest writes to its heap and to
/// its stack runs with the flag, after solo5-spt's warning on stderr, and
/// faults without it (both are never executable by default). Before the
/// flag was taken, kiln-spt refused it as an unknown flag (exit 1).
#[test]
fn x_exec_heap_makes_the_heap_and_stack_executable() {
    // `mov edi, 7; mov eax, 231 (exit_group); syscall`, padded with nops to
    // two words.
    let payload = [mov_edi(7), mov_eax(231), SYSCALL.to_vec(), vec![0x90; 4]].concat();
    let low = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let high = u64::from_le_bytes(payload[8..].try_into().unwrap());
    // The heap: the words stored at 2 MiB (above the image, below the
    // stack in 4 MiB), then `jmp rbx` there.
    const HEAP: u64 = 0x20_0000;
    let heap = [
        vec![0x48, 0xbb], // movabs rbx, HEAP
        HEAP.to_le_bytes().to_vec(),
        movabs_rax(low),
        vec![0x48, 0x89, 0x03], // mov [rbx], rax
        movabs_rax(high),
        vec![0x48, 0x89, 0x43, 0x08], // mov [rbx + 8], rax
        vec![0xff, 0xe3],             // jmp rbx
    ]
    .concat();
    // The stack: the words pushed, then `jmp rsp`.
    let stack = [
        movabs_rax(high),
        PUSH_RAX.to_vec(),
        movabs_rax(low),
        PUSH_RAX.to_vec(),
        vec![0xff, 0xe4], // jmp rsp
    ]
    .concat();
    let warning = "kiln-spt: WARNING: The use of --x-exec-heap is dangerous and not recommended as it makes the heap and stack executable.\n";
    for (name, code) in [("xheap", &heap), ("xstack", &stack)] {
        let (status, stderr) = run_with(name, code, 4, &["--x-exec-heap".as_ref()]);
        assert_eq!(status, End::Code(7), "{name}: {stderr}");
        assert_eq!(stderr, warning, "{name}");
        let (status, stderr) = run_in(name, code, 4);
        assert_eq!(status, End::Signal(libc::SIGSEGV), "{name}: {stderr}");
        assert!(
            stderr.starts_with("kiln-spt: guest crashed: SIGSEGV"),
            "{name}: {stderr}"
        );
    }
    // The boot data stays read-only (solo5-spt leaves it writable).
    let boot_write = [
        vec![0x48, 0xbb],
        kiln_abi::spt::SPT_BOOT_INFO_BASE.to_le_bytes().to_vec(),
        vec![0x48, 0x89, 0x03], // mov [rbx], rax
    ]
    .concat();
    let (status, stderr) = run_with("xboot", &boot_write, 4, &["--x-exec-heap".as_ref()]);
    assert_eq!(status, End::Signal(libc::SIGSEGV), "{stderr}");
}
