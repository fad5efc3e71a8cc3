//! kiln's STOP extension under the `kiln-spt` binary, with hand-made
//! guests blocked in `epoll_pwait` without a timeout: one that writes its
//! acknowledgement to the word kiln-spt's extension block names gets the
//! stop event at once and exits 0; one that does not (any Solo5 guest)
//! ends as solo5-spt ends, by the signal, with nothing printed.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::image::{ENTRY, Image, notes, temp_file};
use kiln_testsupport::process::{ChildGuard, children, ended, ended_within, signal};

use kiln_abi::spt::SPT_BOOT_INFO_BASE;
use kiln_abi::spt_ext::{KILN_SPT_STOP_EVENT, KILN_STOP_ACK, SPT_EXT_BASE};
use kiln_abi::{AbiNote, MftNote};

/// How soon after the signal the tender must have ended (the guests wait
/// without a timeout).
const BOUND: Duration = Duration::from_secs(2);

/// An spt image whose one R+X segment holds `code` at [`ENTRY`], with an
/// empty manifest.
fn image(code: &[u8]) -> Vec<u8> {
    let mft: MftNote<0> = MftNote::new([]);
    Image::guest(&notes(AbiNote::spt(), &mft), code).build()
}

/// A few x86_64 instructions, with the strings placed after the code.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    /// (offset of a 32-bit address in `code`, the string it points at).
    strings: Vec<(usize, &'static [u8])>,
}

impl Asm {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }

    fn imm32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    fn here(&self) -> usize {
        self.code.len()
    }

    /// `write(1, text, len)`.
    fn print(&mut self, text: &'static [u8]) -> &mut Self {
        self.bytes(&[0xbf]).imm32(1); // mov edi, 1
        self.bytes(&[0xbe]); // mov esi, text
        self.strings.push((self.here(), text));
        self.imm32(0);
        self.bytes(&[0xba]).imm32(text.len() as u32); // mov edx, len
        self.bytes(&[0xb8]).imm32(1); // mov eax, SYS_write
        self.bytes(&[0x0f, 0x05])
    }

    /// `jne` back to `target`.
    fn jne(&mut self, target: usize) -> &mut Self {
        let rel = target as i64 - (self.here() as i64 + 6);
        self.bytes(&[0x0f, 0x85]).imm32(rel as i32 as u32)
    }

    fn finish(mut self) -> Vec<u8> {
        for (at, text) in std::mem::take(&mut self.strings) {
            let addr = ENTRY + self.code.len() as u64;
            self.code[at..at + 4].copy_from_slice(&(addr as u32).to_le_bytes());
            self.code.extend_from_slice(text);
        }
        self.code
    }
}

/// A guest that acknowledges the stop request when `ack`, prints `ready`,
/// then waits in `epoll_pwait` (no timeout) until an event carries
/// [`KILN_SPT_STOP_EVENT`], prints `stop seen` and exits 0.
fn waiting_guest(ack: bool) -> Vec<u8> {
    waiting_guest_with(ack, true)
}

/// [`waiting_guest`]; without `watch` it waits again whatever its wait
/// returned, forever.
fn waiting_guest_with(ack: bool, watch: bool) -> Vec<u8> {
    let mut a = Asm::default();
    let stop_ack = SPT_EXT_BASE + 16;
    if ack {
        // mov rax, [stop_ack]; mov rbx, KILN_STOP_ACK; mov [rax], rbx
        a.bytes(&[0x48, 0x8b, 0x04, 0x25]).imm32(stop_ack as u32);
        a.bytes(&[0x48, 0xbb]).bytes(&KILN_STOP_ACK.to_le_bytes());
        a.bytes(&[0x48, 0x89, 0x18]);
    }
    a.bytes(&[0x48, 0x83, 0xec, 0x40]); // sub rsp, 64: room for an event
    a.print(b"ready\n");
    let top = a.here();
    // epoll_pwait(bi.epollfd, rsp, 1, -1, NULL, 8)
    a.bytes(&[0x8b, 0x3c, 0x25])
        .imm32((SPT_BOOT_INFO_BASE + 32) as u32); // mov edi, [bi.epollfd]
    a.bytes(&[0x48, 0x89, 0xe6]); // mov rsi, rsp
    a.bytes(&[0xba]).imm32(1); // mov edx, 1
    a.bytes(&[0x49, 0xc7, 0xc2]).imm32(u32::MAX); // mov r10, -1
    a.bytes(&[0x45, 0x31, 0xc0]); // xor r8d, r8d
    a.bytes(&[0x41, 0xb9]).imm32(8); // mov r9d, 8
    a.bytes(&[0xb8]).imm32(281); // mov eax, SYS_epoll_pwait
    a.bytes(&[0x0f, 0x05]);
    if !watch {
        a.bytes(&[0x31, 0xc0]); // xor eax, eax
    }
    a.bytes(&[0x83, 0xf8, 0x01]); // cmp eax, 1
    a.jne(top);
    a.bytes(&[0x48, 0x8b, 0x44, 0x24, 0x04]); // mov rax, [rsp + 4]: data
    a.bytes(&[0xbb]).imm32(KILN_SPT_STOP_EVENT as u32); // mov ebx, event
    a.bytes(&[0x48, 0x39, 0xd8]); // cmp rax, rbx
    a.jne(top);
    a.print(b"stop seen\n");
    a.bytes(&[0x31, 0xff]); // xor edi, edi
    a.bytes(&[0xb8]).imm32(231); // mov eax, SYS_exit_group
    a.bytes(&[0x0f, 0x05]);
    a.finish()
}

