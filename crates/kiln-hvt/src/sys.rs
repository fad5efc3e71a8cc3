//! Every `unsafe` operation of the tender: the guest memory mapping, the KVM
//! memory slot, reading `kvm_run`, and the epoll waits; beside them the
//! epoll set, its fallback timerfd and the timer slack, through rustix's
//! safe calls (taps are `kiln-tap`'s, inherited descriptors
//! [`kiln_tender::sys`]'s).
//!
//! The waits stay raw system calls: the tender needs nanosecond timeouts
//! from `epoll_pwait2` and, on kernels without it, `epoll_wait` beside a
//! timerfd, each one call its seccomp filter names. rustix's
//! `epoll::wait` picks `epoll_pwait` (millisecond timeouts) or
//! `epoll_pwait2` by a crate feature that any crate of the build may turn
//! on.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuFd, VmFd};
use rustix::event::epoll;
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};

pub mod shared;

/// A huge page of x86-64, and the alignment of the guest's memory.
const HUGE_PAGE: usize = 2 << 20;

/// An anonymous private read-write mapping: the guest's physical memory.
/// It is unmapped when the last of the mapping and its shared views
/// ([`Mapping::shared`]) is dropped.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    region: std::sync::Arc<shared::Region>,
}

impl Mapping {
    /// Maps `len` bytes of zeroed memory (not reserved up front), starting
    /// at a huge page's boundary.
    pub fn new(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // Reserve a huge page more than asked, to start the mapping at a
        // huge page's boundary: the guest's 2 MiB pages then fall on the
        // host's.
        let reserve = len
            .checked_add(HUGE_PAGE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: an anonymous mapping at an address of the kernel's choice
        // touches no existing memory; the result is checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let head = raw.addr().next_multiple_of(HUGE_PAGE) - raw.addr();
        let tail = reserve - head - len;
        // SAFETY: `raw..raw + reserve` is the mapping just made, of which
        // `head` bytes before and `tail` bytes after the kept `len` are
        // given back; nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap(raw.cast::<u8>().add(head + len).cast(), tail);
            }
        }
        // SAFETY: `head < HUGE_PAGE <= reserve - len`: inside the mapping.
        let ptr = unsafe { raw.cast::<u8>().add(head) };
        let ptr = NonNull::new(ptr).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            ptr,
            len,
            region: std::sync::Arc::new(shared::Region::new(ptr, len)),
        })
    }

    /// Asks the host to back the mapping with transparent huge pages (as
    /// QEMU backs guest RAM), but for its first 4 MiB (the image, the boot
    /// data and the page tables, partly read-only) and its last 2 MiB (the
    /// stack), which a guest touches sparsely. Measured on hvt
    /// (ARCHITECTURE.md, "Guest memory"): 7-16% less tender CPU per 1 MiB
    /// response, 2 MiB more resident when idle. Advice only: a host
    /// without THP ignores it.
    pub fn advise_huge_pages(&self) {
        if self.len <= 4 * HUGE_PAGE {
            return;
        }
        // SAFETY: advice on a range inside the live mapping owned by
        // `self` (`2 * HUGE_PAGE + len - 3 * HUGE_PAGE < len`); it changes
        // how pages are backed, not their contents. Its one failure,
        // EINVAL on a kernel without THP, leaves the small pages.
        unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(2 * HUGE_PAGE).cast(),
                self.len - 3 * HUGE_PAGE,
                libc::MADV_HUGEPAGE,
            );
        }
    }

    /// A view of the mapping for a thread that runs beside the vCPU (the
    /// ring's I/O thread); it keeps the mapping alive.
    pub fn shared(&self) -> shared::SharedRegion {
        shared::SharedRegion::new(self.region.clone())
    }

    /// The whole mapping.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by
        // `self`; the vCPU only runs while no such borrow exists (the run loop
        // takes `&mut` of the machine that owns this mapping).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes `range` of the mapping, writable. Panics when `range` is
    /// not inside the mapping; the caller ([`crate::guest::GuestMemory`])
    /// keeps it clear of the pages [`Mapping::protect_read_only`] made
    /// read-only.
    pub fn range_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: `range` lies inside the live mapping of `len` bytes owned
        // by `self` (asserted above) and its pages are writable (the
        // caller's contract); `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(range.start), range.len()) }
    }

    /// Makes the pages `start..end` (page-aligned offsets inside the
    /// mapping) read-only for the host, and so for the guest through KVM:
    /// a guest write there ends `KVM_RUN` with `EFAULT`, whatever the
    /// guest's own page tables say (Solo5's `hvt_elf_load` protects an
    /// image's segments this way).
    pub fn protect_read_only(&mut self, start: usize, end: usize) -> io::Result<()> {
        if start > end || end > self.len || !start.is_multiple_of(4096) || !end.is_multiple_of(4096)
        {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: the range is page-aligned and inside the mapping owned by
        // `self` (checked above); no slice of it is borrowed writable
        // (`&mut self`), and `range_mut`'s callers keep out of it after.
        let ret = unsafe {
            libc::mprotect(
                self.ptr.as_ptr().add(start).cast(),
                end - start,
                libc::PROT_READ,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the mapping the guest's physical memory from address 0.
    ///
    /// The caller must keep the mapping alive as long as `vm` exists;
    /// `Machine` does so by owning both and dropping the VM first.
    pub fn register(&self, vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: self.len as u64,
            userspace_addr: self.ptr.as_ptr() as u64,
        };
        // SAFETY: the region is exactly this live mapping, which outlives
        // `vm` (see above); slot 0 is not otherwise used.
        unsafe { vm.set_user_memory_region(region) }
    }
}

/// The `suberror` of a `KVM_EXIT_INTERNAL_ERROR` exit.
pub fn internal_error_suberror(vcpu: &mut VcpuFd) -> u32 {
    let run = vcpu.get_kvm_run();
    // SAFETY: called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR,
    // when `internal` is the active member of the exit union; it is plain
    // integers, valid for any bit pattern.
    unsafe { run.__bindgen_anon_1.internal.suberror }
}

/// Asks the kernel to end timed waits of this thread as close to their
/// deadline as it can: the default timer slack lets an `epoll_pwait2` of
/// the POLL hypercall end up to 50 us late.
pub fn minimal_timer_slack() -> io::Result<()> {
    Ok(rustix::thread::set_current_timer_slack(
        std::num::NonZeroU64::new(1),
    )?)
}

/// How [`Epoll::wait`] honours a timeout to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutMode {
    /// `epoll_pwait2` with a `timespec` (Linux 5.11 and later): one system
    /// call per wait.
    Pwait2,
    /// A timerfd in the set, armed before each `epoll_wait` that has a
    /// timeout (kernels without `epoll_pwait2`): two system calls.
    Timerfd,
}

/// The event data of the fallback timer; device handles are small.
const TIMER_HANDLE: u64 = u64::MAX;
/// Most events taken from the kernel per wait.
const MAX_EVENTS: usize = 64;

/// An epoll set whose events carry a device handle.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
    /// The fallback timer, in [`TimeoutMode::Timerfd`].
    timer: Option<OwnedFd>,
    /// The device handles (below 64) added to the set.
    handles: std::cell::Cell<u64>,
}

