//! Every `unsafe` operation of the tender: the fixed guest mapping and its
//! protections (and `--dumpcore`'s memory file behind it), `fork`, the
//! guest process's fatal-signal handler and the page it reports through,
//! and the jump into the guest. Beside them, the epoll set, the timer, the
//! error pipe, CPU pinning and the parent-death signal through rustix's
//! safe calls (taps are `kiln-tap`'s, inherited descriptors
//! [`kiln_tender::sys`]'s).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use kiln_tender::sys::check;

use crate::elf::Protection;

/// The guest's memory: an anonymous private mapping at the fixed address
/// `base` (or, for `--dumpcore`, a shared mapping of a memory file the
/// tender keeps, [`memory_file`]), never replacing an existing mapping. It
/// is never unmapped: the process that maps it becomes the guest.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of zeroed read-write memory at `base`: anonymous
    /// and private, or the first `len` bytes of the memory file `file`
    /// (at least `len` bytes long), shared with the tender.
    pub fn fixed(base: u64, len: usize, file: Option<RawFd>) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let (sharing, fd) = match file {
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
            Some(fd) => (libc::MAP_SHARED, fd),
        };
        // SAFETY: MAP_FIXED_NOREPLACE fails instead of replacing anything
        // already mapped there, so no memory of the process is touched; the
        // result is checked below.
        let ptr = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                sharing | libc::MAP_FIXED_NOREPLACE | libc::MAP_NORESERVE,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if ptr as u64 != base {
            // Kernels before 4.17 treat the flag as a hint.
            // SAFETY: unmaps exactly the mapping just made.
            unsafe { libc::munmap(ptr, len) };
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// The whole mapping, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes, read-write until
        // `protect` is called, which takes `self` by value.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Backs `[offset, offset + len)` of the mapping with zeroed pages at
    /// once (`MADV_POPULATE_WRITE`), one system call instead of a page fault
    /// per page the tender is about to write. Advice only: where the kernel
    /// lacks it (before 5.14), the pages are faulted in as they are written.
    pub fn populate(&mut self, offset: usize, len: usize) {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return;
        }
        // SAFETY: the range lies inside this mapping (checked above); the
        // advice only allocates its pages, their contents stay zero.
        unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(offset).cast(),
                len,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }

    /// Applies `prot` to `[offset, offset + len)` of the mapping; both must
    /// be page-aligned and inside it (checked by the caller). Consumes
    /// nothing, but no slice may be held across it.
    pub fn protect(
        &mut self,
        offset: usize,
        len: usize,
        prot: Option<Protection>,
    ) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let prot = match prot {
            None => libc::PROT_NONE,
            Some(Protection::Read) => libc::PROT_READ,
            Some(Protection::ReadWrite) => libc::PROT_READ | libc::PROT_WRITE,
            Some(Protection::ReadExec) => libc::PROT_READ | libc::PROT_EXEC,
        };
        // SAFETY: the range lies inside this mapping (checked above), and
        // `&mut self` means no slice of it is borrowed.
        check(unsafe { libc::mprotect(self.ptr.as_ptr().add(offset).cast(), len, prot) })?;
        Ok(())
    }
}

impl Mapping {
    /// Makes `[offset, offset + len)` of the mapping readable, writable and
    /// executable (`--x-exec-heap`); both page-aligned and inside it
    /// (checked by the caller).
    pub fn protect_rwx(&mut self, offset: usize, len: usize) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: the range lies inside this mapping (checked above), and
        // `&mut self` means no slice of it is borrowed.
        check(unsafe {
            libc::mprotect(
                self.ptr.as_ptr().add(offset).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            )
        })?;
        Ok(())
    }
}

/// Whether the process runs with the `READ_IMPLIES_EXEC` personality,
/// under which every readable mapping would also be executable.
pub fn read_implies_exec() -> bool {
    // SAFETY: 0xffffffff only queries the personality.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    persona >= 0 && persona & libc::READ_IMPLIES_EXEC != 0
}

