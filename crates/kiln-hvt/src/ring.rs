//! Solo5's ring I/O (`HVT_FEATURE_RING_IO`, `kiln_abi::hvt_ring`) on the
//! tender side: the ring's place in guest memory, the kick's eventfd, and
//! the I/O thread that serves the guest's net writes and reads against the
//! taps while the vCPU runs.
//!
//! Spec: Solo5's `include/hvt_ring.h` and `tenders/hvt/hvt_module_net.c`
//! (`docs/solo5-compat.md` names the commits). Where kiln differs:
//!
//! - the ring lies in the tender's low memory, in the pages right below
//!   the image ([`RING_GPA`]), where no guest puts anything (Solo5 takes it
//!   from the top of the guest's memory): a guest that does not know the
//!   ring loses nothing, and kiln's own guests, which map low memory, find
//!   it mapped;
//! - every ring field is the guest's to change at any time: the thread
//!   keeps `ent_head` and `com_tail` itself (never reads them back), reads
//!   `ent_tail` once per pass and each entry once (a copy), and checks
//!   every address and length through [`SharedGuest`]'s checked ranges.
//!   A hostile ring (a tail more than [`HVT_RING_SIZE`] ahead, a frame
//!   longer than the device's MTU allows or empty, an address outside
//!   guest memory, a read into read-only memory) stops the guest with a
//!   message naming the entry and field, as Solo5 stops it (`errx`);
//! - a frame the host refuses is dropped (counted, reported once), where
//!   Solo5's tender exits.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use kiln_abi::hvt::HVT_GUEST_MIN_BASE;
use kiln_abi::hvt_ring::{
    HVT_RING_NET_READ, HVT_RING_NET_WRITE, HVT_RING_POLL_ITERS, HVT_RING_SIZE, HvtRingCommit,
    HvtRingEntry, RING_COM_TAIL, RING_ENT_HEAD, RING_ENT_TAIL, RING_NEEDS_KICK, RING_SIZE_BYTES,
    commit_offset, entry_offset,
};
use kiln_abi::status::Solo5Result;
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;
use zerocopy::{FromBytes, IntoBytes};

use crate::guest::{GuestMemError, SharedGuest};

/// The environment variable that keeps the ring from being offered when
/// set to `1` (guests then use the hypercalls), for tests and comparisons.
pub const NO_RING_ENV: &str = "KILN_HVT_NO_RING_IO";

/// Where the ring lies: the last whole pages below the image
/// ([`HVT_GUEST_MIN_BASE`]), in the tender's low memory, which no guest
/// uses for itself.
pub const RING_GPA: u64 = HVT_GUEST_MIN_BASE - RING_SIZE_BYTES.div_ceil(PAGE) * PAGE;
const PAGE: u64 = 0x1000;

const _: () = assert!(RING_GPA == 0xf_3000);

/// Whether [`NO_RING_ENV`] hides the ring.
pub fn hidden() -> bool {
    std::env::var_os(NO_RING_ENV).is_some_and(|v| v == "1")
}

/// The net devices the ring serves, by handle, and the largest frame the
/// guest may send.
#[derive(Debug, Clone, Default)]
pub struct RingDevices {
    /// (handle, tap) of each attached net device.
    pub taps: Vec<(u64, Arc<File>)>,
    /// The largest frame a write may carry.
    pub max_frame: u64,
}

/// Why the guest's ring was refused (the guest is stopped).
#[derive(Debug, Error)]
pub enum RingError {
    /// The guest's tail is further ahead than the ring holds.
    #[error(
        "net ring: ent_tail is {tail} and ent_head {head}: {ahead} entries pending, at most {HVT_RING_SIZE} fit"
    )]
    TailAhead {
        /// The guest's `ent_tail`.
        tail: u32,
        /// The tender's `ent_head`.
        head: u32,
        /// `tail - head`, wrapping.
        ahead: u32,
    },
    /// An entry's address or length is outside what the guest may name.
    #[error("net ring: entry {index} ({op}): bad {what} address")]
    Memory {
        /// The entry's free-running index.
        index: u32,
        /// `write` or `read`.
        op: &'static str,
        /// Which field.
        what: &'static str,
        /// The refused range.
        #[source]
        source: GuestMemError,
    },
    /// A write's length is not a frame's.
    #[error("net ring: entry {index} (write): len is {len}, {why}")]
    FrameLength {
        /// The entry's free-running index.
        index: u32,
        /// Its `len`.
        len: u32,
        /// The rule it breaks.
        why: String,
    },
    /// The ring itself (tender-placed) could not be accessed.
    #[error("net ring at {gpa:#x}: cannot access {what}")]
    Ring {
        /// The ring's address.
        gpa: u64,
        /// Which field.
        what: &'static str,
        /// Why.
        #[source]
        source: GuestMemError,
    },
}