fn timespec(nsecs: u64) -> libc::timespec {
    libc::timespec {
        // At most u64::MAX / 10^9 (about 1.8 * 10^10): fits the 64-bit
        // time_t of x86_64, glibc and musl alike. (Naming libc::time_t is
        // deprecated on musl, whose time_t changes width in libc 1.0.)
        tv_sec: (nsecs / 1_000_000_000)
            .try_into()
            .unwrap_or(i32::MAX.into()),
        // Below 10^9: fits any c_long.
        tv_nsec: (nsecs % 1_000_000_000) as libc::c_long,
    }
}

/// `nsecs` as rustix's timespec.
fn rustix_timespec(nsecs: u64) -> Timespec {
    Timespec {
        // At most u64::MAX / 10^9: fits an i64.
        tv_sec: (nsecs / 1_000_000_000) as i64,
        tv_nsec: (nsecs % 1_000_000_000) as i64,
    }
}

impl Epoll {
    /// A new, empty set, waiting with `epoll_pwait2` where the kernel has
    /// it and with a timerfd otherwise.
    pub fn new() -> io::Result<Self> {
        let set = Self::with_mode(TimeoutMode::Pwait2)?;
        match set.wait_pwait2(0) {
            // ENOSYS: before Linux 5.11; EPERM: a container's seccomp
            // profile that predates the call.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                Self::with_mode(TimeoutMode::Timerfd)
            }
            _ => Ok(set),
        }
    }

    /// A new, empty set using `mode` (without checking that the kernel has
    /// `epoll_pwait2`).
    pub fn with_mode(mode: TimeoutMode) -> io::Result<Self> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let mut set = Self {
            fd,
            timer: None,
            handles: std::cell::Cell::new(0),
        };
        if mode == TimeoutMode::Timerfd {
            let timer = rustix::time::timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            set.add(timer.as_fd(), TIMER_HANDLE)?;
            set.timer = Some(timer);
        }
        Ok(set)
    }

    /// How this set honours timeouts.
    pub fn mode(&self) -> TimeoutMode {
        if self.timer.is_some() {
            TimeoutMode::Timerfd
        } else {
            TimeoutMode::Pwait2
        }
    }

    /// Watches `fd` for input; its events carry `handle`.
    pub fn add(&self, fd: BorrowedFd<'_>, handle: u64) -> io::Result<()> {
        epoll::add(
            &self.fd,
            fd,
            epoll::EventData::new_u64(handle),
            epoll::EventFlags::IN,
        )?;
        if handle < 64 {
            self.handles.set(self.handles.get() | 1 << handle);
        }
        Ok(())
    }

    /// The device handles (below 64) in the set, as a bit mask.
    pub fn handles(&self) -> u64 {
        self.handles.get()
    }

    /// Waits up to `timeout_nsecs` nanoseconds (0: just look) and returns
    /// the set of ready handles as a bit mask (handles above 63 are
    /// ignored). EINTR is "nothing ready".
    pub fn wait(&self, timeout_nsecs: u64) -> io::Result<u64> {
        let result = match &self.timer {
            None => self.wait_pwait2(timeout_nsecs),
            Some(timer) => self.wait_timerfd(timer, timeout_nsecs),
        };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
            other => other,
        }
    }

    fn wait_pwait2(&self, timeout_nsecs: u64) -> io::Result<u64> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let timeout = timespec(timeout_nsecs);
        // SAFETY: epoll_pwait2(epfd, events, maxevents, timeout, sigmask,
        // sigsetsize): `events` has room for MAX_EVENTS entries and
        // `timeout` is a valid timespec, both outliving the call; a null
        // sigmask leaves the signal mask alone.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                &timeout as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ready_set(&events, usize::try_from(n).unwrap_or(0)))
    }

    fn wait_timerfd(&self, timer: &OwnedFd, timeout_nsecs: u64) -> io::Result<u64> {
        let timeout_ms = if timeout_nsecs == 0 {
            0
        } else {
            let spec = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: rustix_timespec(timeout_nsecs),
            };
            // Arming resets the expiration count, so an earlier expiry is
            // not reported.
            rustix::time::timerfd_settime(timer, TimerfdTimerFlags::empty(), &spec)?;
            -1
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        // SAFETY: `events` has room for MAX_EVENTS entries and outlives the
        // call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ready_set(&events, usize::try_from(n).unwrap_or(0)))
    }

    /// The set's own descriptor, borrowed.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The set's own descriptor (for the seccomp filter).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The fallback timer's descriptor, in [`TimeoutMode::Timerfd`] (for
    /// the seccomp filter).
    pub fn timer_fd(&self) -> Option<RawFd> {
        self.timer.as_ref().map(AsRawFd::as_raw_fd)
    }
}