/// `MFD_EXEC` (Linux 6.3): the memory file may be mapped executable even
/// where `vm.memfd_noexec` makes files sealed non-executable by default.
const MFD_EXEC: libc::c_uint = 0x10;

/// A memory file of `len` bytes (zeroed, backed as it is written), for
/// `--dumpcore`: the guest's memory maps it, and the tender, which keeps
/// the descriptor, reads the guest's memory from it after the guest
/// process has died.
pub fn memory_file(len: u64) -> io::Result<OwnedFd> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let name = c"kiln-spt-guest";
    // SAFETY: `name` is NUL-terminated; the result is checked.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Before Linux 6.3, which has no MFD_EXEC (and maps any memory
        // file executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    }
    let fd = check(fd)?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a plain call on the descriptor just created.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// In the guest process: closes `fd`, which it must no longer need.
pub fn close(fd: RawFd) {
    // SAFETY: the caller's descriptor; nothing uses it after this.
    unsafe { libc::close(fd) };
}

/// A new epoll set (inherited by the guest process, so not close-on-exec,
/// though nothing is executed).
pub fn epoll_create() -> io::Result<OwnedFd> {
    Ok(rustix::event::epoll::create(
        rustix::event::epoll::CreateFlags::empty(),
    )?)
}

/// Watches `fd` for input in `epoll`; its events carry `data`.
pub fn epoll_add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>, data: u64) -> io::Result<()> {
    use rustix::event::epoll::{self, EventData, EventFlags};
    epoll::add(epoll, fd, EventData::new_u64(data), EventFlags::IN)?;
    Ok(())
}

/// A non-blocking timerfd on the monotonic clock.
pub fn timerfd_create() -> io::Result<OwnedFd> {
    Ok(rustix::time::timerfd_create(
        rustix::time::TimerfdClockId::Monotonic,
        rustix::time::TimerfdFlags::NONBLOCK,
    )?)
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The CPUs a process may run on, as `sched_getaffinity` gives them.
#[derive(Clone, Copy)]
pub struct CpuSet(rustix::thread::CpuSet);

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuSet({} CPUs)", self.0.count())
    }
}

/// Binds the calling process to the CPU it runs on and returns the CPUs it
/// could run on before; `None` (and nothing changed) where the kernel
/// refuses either step. Forking right after, the child starts on this CPU,
/// which the parent leaves as soon as it waits: on a busy host the child
/// would otherwise be queued behind another program on another CPU.
pub fn pin_to_this_cpu() -> Option<CpuSet> {
    use rustix::thread::{sched_getaffinity, sched_getcpu, sched_setaffinity};
    let before = sched_getaffinity(None).ok()?;
    let cpu = sched_getcpu();
    // The CPU this runs on is in the set just read, so below CPU_SETSIZE.
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return None;
    }
    let mut only = rustix::thread::CpuSet::new();
    only.set(cpu);
    sched_setaffinity(None, &only).ok()?;
    Some(CpuSet(before))
}

/// Lets the calling process run on the CPUs of `set` again.
pub fn unpin(set: &CpuSet) {
    let _ = rustix::thread::sched_setaffinity(None, &set.0);
}

/// Which side of a `fork` this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// The child.
    Child,
    /// The parent, with the child's pid.
    Parent(libc::pid_t),
}

/// Forks the process. The caller must be single-threaded (the tender is).
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the tender has one thread, so the child's copy of every lock
    // and allocator state is consistent.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// `SYS_SECCOMP`: the `si_code` of a SIGSYS sent by a seccomp filter.
pub const SYS_SECCOMP: i32 = 1;

/// What the guest process's fatal-signal handler saw: written by the
/// handler into the [`ReportPage`], read by the tender after the guest died.
/// Hostile bytes once the guest has run: every value may be anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The signal that was delivered.
    pub signal: i32,
    /// Its `si_code`.
    pub code: i32,
    /// `si_addr` (faults) or `si_call_addr` (SIGSYS).
    pub addr: u64,
    /// `si_syscall` (SIGSYS).
    pub nr: i32,
    /// The instruction pointer when the signal was raised.
    pub rip: u64,
    /// The general-purpose registers when the signal was raised, in the
    /// order of the signal context's `gregs` (`REG_R8` to `REG_CR2`).
    pub gregs: [u64; NGREG],
    /// The FS base, when the CPU let the handler read it (`rdfsbase`).
    pub fs_base: Option<u64>,
    /// The x87/SSE state (`fxsave` layout) from the signal context.
    pub fpregs: Option<[u8; 512]>,
}