/// The state of the ring the tender keeps: its own indices (never read
/// back from the guest) and what it serves.
#[derive(Debug)]
pub struct Server {
    mem: SharedGuest,
    ring: u64,
    devices: RingDevices,
    head: u32,
    com_tail: u32,
    /// Frames the host refused to take.
    pub dropped: u64,
}

impl Server {
    /// A server for the zeroed ring at `ring`, checked to lie in guest
    /// memory.
    pub fn new(mem: SharedGuest, ring: u64, devices: RingDevices) -> Result<Self, RingError> {
        mem.checked_mut(ring, RING_SIZE_BYTES)
            .map_err(|source| RingError::Ring {
                gpa: ring,
                what: "the ring",
                source,
            })?;
        Ok(Self {
            mem,
            ring,
            devices,
            head: 0,
            com_tail: 0,
            dropped: 0,
        })
    }

    fn ring_err(&self, what: &'static str) -> impl FnOnce(GuestMemError) -> RingError {
        let gpa = self.ring;
        move |source| RingError::Ring { gpa, what, source }
    }

    /// The guest's `ent_tail`, read once.
    fn tail(&self) -> Result<u32, RingError> {
        self.mem
            .load_u32(self.ring + RING_ENT_TAIL)
            .map_err(self.ring_err("ent_tail"))
    }

    /// Whether the guest submitted entries not served yet.
    pub fn pending(&self) -> Result<bool, RingError> {
        Ok(self.tail()? != self.head)
    }

    /// Sets `needs_kick` (1 before the thread sleeps, 0 once awake).
    pub fn set_needs_kick(&self, value: u32) -> Result<(), RingError> {
        self.mem
            .store_u32(self.ring + RING_NEEDS_KICK, value)
            .map_err(self.ring_err("needs_kick"))
    }

    /// Serves every entry submitted so far, in order; returns how many.
    pub fn serve(&mut self) -> Result<u32, RingError> {
        let tail = self.tail()?;
        let ahead = tail.wrapping_sub(self.head);
        if ahead > HVT_RING_SIZE {
            return Err(RingError::TailAhead {
                tail,
                head: self.head,
                ahead,
            });
        }
        for _ in 0..ahead {
            let index = self.head;
            let bytes = self
                .mem
                .read_array::<32>(self.ring + entry_offset(index))
                .map_err(self.ring_err("an entry"))?;
            let entry = HvtRingEntry::read_from_bytes(&bytes).unwrap_or_default();
            match entry.operation {
                HVT_RING_NET_WRITE => self.write(index, &entry)?,
                HVT_RING_NET_READ => {
                    self.read(index, &entry)?;
                    // The guest waits on this read: let it see the head
                    // move with the commit.
                    self.head = index.wrapping_add(1);
                    self.publish_head()?;
                    continue;
                }
                // Solo5 skips an unknown operation.
                _ => {}
            }
            self.head = index.wrapping_add(1);
        }
        if ahead > 0 {
            self.publish_head()?;
        }
        Ok(ahead)
    }

    fn publish_head(&self) -> Result<(), RingError> {
        self.mem
            .store_u32(self.ring + RING_ENT_HEAD, self.head)
            .map_err(self.ring_err("ent_head"))
    }

    fn tap(&self, handle: u32) -> Option<&Arc<File>> {
        self.devices
            .taps
            .iter()
            .find(|(h, _)| *h == u64::from(handle))
            .map(|(_, f)| f)
    }