/// The handles of the first `n` events as a bit mask; the timer and
/// handles above 63 are left out.
fn ready_set(events: &[libc::epoll_event], n: usize) -> u64 {
    let mut set = 0u64;
    for ev in events.iter().take(n) {
        let handle = ev.u64;
        if handle < 64 {
            set |= 1 << handle;
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    /// The `THPeligible` field of the mapping of this process that holds
    /// `addr`, from /proc/self/smaps.
    fn thp_eligible(addr: usize) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(v) = line.strip_prefix("THPeligible:") {
                return Some(v.trim() == "1");
            }
        }
        None
    }

    #[test]
    fn guest_memory_starts_at_a_huge_page_and_asks_for_huge_pages_inside() {
        let len = 16 << 20;
        let m = Mapping::new(len).unwrap();
        let base = m.as_slice().as_ptr().addr();
        assert_eq!(base % HUGE_PAGE, 0, "guest memory at {base:#x}");
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        // Where the kernel decides by advice ("[madvise]", as on the test
        // machines), nothing is eligible before it; with "[always]"
        // everything is, with "[never]" nothing: there the advice does not
        // show, and the alignment is what there is to check.
        if !mode.contains("[madvise]") {
            eprintln!(
                "transparent huge pages not in madvise mode ({}): advice not checked",
                mode.trim()
            );
            return;
        }
        assert_eq!(thp_eligible(base + 8 * HUGE_PAGE / 2), Some(false));
        m.advise_huge_pages();
        assert_eq!(thp_eligible(base), Some(false), "the image's huge page");
        assert_eq!(thp_eligible(base + 3 * HUGE_PAGE), Some(true), "the heap");
        assert_eq!(
            thp_eligible(base + len - HUGE_PAGE / 2),
            Some(false),
            "the stack's"
        );
        drop(m);
        // Too small for anything between the image and the stack.
        let small = Mapping::new(4 * HUGE_PAGE).unwrap();
        small.advise_huge_pages();
        let base = small.as_slice().as_ptr().addr();
        assert_eq!(thp_eligible(base + 5 * HUGE_PAGE / 2), Some(false));
    }

    fn sets() -> Vec<Epoll> {
        vec![
            Epoll::with_mode(TimeoutMode::Pwait2).unwrap(),
            Epoll::with_mode(TimeoutMode::Timerfd).unwrap(),
        ]
    }

    #[test]
    fn the_fallback_is_used_only_without_epoll_pwait2() {
        let probe = Epoll::with_mode(TimeoutMode::Pwait2).unwrap();
        let has_pwait2 = probe.wait_pwait2(0).is_ok();
        let expected = if has_pwait2 {
            TimeoutMode::Pwait2
        } else {
            TimeoutMode::Timerfd
        };
        assert_eq!(Epoll::new().unwrap().mode(), expected);
    }

    #[test]
    fn a_timeout_is_never_cut_short() {
        for set in sets() {
            for nsecs in [1, 1_500_000, 2_300_000] {
                let start = Instant::now();
                assert_eq!(set.wait(nsecs).unwrap(), 0, "{:?}", set.mode());
                assert!(
                    start.elapsed() >= Duration::from_nanos(nsecs),
                    "{:?} woke after {:?}, before {nsecs} ns",
                    set.mode(),
                    start.elapsed()
                );
            }
        }
    }

    #[test]
    fn ready_handles_are_reported_with_any_timeout() {
        for set in sets() {
            let (mut a, b) = UnixStream::pair().unwrap();
            set.add(b.as_fd(), 3).unwrap();
            assert_eq!(set.handles(), 1 << 3);
            assert_eq!(set.wait(0).unwrap(), 0, "{:?}", set.mode());
            a.write_all(b"x").unwrap();
            assert_eq!(set.wait(0).unwrap(), 1 << 3, "{:?}", set.mode());
            assert_eq!(set.wait(5_000_000_000).unwrap(), 1 << 3, "{:?}", set.mode());
            // A handle beyond the 64-bit set is ignored.
            let (mut c, d) = UnixStream::pair().unwrap();
            set.add(d.as_fd(), 64).unwrap();
            assert_eq!(set.handles(), 1 << 3);
            c.write_all(b"y").unwrap();
            assert_eq!(set.wait(0).unwrap(), 1 << 3, "{:?}", set.mode());
        }
    }

    #[test]
    fn an_expired_fallback_timer_does_not_end_the_next_wait_early() {
        let set = Epoll::with_mode(TimeoutMode::Timerfd).unwrap();
        assert_eq!(set.wait(1).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(2));
        // The timer expired again meanwhile? It was one-shot; re-arming
        // resets its count, so this wait lasts its whole timeout.
        let start = Instant::now();
        assert_eq!(set.wait(3_000_000).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_millis(3));
    }

    #[test]
    fn timespecs_split_nanoseconds() {
        let t = timespec(3_000_000_007);
        assert_eq!((t.tv_sec, t.tv_nsec), (3, 7));
        let t = timespec(u64::MAX);
        assert_eq!(u64::try_from(t.tv_sec), Ok(u64::MAX / 1_000_000_000));
    }
}