impl Record {
    /// The system call's first argument (SIGSYS), from the registers.
    pub fn arg0(&self) -> u64 {
        self.gregs[libc::REG_RDI as usize]
    }
}

/// The number of registers in a signal context's `gregs`.
pub const NGREG: usize = 23;

/// Marks a written record ("kilnsig\0").
const RECORD_MAGIC: u64 = u64::from_le_bytes(*b"kilnsig\0");
/// The record's words: magic, signal, code, addr, nr, rip, the FS base,
/// which of the optional parts are there ([`HAS_FS_BASE`],
/// [`HAS_FPREGS`]), the registers, then the x87/SSE state.
const GREGS_AT: usize = 8;
const FS_BASE_AT: usize = 6;
const HAS_AT: usize = 7;
const FPREGS_AT: usize = GREGS_AT + NGREG + 1;
const FPREGS_WORDS: usize = 512 / 8;
const RECORD_WORDS: usize = FPREGS_AT + FPREGS_WORDS;
const HAS_FS_BASE: u64 = 1;
const HAS_FPREGS: u64 = 2;
/// Size of the shared page.
const REPORT_PAGE: usize = 4096;
/// The word of the page a guest writes to acknowledge the stop request.
const STOP_ACK_WORD: usize = 256;
const _: () = assert!((STOP_ACK_WORD + 1) * 8 <= REPORT_PAGE && STOP_ACK_WORD > RECORD_WORDS);

/// The page the guest process's fatal-signal handler writes its
/// [`Record`] to: anonymous and shared, mapped before the fork, so that the
/// tender reads what the guest's handler wrote without tracing it. Never
/// unmapped: the guest process keeps it for as long as it lives.
#[derive(Debug)]
pub struct ReportPage {
    words: NonNull<u64>,
}

/// The page the handler writes to (set in the guest process only).
static REPORT: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());

impl ReportPage {
    /// Maps the shared page, zeroed.
    pub fn new() -> io::Result<Self> {
        // SAFETY: a new anonymous mapping chosen by the kernel; the result
        // is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REPORT_PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let words = NonNull::new(ptr.cast::<u64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { words })
    }

    /// The word of the page where a guest acknowledges kiln's stop request
    /// (`kiln_abi::spt_ext`): far from the record, 8-aligned, zero until
    /// the guest writes it. Mapped for as long as the process lives.
    pub fn stop_ack(&self) -> *mut u64 {
        // SAFETY: word STOP_ACK_WORD lies inside the REPORT_PAGE bytes
        // mapped by `new`.
        unsafe { self.words.as_ptr().add(STOP_ACK_WORD) }
    }

    /// Makes the stop handler of this process ([`kiln_tender::stop`])
    /// take [`ReportPage::stop_ack`] holding `value` as the guest's
    /// acknowledgement.
    pub fn watch_stop_ack(&self, value: u64) {
        // SAFETY: the page is never unmapped (no Drop: the guest process
        // keeps it, and the tender until it exits) and the word is aligned.
        unsafe { kiln_tender::stop::StopSignals::watch_ack(self.stop_ack(), value) };
    }

    /// The record the guest's handler wrote, if it wrote one.
    pub fn read(&self) -> Option<Record> {
        let mut w = [0u64; RECORD_WORDS];
        for (i, word) in w.iter_mut().enumerate() {
            // SAFETY: the page is mapped for the life of `self` and holds
            // more than RECORD_WORDS aligned words; volatile, because
            // another process wrote it.
            *word = unsafe { self.words.as_ptr().add(i).read_volatile() };
        }
        Record::from_words(&w)
    }
}

