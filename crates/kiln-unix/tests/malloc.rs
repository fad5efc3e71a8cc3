//! Large zeroed allocations cost resident memory only where they are
//! used once the platform is up (glibc: `sys::map_large_allocations`):
//! the direct stack's socket buffers (64 KiB and 128 KiB each for a bulk
//! TCP socket, `vec![0; n]`) were resident whole (docs/bulk.md, "Memory").
#![cfg(target_env = "gnu")]
#![allow(unsafe_code)]

const PAGE: usize = 4096;

/// How many of the pages wholly inside `buf` are resident.
fn resident_pages(buf: &[u8]) -> usize {
    let start = (buf.as_ptr() as usize).div_ceil(PAGE) * PAGE;
    let end = (buf.as_ptr() as usize + buf.len()) / PAGE * PAGE;
    if end <= start {
        return 0;
    }
    let mut vec = vec![0u8; (end - start) / PAGE];
    // SAFETY: `[start, end)` is page-aligned and lies within `buf`, which
    // is mapped; `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|v| *v & 1 != 0).count()
}

#[test]
fn zeroed_socket_buffers_are_resident_only_where_used() {
    let _platform = kiln_unix::platform();
    // A heap as a server leaves it: glibc raised its mmap threshold when
    // a mapped block was freed (www's first connection's buffers), and
    // memory used and freed since lies in its free lists, resident.
    drop(std::hint::black_box(vec![0u8; 256 * 1024]));
    let used: Vec<Vec<u8>> = (0..32)
        .map(|_| std::hint::black_box(vec![0x5au8; 200 * 1024]))
        .collect();
    let pin = std::hint::black_box(vec![1u8; 64]);
    drop(used);
    let mut held = Vec::new();
    for _ in 0..32 {
        for size in [64 * 1024, 128 * 1024] {
            let mut buf = vec![0u8; size];
            // A request's worth used at the start of the buffer.
            buf[..512].fill(1);
            held.push(std::hint::black_box(buf));
        }
    }
    let resident: usize = held.iter().map(|b| resident_pages(b)).sum();
    let total: usize = held.iter().map(|b| b.len() / PAGE).sum();
    // Used: the first page of each (and the one it may straddle into).
    assert!(
        resident <= 2 * held.len(),
        "{resident} of {total} pages resident in {} zeroed buffers, 512 bytes used in each",
        held.len()
    );
    assert!(held.iter().all(|b| b[0] == 1 && b[600] == 0));
    drop(pin);
}