/// Debugging and core dumps: writing through the tender's write
/// protection, the core file's descriptors, and the gdb connection with
/// its interrupt signal.
pub mod debug {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::atomic::{AtomicPtr, Ordering};

    use rustix::io::Errno;
    use rustix::net::{RecvFlags, SendFlags};

    use super::Mapping;

    impl Mapping {
        /// Copies `bytes` to `offset`, inside one page the tender keeps
        /// read-only: makes it writable, writes, makes it read-only again.
        /// For the debugger's breakpoints in code.
        pub fn write_protected_page(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
            let page = offset - offset % 4096;
            let end = offset
                .checked_add(bytes.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            if end > page + 4096 || page + 4096 > self.len {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            let protect = |prot| {
                // SAFETY: one whole page inside the mapping owned by
                // `self` (checked above); `&mut self` means no slice of it
                // is borrowed.
                let ret = unsafe { libc::mprotect(self.ptr.as_ptr().add(page).cast(), 4096, prot) };
                if ret != 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            protect(libc::PROT_READ | libc::PROT_WRITE)?;
            // SAFETY: `offset..end` lies inside the page made writable
            // above, inside the mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.ptr.as_ptr().add(offset),
                    bytes.len(),
                );
            }
            protect(libc::PROT_READ)
        }
    }