impl Record {
    /// The record in the words of a report page, if it holds one.
    fn from_words(w: &[u64; RECORD_WORDS]) -> Option<Self> {
        if w[0] != RECORD_MAGIC {
            return None;
        }
        let mut gregs = [0u64; NGREG];
        gregs.copy_from_slice(&w[GREGS_AT..GREGS_AT + NGREG]);
        let has = w[HAS_AT];
        let fpregs = (has & HAS_FPREGS != 0).then(|| {
            let mut fp = [0u8; 512];
            for (bytes, word) in fp.chunks_exact_mut(8).zip(&w[FPREGS_AT..]) {
                bytes.copy_from_slice(&word.to_le_bytes());
            }
            fp
        });
        Some(Self {
            signal: w[1] as i32,
            code: w[2] as i32,
            addr: w[3],
            nr: w[4] as i32,
            rip: w[5],
            gregs,
            fs_base: (has & HAS_FS_BASE != 0).then_some(w[FS_BASE_AT]),
            fpregs,
        })
    }
}

/// A raw one-argument system call, without libc (no `errno`, which lives
/// behind the guest's FS base once it runs).
///
/// # Safety
///
/// The system call must not touch memory through `arg`.
unsafe fn raw_syscall1(nr: i64, arg: i64) -> i64 {
    let ret: i64;
    // SAFETY: `syscall` clobbers only rax, rcx and r11, declared here; the
    // caller vouches for the call's own effects.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// Where the alternate signal stack starts (the kernel's signal frame,
/// and so the x87/SSE state a context points to, lies in it).
static ALT_BASE: AtomicUsize = AtomicUsize::new(0);
/// Whether `rdfsbase` works here (the kernel enabled FSGSBASE).
static FSGSBASE: AtomicBool = AtomicBool::new(false);

/// Offset of the x87/SSE state's pointer in the signal context's
/// `mcontext` (after the 23 `gregs`; the libc crate names it only for
/// glibc).
const FPSTATE_PTR_OFFSET: usize = NGREG * 8;

/// The guest process's handler of SIGSYS (the filter's trap) and of the
/// fault signals: records what the kernel says (the registers and the
/// x87/SSE state of the signal context included) into the report page,
/// then ends the process. It never returns (the filter forbids
/// `rt_sigreturn`) and uses no libc: it runs on the guest's FS base, on
/// the alternate stack, with every signal blocked.
extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let page = REPORT.load(Ordering::Relaxed);
    if !page.is_null() && !info.is_null() && !context.is_null() {
        // SAFETY: the kernel passes a valid siginfo and ucontext to an
        // SA_SIGINFO handler. `si_addr` (faults) and `si_call_addr` (SIGSYS)
        // are the union's first member; SIGSYS's `si_syscall` follows at
        // offset 24 (x86_64), inside the 128-byte siginfo. The context's
        // `mcontext` holds the 23 `gregs` and then the pointer to the
        // x87/SSE state, which the kernel puts in the signal frame on the
        // alternate stack: it is read only when it lies there. `page` is
        // the shared page mapped by `ReportPage::new` with room for the
        // record; should the guest have overwritten REPORT (or ALT_BASE),
        // the accesses fault, which (every signal blocked) kills the
        // process. The guest has one thread: nothing changes the context
        // while it is read.
        unsafe {
            let code = (*info).si_code;
            let addr = (*info).si_addr() as u64;
            let nr = info.cast::<u8>().add(24).cast::<i32>().read();
            let uc = context.cast::<libc::ucontext_t>();
            let gregs = &(*uc).uc_mcontext.gregs;
            let rip = gregs[libc::REG_RIP as usize] as u64;
            let words = [0, signal as u64, code as u64, addr, nr as u32 as u64, rip];
            for (i, w) in words.iter().enumerate().skip(1) {
                page.add(i).write_volatile(*w);
            }
            for (i, g) in gregs.iter().enumerate() {
                page.add(GREGS_AT + i).write_volatile(*g as u64);
            }
            let mut has = 0;
            if FSGSBASE.load(Ordering::Relaxed) {
                let base: u64;
                core::arch::asm!("rdfsbase {}", out(reg) base, options(nomem, nostack));
                page.add(FS_BASE_AT).write_volatile(base);
                has |= HAS_FS_BASE;
            }
            let fp = (&raw const (*uc).uc_mcontext)
                .cast::<u8>()
                .add(FPSTATE_PTR_OFFSET)
                .cast::<usize>()
                .read();
            let alt = ALT_BASE.load(Ordering::Relaxed);
            if alt != 0
                && fp >= alt
                && fp
                    .checked_add(512)
                    .is_some_and(|end| end <= alt + ALT_STACK)
                && fp.is_multiple_of(8)
            {
                let fp = fp as *const u64;
                for i in 0..FPREGS_WORDS {
                    page.add(FPREGS_AT + i)
                        .write_volatile(fp.add(i).read_volatile());
                }
                has |= HAS_FPREGS;
            }
            page.add(HAS_AT).write_volatile(has);
            page.write_volatile(RECORD_MAGIC);
        }
    }
    // Under the filter, getpid is refused; with SIGSYS blocked in this
    // handler the kernel then kills the process with SIGSYS. Before the
    // filter (a fault in the tender's last steps) it returns, and the
    // process exits with the killed status.
    // SAFETY: getpid takes no pointer; exit_group ends the process.
    unsafe {
        raw_syscall1(libc::SYS_getpid, 0);
        raw_syscall1(libc::SYS_exit_group, 255);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// `AT_HWCAP2` and its `HWCAP2_FSGSBASE` bit (Linux's `auxvec.h`,
/// `hwcap2.h`): the kernel lets user code use `rdfsbase`.
const AT_HWCAP2: libc::c_ulong = 26;
const HWCAP2_FSGSBASE: libc::c_ulong = 1 << 1;

/// Whether `rdfsbase` may be used in this process.
fn fsgsbase() -> bool {
    // SAFETY: getauxval only reads the process's auxiliary vector.
    unsafe { libc::getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE != 0 }
}

/// Size of the alternate signal stack the handler runs on.
const ALT_STACK: usize = 64 << 10;

/// In the guest process, before the filter: the handler for SIGSYS and
/// the fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE) writes to `page`,
/// on an alternate stack of its own (the guest's stack may be the fault);
/// SIGPIPE gets its default action back (std ignores it).
pub fn install_fatal_handlers(page: &ReportPage) -> io::Result<()> {
    REPORT.store(page.words.as_ptr(), Ordering::Relaxed);
    // SAFETY: a new anonymous mapping chosen by the kernel; checked below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    ALT_BASE.store(stack as usize, Ordering::Relaxed);
    FSGSBASE.store(fsgsbase(), Ordering::Relaxed);
    let alt = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `alt` describes the mapping just made, never unmapped.
    check(unsafe { libc::sigaltstack(&alt, std::ptr::null_mut()) })?;
    // SAFETY: a zeroed sigaction is a valid value (plain integers and a
    // null handler), filled in below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_fatal_signal as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `sa_mask` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    for signal in [
        libc::SIGSYS,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
    ] {
        // SAFETY: `action` names a handler that never returns and touches
        // only the shared page and its own stack.
        check(unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) })?;
    }
    // SAFETY: SIG_DFL involves no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    Ok(())
}

