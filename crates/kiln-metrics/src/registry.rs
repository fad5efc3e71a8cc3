//! The unikernel's list of collectors: the stack registers one when it is
//! built, an application one per part; [`render`] asks each, in the order
//! they registered, to write its families into one [`Exposition`].

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::text::Exposition;

/// Something that writes metric families when the metrics are read.
pub trait Collect {
    /// Writes this collector's families (and samples) into `out`.
    fn collect(&self, out: &mut Exposition);
}

impl<F: Fn(&mut Exposition)> Collect for F {
    fn collect(&self, out: &mut Exposition) {
        self(out)
    }
}

#[derive(Default)]
struct Registry {
    next: u64,
    collectors: Vec<(u64, Rc<dyn Collect>)>,
}

/// A registered collector; dropping it unregisters it. The default one
/// holds nothing.
#[must_use = "dropping the registration unregisters the collector"]
#[derive(Debug, Default)]
pub struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        with(|r| r.collectors.retain(|(id, _)| *id != self.id));
    }
}

/// Adds `collector` to this unikernel's registry (this thread's, on a
/// hosted target) until the returned [`Registration`] is dropped.
pub fn register(collector: impl Collect + 'static) -> Registration {
    with(|r| {
        // Ids start at 1: the default `Registration` (0) names nothing.
        r.next += 1;
        let id = r.next;
        r.collectors.push((id, Rc::new(collector)));
        Registration { id }
    })
}

/// Every registered collector's families, in the text exposition format.
pub fn render() -> String {
    // A copy of the list, so that a collector may (un)register.
    let collectors: Vec<Rc<dyn Collect>> =
        with(|r| r.collectors.iter().map(|(_, c)| c.clone()).collect());
    let mut page = Exposition::new();
    for c in collectors {
        c.collect(&mut page);
    }
    page.finish()
}

#[cfg(not(target_os = "none"))]
std::thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

#[cfg(not(target_os = "none"))]
fn with<R: Default>(f: impl FnOnce(&mut Registry) -> R) -> R {
    // After the thread's registry is gone (a registration dropped while
    // the thread exits) there is nothing left to change.
    REGISTRY
        .try_with(|r| f(&mut r.borrow_mut()))
        .unwrap_or_default()
}

#[cfg(target_os = "none")]
mod single {
    #![allow(unsafe_code)]
    use super::*;

    pub(super) struct Global(pub(super) RefCell<Registry>);

    // SAFETY: a freestanding kiln image runs one thread (kiln-rt's executor
    // and the platform's reactor; exception handlers never touch metrics),
    // so the registry and the `Rc`s in it are never reached from two
    // threads.
    unsafe impl Sync for Global {}

    pub(super) static REGISTRY: Global = Global(RefCell::new(Registry {
        next: 0,
        collectors: Vec::new(),
    }));
}

#[cfg(target_os = "none")]
fn with<R: Default>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut single::REGISTRY.0.borrow_mut())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Counter, Kind};

    #[test]
    fn collectors_render_in_order_until_dropped() {
        let hits = Rc::new(Counter::new());
        let h = hits.clone();
        let first = register(move |out: &mut Exposition| {
            out.family("hits_total", "Hits", Kind::Counter)
                .sample(&[], h.get());
        });
        let second = register(|out: &mut Exposition| {
            out.family("up", "Always 1", Kind::Gauge).sample(&[], 1);
        });
        hits.add(5);
        assert_eq!(
            render(),
            "# HELP hits_total Hits\n# TYPE hits_total counter\nhits_total 5\n\
             # HELP up Always 1\n# TYPE up gauge\nup 1\n"
        );
        drop(first);
        assert_eq!(render(), "# HELP up Always 1\n# TYPE up gauge\nup 1\n");
        drop(second);
        assert_eq!(render(), "");
    }
}
