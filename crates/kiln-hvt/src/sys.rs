//! Every `unsafe` operation of the tender: the guest memory mapping, the KVM
//! memory slot, reading `kvm_run`, the tap and epoll system calls, adopting
//! inherited descriptors.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuFd, VmFd};

/// An anonymous private read-write mapping: the guest's physical memory.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of zeroed memory (not reserved up front).
    pub fn new(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: an anonymous mapping at an address of the kernel's choice
        // touches no existing memory; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// The whole mapping.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by
        // `self`; the vCPU only runs while no such borrow exists (the run loop
        // takes `&mut` of the machine that owns this mapping).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole mapping, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
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

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`, which no
        // borrow outlives (they are tied to `&self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
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

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens the existing tap interface `name` (non-blocking, no packet info);
/// `ENODEV` if there is no interface of that name.
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // TUNSETIFF creates a missing interface; only attach existing ones.
    let cname =
        std::ffi::CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let fd = OwnedFd::from(file);
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF reads a `struct ifreq`, of which `IfReq` has the
    // layout and size; `req` lives across the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    set_nonblocking(fd.as_raw_fd())?;
    Ok(fd)
}

/// Takes ownership of an inherited descriptor after checking it is open.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    set_nonblocking(fd)?;
    // SAFETY: the descriptor is open (checked above) and was handed to the
    // tender on its command line to own; nothing else in the process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor change only its flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An epoll set whose events carry a device handle.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty set.
    pub fn new() -> io::Result<Self> {
        // SAFETY: creates a new descriptor; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Watches `fd` for input; its events carry `handle`.
    pub fn add(&self, fd: BorrowedFd<'_>, handle: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: handle,
        };
        // SAFETY: both descriptors are open; `ev` lives across the call.
        let ret = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` and returns the set of ready handles as a
    /// bit mask (handles above 63 are ignored). EINTR is "nothing ready".
    pub fn wait(&self, timeout_ms: i32) -> io::Result<u64> {
        const MAX: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        // SAFETY: `events` has room for MAX entries and outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                MAX as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(err);
        }
        let n = usize::try_from(n).unwrap_or(0).min(MAX);
        let mut set = 0u64;
        for ev in &events[..n] {
            let handle = ev.u64;
            if handle < 64 {
                set |= 1 << handle;
            }
        }
        Ok(set)
    }

    /// The set's own descriptor (for the seccomp filter).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