    /// Where the interrupt signal's handler writes: the vCPU's
    /// `kvm_run.immediate_exit`.
    static IMMEDIATE_EXIT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

    extern "C" fn on_sigio(_: libc::c_int) {
        let p = IMMEDIATE_EXIT.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: `p` is the vCPU's `immediate_exit` byte, which lives
            // as long as the vCPU, and `arm_interrupt`'s caller keeps the
            // vCPU alive while the signal can come.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    }

    /// Makes data arriving on `socket` (gdb's Ctrl-C) end the calling
    /// thread's `KVM_RUN`: the socket raises SIGIO at this thread, whose
    /// handler sets `immediate_exit` (so a `KVM_RUN` not yet entered
    /// returns at once) and, without `SA_RESTART`, interrupts one in
    /// progress with EINTR.
    ///
    /// `immediate_exit` must stay valid for the rest of the process: it is
    /// the vCPU's, which lives until the tender exits.
    pub fn arm_interrupt(socket: BorrowedFd<'_>, immediate_exit: *mut u8) -> io::Result<()> {
        IMMEDIATE_EXIT.store(immediate_exit, Ordering::Release);
        // SAFETY: an all-zero sigaction is valid; the handler is a plain
        // function that only does an async-signal-safe store.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigio as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGIO, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        /// `struct f_owner_ex` and its constants (Linux's `fcntl.h`; not in
        /// the libc crate for every target).
        #[repr(C)]
        struct OwnerEx {
            type_: libc::c_int,
            pid: libc::pid_t,
        }
        const F_SETOWN_EX: libc::c_int = 15;
        const F_OWNER_TID: libc::c_int = 0;
        let owner = OwnerEx {
            type_: F_OWNER_TID,
            pid: rustix::thread::gettid().as_raw_nonzero().get(),
        };
        // SAFETY: `socket` is open (borrowed); `owner` outlives the call.
        // rustix has no F_SETOWN_EX.
        if unsafe { libc::fcntl(socket.as_raw_fd(), F_SETOWN_EX, &owner) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = rustix::fs::fcntl_getfl(socket)?;
        rustix::fs::fcntl_setfl(socket, flags | rustix::fs::OFlags::ASYNC)?;
        Ok(())
    }

    /// Stops the interrupt signal from touching `immediate_exit` (when
    /// gdb detaches); the caller then clears it.
    pub fn disarm_interrupt() {
        IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::Release);
    }

    fn recv(socket: BorrowedFd<'_>, flags: RecvFlags) -> io::Result<Option<u8>> {
        let mut byte = [0u8; 1];
        loop {
            match rustix::net::recv(socket, &mut byte[..], flags) {
                Ok((1, _)) => return Ok(Some(byte[0])),
                Ok(_) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads one byte from `socket`, waiting for it.
    pub fn read_byte(socket: BorrowedFd<'_>) -> io::Result<u8> {
        loop {
            if let Some(b) = recv(socket, RecvFlags::empty())? {
                return Ok(b);
            }
        }
    }

    /// The next byte of `socket` if one has arrived, left unread.
    pub fn peek_byte(socket: BorrowedFd<'_>) -> io::Result<Option<u8>> {
        recv(socket, RecvFlags::PEEK | RecvFlags::DONTWAIT)
    }

    /// Sends all of `bytes` on `socket`.
    pub fn send_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match rustix::net::send(socket, bytes, SendFlags::NOSIGNAL) {
                Ok(n) => bytes = bytes.get(n..).unwrap_or(&[]),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