    /// A write: fire-and-forget. An unknown handle is ignored, as Solo5's
    /// tender ignores it.
    fn write(&mut self, index: u32, e: &HvtRingEntry) -> Result<(), RingError> {
        if e.len == 0 {
            return Err(RingError::FrameLength {
                index,
                len: e.len,
                why: "a frame cannot be empty".into(),
            });
        }
        if u64::from(e.len) > self.devices.max_frame {
            return Err(RingError::FrameLength {
                index,
                len: e.len,
                why: format!("more than the {} bytes of a frame", self.devices.max_frame),
            });
        }
        let Some(tap) = self.tap(e.handle) else {
            return Ok(());
        };
        let fd = tap.as_raw_fd();
        let wrote = self
            .mem
            .write_fd(fd, e.data, u64::from(e.len))
            .map_err(|source| RingError::Memory {
                index,
                op: "write",
                what: "data",
                source,
            })?;
        match wrote {
            Ok(n) if n == e.len as usize => {}
            Ok(_) => self.drop_frame(None),
            Err(err) => self.drop_frame(Some(err)),
        }
        Ok(())
    }

    fn drop_frame(&mut self, err: Option<io::Error>) {
        if self.dropped == 0 {
            let why = err.map_or_else(|| "a short write".to_string(), |e| e.to_string());
            eprintln!(
                "kiln-hvt: a net device refused a frame from the ring ({why}); it is dropped (later ones are not reported)"
            );
        }
        self.dropped += 1;
    }

    /// A read: one frame into the buffer, then a commit.
    fn read(&mut self, index: u32, e: &HvtRingEntry) -> Result<(), RingError> {
        let (ret, len) = match self.tap(e.handle) {
            None => (Solo5Result::Einval, 0),
            Some(tap) => {
                let got = self
                    .mem
                    .read_fd(tap.as_raw_fd(), e.data, u64::from(e.len))
                    .map_err(|source| RingError::Memory {
                        index,
                        op: "read",
                        what: "data",
                        source,
                    })?;
                match got {
                    // A tap never reads 0; Solo5 takes it as nothing read.
                    Ok(0) => (Solo5Result::Again, 0),
                    Ok(n) => (Solo5Result::Ok, u32::try_from(n).unwrap_or(e.len)),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => (Solo5Result::Again, 0),
                    Err(err) => {
                        crate::net::report_read_error(&err);
                        (Solo5Result::Eunspec, 0)
                    }
                }
            }
        };
        let commit = HvtRingCommit {
            id: e.id,
            ret: ret as i32,
            len,
            reserved: 0,
        };
        self.mem
            .write(self.ring + commit_offset(self.com_tail), commit.as_bytes())
            .map_err(self.ring_err("a commit"))?;
        self.com_tail = self.com_tail.wrapping_add(1);
        self.mem
            .store_u32(self.ring + RING_COM_TAIL, self.com_tail)
            .map_err(self.ring_err("com_tail"))
    }
}

/// The kick: an eventfd KVM signals when the guest writes the kick port.
/// The I/O thread blocks reading it.
pub fn kick_eventfd() -> io::Result<EventFd> {
    EventFd::new(0)
}

/// The running I/O thread.
#[derive(Debug)]
pub struct RingThread {
    stop: Arc<AtomicBool>,
    kick: Arc<EventFd>,
    /// Told once the thread served everything after `stop`.
    done: mpsc::Receiver<()>,
    _handle: JoinHandle<()>,
}

