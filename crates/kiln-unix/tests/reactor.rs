//! The reactor on the real clock: timers never fire early, the runtime does
//! not spin, and readiness wakes exactly the tasks that wait on it.

use std::cell::Cell;
use std::future::poll_fn;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use kiln_devices::Instant;
use kiln_rt::{Platform as _, block_on, sleep, spawn, timeout};
use kiln_unix::{Interest, Registration, platform};

/// Runs `future` on this thread's platform, failing after 20 s.
fn run<F: Future>(future: F) -> F::Output {
    block_on(platform(), timeout(Duration::from_secs(20), future)).expect("test timed out")
}

#[test]
fn sleeps_never_wake_before_their_deadline() {
    run(async {
        let p = platform();
        for d in [
            Duration::from_millis(20),
            Duration::from_micros(1500),
            Duration::from_micros(300),
            Duration::from_nanos(1),
        ] {
            for _ in 0..5 {
                let start = std::time::Instant::now();
                let deadline = p.now() + d;
                sleep(d).await;
                let now = p.now();
                assert!(
                    now >= deadline,
                    "{d:?} sleep woke {:?} early",
                    deadline - now
                );
                assert!(
                    start.elapsed() >= d,
                    "{d:?} sleep took {:?}",
                    start.elapsed()
                );
            }
        }
    });
}

#[test]
fn a_sleep_blocks_in_a_few_waits_instead_of_spinning() {
    run(async {
        let before = platform().wait_count();
        sleep(Duration::from_millis(50)).await;
        let waits = platform().wait_count() - before;
        assert!((1..=3).contains(&waits), "50 ms sleep took {waits} waits");
    });
}

#[test]
fn wait_with_no_descriptors_returns_at_the_deadline() {
    let p = platform();
    let start = std::time::Instant::now();
    let deadline = p.now() + Duration::from_millis(5);
    p.wait(Some(deadline));
    assert!(p.now() >= deadline);
    assert!(start.elapsed() >= Duration::from_millis(5));
    // A deadline in the past only checks the devices.
    p.wait(Some(Instant::ZERO));
    p.wait(Some(p.now()));
}

/// Reads what is available on `sock`, waiting through `registration`, and
/// counts the polls.
async fn read_some(
    registration: &Registration,
    mut sock: &UnixStream,
    polls: &Cell<u32>,
) -> Vec<u8> {
    poll_fn(|cx| {
        polls.set(polls.get() + 1);
        let mut buf = [0u8; 64];
        match sock.read(&mut buf) {
            Ok(n) => Poll::Ready(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                registration.register(Interest::Readable, cx.waker());
                Poll::Pending
            }
            Err(e) => panic!("read failed: {e}"),
        }
    })
    .await
}

struct Waiter {
    sock: UnixStream,
    registration: Registration,
    polls: Cell<u32>,
}

fn waiter() -> (Rc<Waiter>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let registration = Registration::new(platform(), ours.as_raw_fd());
    let waiter = Rc::new(Waiter {
        sock: ours,
        registration,
        polls: Cell::new(0),
    });
    (waiter, theirs)
}

#[test]
fn readiness_wakes_the_task_that_waits_on_it_and_no_other() {
    run(async {
        let (a, mut a_peer) = waiter();
        let (b, mut b_peer) = waiter();
        let task_a = {
            let a = a.clone();
            spawn(async move { read_some(&a.registration, &a.sock, &a.polls).await })
        };
        let task_b = {
            let b = b.clone();
            spawn(async move { read_some(&b.registration, &b.sock, &b.polls).await })
        };
        sleep(Duration::from_millis(10)).await;
        assert_eq!((a.polls.get(), b.polls.get()), (1, 1));

        b_peer.write_all(b"to b").unwrap();
        assert_eq!(task_b.await, b"to b");
        assert_eq!(b.polls.get(), 2);
        sleep(Duration::from_millis(10)).await;
        assert_eq!(a.polls.get(), 1, "a was woken by b's data");
        assert!(!task_a.is_finished());

        a_peer.write_all(b"to a").unwrap();
        assert_eq!(task_a.await, b"to a");
        assert_eq!(a.polls.get(), 2);
    });
}

#[test]
fn a_hang_up_wakes_the_reader() {
    run(async {
        let (a, a_peer) = waiter();
        let task = {
            let a = a.clone();
            spawn(async move { read_some(&a.registration, &a.sock, &a.polls).await })
        };
        sleep(Duration::from_millis(5)).await;
        drop(a_peer);
        assert_eq!(task.await, b"", "end of file after the hang-up");
    });
}

#[test]
fn several_tasks_may_wait_on_one_descriptor() {
    run(async {
        let (a, mut a_peer) = waiter();
        let woken = Rc::new(Cell::new(0));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let (a, woken) = (a.clone(), woken.clone());
                spawn(async move {
                    let mut first = true;
                    poll_fn(|cx| {
                        if first {
                            first = false;
                            a.registration.register(Interest::Readable, cx.waker());
                            Poll::Pending
                        } else {
                            woken.set(woken.get() + 1);
                            Poll::Ready(())
                        }
                    })
                    .await
                })
            })
            .collect();
        sleep(Duration::from_millis(5)).await;
        assert_eq!(woken.get(), 0);
        a_peer.write_all(b"x").unwrap();
        for task in tasks {
            task.await;
        }
        assert_eq!(woken.get(), 3);
    });
}

#[test]
fn a_dropped_registration_is_no_longer_polled() {
    let (a, mut a_peer) = waiter();
    let p = platform();
    // Register interest, then drop the registration with it pending.
    run(async {
        let mut first = true;
        let registered = poll_fn(|cx| {
            if first {
                first = false;
                a.registration.register(Interest::Readable, cx.waker());
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        registered.await;
    });
    let Ok(a) = Rc::try_unwrap(a) else {
        panic!("waiter still shared")
    };
    drop(a.registration);
    a_peer.write_all(b"ready").unwrap();
    // The socket is readable, but no longer registered: the wait lasts until
    // its deadline.
    let waits = p.wait_count();
    let deadline = p.now() + Duration::from_millis(20);
    while p.now() < deadline && p.wait_count() - waits < 100 {
        p.wait(Some(deadline));
    }
    let waits = p.wait_count() - waits;
    assert_eq!(waits, 1, "the dropped descriptor is still polled");
}

/// The `registered` and `slots` counts from the platform's debug output.
fn counts() -> (usize, usize) {
    let debug = format!("{:?}", platform());
    let field = |name: &str| {
        let start = debug.find(&format!("{name}: Some(")).expect(&debug) + name.len() + 7;
        let len = debug[start..].find(')').expect(&debug);
        debug[start..start + len].parse::<usize>().expect(&debug)
    };
    (field("registered"), field("slots"))
}

#[test]
fn slots_are_reused() {
    let (registered, slots) = counts();
    let pairs: Vec<_> = (0..300).map(|_| waiter()).collect();
    assert_eq!(counts().0, registered + 300);
    drop(pairs);
    assert_eq!(counts().0, registered);
    let high = counts().1;
    assert!(high >= slots + 300 - registered);
    for _ in 0..3 {
        let pairs: Vec<_> = (0..300).map(|_| waiter()).collect();
        drop(pairs);
    }
    assert_eq!(counts().1, high, "slots were not reused");
}