/// In the guest process: dies with SIGKILL when the tender (`parent`)
/// dies, so that no guest outlives its tender; exits at once if it already
/// has.
pub fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    if rustix::process::Pid::as_raw(rustix::process::getppid()) != parent {
        exit_now(1);
    }
    Ok(())
}

/// Closes every descriptor from 3 up except those in `keep`, with
/// `close_range(2)` over the gaps (one call each), falling back to single
/// closes below 1024 where the kernel lacks it.
pub fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for last in keep.iter().copied().chain([u32::MAX]) {
        if last > first {
            let end = last.saturating_sub(if last == u32::MAX { 0 } else { 1 });
            // SAFETY: closes descriptors the child holds no owner for any
            // longer: it never returns to code that uses them.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, end, 0) };
            if ret != 0 {
                for fd in first..end.min(1023) + 1 {
                    // SAFETY: as above.
                    unsafe { libc::close(fd as RawFd) };
                }
            }
        }
        first = first.max(last.saturating_add(1));
    }
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed, as
/// std's runtime does (the tender has its own entry): a file the tender
/// opens later must never become the guest's console.
pub fn open_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is an array of three pollfd; a zero timeout only
    // reports which are closed (POLLNVAL).
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // A new descriptor takes the lowest free number, the closed
            // one; it is never closed (it stays open for the life of the
            // process).
            let fd = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR,
                rustix::fs::Mode::empty(),
            )
            .map_or(-1, std::os::fd::IntoRawFd::into_raw_fd);
            if fd != p.fd {
                // Nothing may take the place of a standard descriptor.
                exit_now(1);
            }
        }
    }
}

