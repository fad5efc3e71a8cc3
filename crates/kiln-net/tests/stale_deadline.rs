//! The driver must not spin on a deadline smoltcp keeps reporting after it
//! has passed. Run on a platform with virtual time that records every
//! blocking call: a spinning driver blocks again and again with a deadline
//! that has already passed, and virtual time stops advancing.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use kiln_devices::{Instant, MacAddress, Stack};
use kiln_net::pair::pair;
use kiln_net::{Config, NetStack};
use kiln_rt::{Platform, block_on, spawn};

/// Blocking calls allowed before the test counts as spinning.
const MAX_WAITS: usize = 20_000;

/// Virtual time; counts the waits whose deadline had already passed.
#[derive(Default)]
struct CountingPlatform {
    now: Cell<u64>,
    waits: Cell<usize>,
    past_waits: Cell<usize>,
    log: RefCell<Vec<u64>>,
}

impl Platform for CountingPlatform {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now.get())
    }

    fn wait(&self, deadline: Option<Instant>) {
        let d = deadline.expect("deadlock: every task waits and no timer is pending");
        self.waits.set(self.waits.get() + 1);
        if d.as_nanos() <= self.now.get() {
            self.past_waits.set(self.past_waits.get() + 1);
            self.log.borrow_mut().push(self.now.get());
        }
        assert!(
            self.waits.get() < MAX_WAITS,
            "{} waits, {} of them with a past deadline (at virtual ns {:?}...): the driver spins",
            self.waits.get(),
            self.past_waits.get(),
            &self.log.borrow()[..self.log.borrow().len().min(5)]
        );
        self.now.set(self.now.get().max(d.as_nanos()));
    }
}

/// Regression: smoltcp 0.14's SLAAC keeps the time of a fourth router
/// solicitation (12 s after start) as its deadline for good once its three
/// solicitations went unanswered, and `Interface::poll_at` reports it
/// whenever a socket has a timer. The driver polled again at once on every
/// such past deadline: www on spt and hvt fell to half its request rate
/// after ~12 s of uptime, and one unanswered SYN kept the CPU at 100%.
#[test]
fn an_unanswered_router_solicitation_does_not_make_the_driver_spin() {
    let platform: &'static CountingPlatform = Box::leak(Box::default());
    block_on(platform, async {
        let (end, _silent) = pair(
            MacAddress([0x02, 0, 0, 0, 0, 1]),
            MacAddress([0x02, 0, 0, 0, 0, 2]),
        );
        // SLAAC on (the default) and no router on the wire.
        let config = Config::parse(["--ipv4=10.0.0.1/24"]).unwrap();
        let stack = NetStack::new(end, config, 7).unwrap();
        // A connection whose SYN never leaves (nobody answers ARP) keeps a
        // socket timer pending for the whole test.
        let s = stack.clone();
        spawn(async move {
            let _ = s.connect_tcp("10.0.0.3:80".parse().unwrap()).await;
        });
        kiln_rt::sleep(Duration::from_secs(30)).await;
        // The driver's safety net (a 1 ms wait on a deadline it does not
        // believe) also keeps virtual time moving, at a thousand waits a
        // second: the fix is that it is never needed.
        let stats = stack.stats();
        assert_eq!(
            stats.stale_deadlines,
            0,
            "the driver met SLAAC's stale deadline ({} waits in all): {stats:?}",
            platform.waits.get()
        );
    });
    assert_eq!(
        platform.now().as_nanos() / 1_000_000_000,
        30,
        "virtual time did not reach the end of the test"
    );
    // A few past deadlines are normal (smoltcp may ask to be polled again
    // at once); a spin makes thousands.
    assert!(
        platform.past_waits.get() < 50,
        "{} of {} waits had a past deadline",
        platform.past_waits.get(),
        platform.waits.get()
    );
    // The unanswered SYN's ARP requests and SLAAC's solicitations take a
    // few (9); a driver held up by the safety net takes 18,000 (one per
    // millisecond from 12 s on).
    assert!(
        platform.waits.get() < 100,
        "{} waits in 30 s of virtual time",
        platform.waits.get()
    );
}