/// Starts the I/O thread serving `server`, woken by `kick`.
pub fn spawn(server: Server, kick: Arc<EventFd>) -> io::Result<RingThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tell, done) = mpsc::channel();
    let (started, ready) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("kiln-hvt-ring".into())
        .spawn({
            let stop = stop.clone();
            let kick = kick.clone();
            move || {
                let _ = started.send(());
                if let Err(e) = io_loop(server, &kick, &stop) {
                    // As Solo5's tender does from its I/O thread: the guest
                    // cannot go on with a ring it broke.
                    eprintln!("kiln-hvt: error: guest stopped: {}", kiln_tender::chain(&e));
                    std::process::exit(1);
                }
                let _ = tell.send(());
                // Never ends: a thread's exit makes system calls (rseq,
                // munmap of its stack) the filter does not allow, and the
                // tender's exit ends it anyway.
                loop {
                    let _ = kick.read();
                }
            }
        })?;
    // The thread's start-up (its C library's per-thread set-up) is over
    // before the seccomp filter, which would refuse it, is installed.
    ready
        .recv()
        .map_err(|_| io::Error::other("the ring's I/O thread did not start"))?;
    Ok(RingThread {
        stop,
        kick,
        done,
        _handle: handle,
    })
}

impl RingThread {
    /// Serves what the guest submitted until now and idles the thread (the
    /// guest halted: its last frames still leave).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.kick.write(1);
        let _ = self.done.recv();
    }
}