/// An image file, removed when dropped, even if the test fails.
type TempImage = tempfile::TempPath;

/// Starts the guest and waits for its `ready` line.
fn start(image_path: &TempImage) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-spt"))
        .arg("--mem=4")
        .arg(image_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kiln-spt");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

/// Waits for `child` at most [`BOUND`] after `since`: (exit status, the rest
/// of stdout, stderr).
fn end(
    child: Child,
    out: BufReader<ChildStdout>,
    since: Instant,
) -> (std::process::ExitStatus, String, String) {
    // On a panic the guard kills and reaps the tender.
    ended_within(
        ChildGuard(child),
        out,
        BOUND.saturating_sub(since.elapsed()),
    )
    .unwrap()
    .unwrap_or_else(|| panic!("kiln-spt did not end within {BOUND:?} of the signal"))
}

fn write_image(name: &str, code: &[u8]) -> TempImage {
    temp_file(&format!("kiln-spt-stop-{name}-"), ".spt", &image(code))
}

#[test]
fn an_acknowledging_guest_gets_the_stop_event_and_exits_cleanly() {
    let path = write_image("ack", &waiting_guest(true));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (child, out) = start(&path);
        std::thread::sleep(Duration::from_millis(100));
        let since = Instant::now();
        signal(child.id(), sig);
        let (status, rest, err) = end(child, out, since);
        assert_eq!(status.code(), Some(0), "{status:?} {err}");
        assert_eq!(rest, "stop seen\n");
        assert_eq!(err, "");
    }
}

#[test]
fn a_guest_that_does_not_acknowledge_ends_by_the_signal_as_under_solo5_spt() {
    let path = write_image("noack", &waiting_guest(false));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (child, out) = start(&path);
        let since = Instant::now();
        signal(child.id(), sig);
        let (status, rest, err) = end(child, out, since);
        assert_eq!(status.signal(), Some(sig), "{status:?} {err}");
        assert_eq!((rest.as_str(), err.as_str()), ("", ""));
    }
}

#[test]
fn a_second_signal_ends_the_tender_by_it() {
    // Acknowledges, then never looks at what its wait returns.
    let path = write_image("twice", &waiting_guest_with(true, false));
    let (child, out) = start(&path);
    signal(child.id(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .is_ok_and(|s| !s.contains(") Z ")),
        "the first SIGTERM ended the tender"
    );
    let since = Instant::now();
    signal(child.id(), libc::SIGTERM);
    let (status, _, err) = end(child, out, since);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?} {err}");
}

/// A tender killed with SIGKILL (no handler runs) takes its guest along:
/// the guest process asked for SIGKILL when its parent dies
/// (PR_SET_PDEATHSIG), so no guest outlives its tender.
#[test]
fn a_killed_tender_takes_its_guest_along() {
    let path = write_image("orphan", &waiting_guest(true));
    let (child, _out) = start(&path);
    let guest = *children(child.id())
        .first()
        .expect("the tender has a guest process");
    assert!(!ended(guest, Duration::ZERO));
    let mut guard = ChildGuard(child);
    signal(guard.0.id(), libc::SIGKILL);
    let status = guard.wait_for(BOUND).unwrap().expect("the tender ended");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    if !ended(guest, BOUND) {
        // Not left behind, whatever the outcome.
        signal(guest, libc::SIGKILL);
        panic!("the guest outlived its tender by {BOUND:?}");
    }
}