/// Ignores SIGPIPE, as std's runtime does: a write to a closed pipe fails
/// with EPIPE instead of killing the tender.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN involves no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Ends the process at once with `code`, without the C library's exit
/// handlers (the caller has flushed what it wrote).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(code) }
}

/// Ends the tender by `signal`, as the guest it ran was ended: no core
/// dump of the tender (the guest's state is gone; the report said what
/// happened), the signal's default action restored and unblocked, then
/// sent to this process. Exits with `128 + signal` should the signal not
/// end it (a signal whose default is to be ignored).
pub fn die_by_signal(signal: i32) -> ! {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on this process with valid arguments
    // (`none` and `set` are valid for reads for the duration of the
    // calls); `SIG_DFL` involves no handler code.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
    }
    exit_now(128 + (signal & 0x7f))
}

/// Enters the guest: the FS base cleared (with `arch_prctl(ARCH_SET_FS,
/// 0)`, which the filter allows), RSP = `stack`, RDI = `arg`, every other
/// general register zeroed (nothing of the tender's address space leaks
/// through them), then jumps to `entry`.
///
/// # Safety
///
/// `entry` must be mapped executable and `stack` writable; the process is
/// the guest's from here on.
pub unsafe fn launch(entry: u64, stack: u64, arg: u64) -> ! {
    // SAFETY: the caller guarantees the guest's code and stack are mapped;
    // control never returns.
    unsafe {
        core::arch::asm!(
            "mov r12, rdi",
            "mov r13, rsi",
            "mov r14, rdx",
            "mov eax, 158",
            "mov edi, 0x1002",
            "xor esi, esi",
            "syscall",
            "mov rdi, r12",
            "mov rsp, r14",
            "mov rax, r13",
            "xor ebx, ebx",
            "xor ecx, ecx",
            "xor edx, edx",
            "xor esi, esi",
            "xor ebp, ebp",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "jmp rax",
            in("rdi") arg,
            in("rsi") entry,
            in("rdx") stack,
            options(noreturn)
        )
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

/// In the guest process, before its filter: waits until a debugger
/// traces it (`TracerPid` in `/proc/self/status` is not 0), looking every
/// 10 ms. A process that stopped itself instead (SIGSTOP) would make gdb
/// report that stop again after its attach, a first `continue` that does
/// nothing; this one runs on at gdb's first `continue`.
pub fn wait_for_tracer() -> io::Result<()> {
    loop {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let tracer = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .map(str::trim)
            .ok_or_else(|| io::Error::other("/proc/self/status has no TracerPid"))?;
        if tracer != "0" {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits for the child `pid` to end, retrying on EINTR.
pub fn wait(pid: libc::pid_t) -> io::Result<WaitStatus> {
    use rustix::process::{Pid, WaitOptions, waitpid};
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))?;
    loop {
        let status = match waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => status,
            // Only with WNOHANG.
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(code) = status.exit_status() {
            return Ok(WaitStatus::Exited(code));
        }
        if let Some(signal) = status.terminating_signal() {
            return Ok(WaitStatus::Signaled(signal));
        }
    }
}