/// The thread: spin on the ring a while, then sleep until kicked, as
/// Solo5's `io_thread_net_fn`; serve everything pending after each wake.
fn io_loop(mut server: Server, kick: &EventFd, stop: &AtomicBool) -> Result<(), RingError> {
    loop {
        let stopping = stop.load(Ordering::Acquire);
        server.serve()?;
        if stopping {
            return Ok(());
        }
        let mut found = false;
        for _ in 0..HVT_RING_POLL_ITERS {
            if server.pending()? || stop.load(Ordering::Relaxed) {
                found = true;
                break;
            }
            std::hint::spin_loop();
        }
        if !found {
            server.set_needs_kick(1)?;
            // Store needs_kick, then load ent_tail: the guest stores
            // ent_tail, then loads needs_kick; one side sees the other.
            fence(Ordering::SeqCst);
            if !server.pending()? && !stop.load(Ordering::Acquire) {
                // Blocks until the guest (or `stop`) kicks; a failed read
                // (EINTR) just goes round again.
                let _ = kick.read();
            }
            server.set_needs_kick(0)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use kiln_abi::hvt_ring::{HVT_RING_NET_READ, RING_COM_HEAD};

    use super::*;
    use crate::guest::GuestMemory;

    const RING: u64 = 0x10_0000;
    const BUF: u64 = 0x2000;

    struct Rig {
        mem: GuestMemory,
        server: Server,
        host: UnixDatagram,
        tail: u32,
    }

    impl Rig {
        fn new() -> Self {
            let (host, guest) = UnixDatagram::pair().unwrap();
            guest.set_nonblocking(true).unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut mem = GuestMemory::new(0x20_0000).unwrap();
            mem.protect(0x1000, 0x2000).unwrap();
            let devices = RingDevices {
                taps: vec![(1, Arc::new(File::from(std::os::fd::OwnedFd::from(guest))))],
                max_frame: 1518,
            };
            let server = Server::new(mem.shared(), RING, devices).unwrap();
            Self {
                mem,
                server,
                host,
                tail: 0,
            }
        }

        fn submit(&mut self, op: u32, handle: u32, data: u64, len: u32) {
            let e = HvtRingEntry {
                operation: op,
                handle,
                data,
                len,
                id: self.tail.wrapping_add(100),
                reserved: 0,
            };
            self.mem
                .write(RING + entry_offset(self.tail), e.as_bytes())
                .unwrap();
            self.tail = self.tail.wrapping_add(1);
            self.mem
                .write(RING + RING_ENT_TAIL, &self.tail.to_le_bytes())
                .unwrap();
        }

        fn commit(&self, index: u32) -> HvtRingCommit {
            let b = self
                .mem
                .read_array::<16>(RING + commit_offset(index))
                .unwrap();
            HvtRingCommit::read_from_bytes(&b).unwrap()
        }

        fn word(&self, offset: u64) -> u32 {
            u32::from_le_bytes(self.mem.read_array::<4>(RING + offset).unwrap())
        }
    }

    #[test]
    fn writes_and_reads_are_served_in_order() {
        let mut rig = Rig::new();
        rig.mem.write(BUF, &[0x5a; 60]).unwrap();
        rig.submit(HVT_RING_NET_WRITE, 1, BUF, 60);
        rig.host.send(b"answer").unwrap();
        rig.submit(HVT_RING_NET_READ, 1, BUF + 0x800, 1514);
        rig.submit(HVT_RING_NET_READ, 1, BUF + 0x1000, 1514);
        rig.submit(HVT_RING_NET_READ, 9, BUF + 0x800, 1514);
        rig.submit(77, 1, 0, 0);
        assert_eq!(rig.server.serve().unwrap(), 5);
        let mut got = [0u8; 64];
        assert_eq!(rig.host.recv(&mut got).unwrap(), 60);
        // The first read takes the answer, the second finds nothing.
        let c = rig.commit(0);
        assert_eq!((c.id, c.ret, c.len), (101, Solo5Result::Ok as i32, 6));
        assert_eq!(&rig.mem.read_array::<6>(BUF + 0x800).unwrap(), b"answer");
        let c = rig.commit(1);
        assert_eq!((c.id, c.ret, c.len), (102, Solo5Result::Again as i32, 0));
        let c = rig.commit(2);
        assert_eq!((c.id, c.ret), (103, Solo5Result::Einval as i32));
        assert_eq!(rig.word(RING_ENT_HEAD), 5);
        assert_eq!(rig.word(RING_COM_TAIL), 3);
        assert!(!rig.server.pending().unwrap());
        // The guest's own fields are never written by the tender.
        assert_eq!(rig.word(RING_COM_HEAD), 0);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mut rig = Rig::new();
        rig.server.head = u32::MAX - 1;
        rig.tail = u32::MAX - 1;
        rig.mem.write(BUF, &[1; 60]).unwrap();
        for _ in 0..4 {
            rig.submit(HVT_RING_NET_WRITE, 1, BUF, 60);
        }
        assert_eq!(rig.server.serve().unwrap(), 4);
        assert_eq!(rig.word(RING_ENT_HEAD), 2);
    }

    #[test]
    fn hostile_rings_are_refused() {
        type Spoil = Box<dyn Fn(&mut Rig)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "4096 entries pending",
                Box::new(|r| {
                    r.mem
                        .write(RING + RING_ENT_TAIL, &4096u32.to_le_bytes())
                        .unwrap()
                }),
            ),
            (
                "4294967295 entries pending",
                Box::new(|r| {
                    r.mem
                        .write(RING + RING_ENT_TAIL, &u32::MAX.to_le_bytes())
                        .unwrap()
                }),
            ),
            (
                "len is 1519, more than the 1518 bytes",
                Box::new(|r| r.submit(HVT_RING_NET_WRITE, 1, BUF, 1519)),
            ),
            (
                "len is 0, a frame cannot be empty",
                Box::new(|r| r.submit(HVT_RING_NET_WRITE, 1, BUF, 0)),
            ),
            (
                "entry 0 (write): bad data address",
                Box::new(|r| r.submit(HVT_RING_NET_WRITE, 1, 0x1f_ffff, 60)),
            ),
            (
                "entry 0 (write): bad data address",
                Box::new(|r| r.submit(HVT_RING_NET_WRITE, 1, u64::MAX - 10, 60)),
            ),
            (
                "entry 0 (read): bad data address",
                Box::new(|r| r.submit(HVT_RING_NET_READ, 1, 0x1f_f000, 0x2000)),
            ),
            (
                "is read-only",
                Box::new(|r| r.submit(HVT_RING_NET_READ, 1, 0x1800, 64)),
            ),
        ];
        for (needle, spoil) in cases {
            let mut rig = Rig::new();
            rig.host.send(b"frame").unwrap();
            spoil(&mut rig);
            let err = rig.server.serve().unwrap_err();
            let text = kiln_tender::chain(&err);
            assert!(text.contains(needle), "{needle}: {text}");
            // Nothing was sent or read.
            rig.host.set_nonblocking(true).unwrap();
            let mut b = [0u8; 8];
            assert!(rig.host.recv(&mut b).is_err(), "{needle}: a frame was sent");
        }
    }
}
