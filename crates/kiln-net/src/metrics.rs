//! The stack's metrics: its counters ([`DeviceStats`](crate::DeviceStats))
//! and socket counts, written into `kiln_metrics`' registry only when the
//! metrics are read: counting costs the stack nothing more than it paid
//! already.

use alloc::rc::Weak;

use kiln_metrics::{Exposition, Kind};

use crate::stack::Shared;

/// Writes the families of the stack behind `shared`, if it still exists.
pub(crate) fn collect(shared: &Weak<Shared>, out: &mut Exposition) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let Ok(state) = shared.state.try_borrow() else {
        return;
    };
    let s = state.stats;
    let mut f = out.family(
        "kiln_net_frames_total",
        "Ethernet frames received (handed to the stack) and sent",
        Kind::Counter,
    );
    f.sample(&[("direction", "rx")], s.rx_frames);
    f.sample(&[("direction", "tx")], s.tx_frames);
    let mut f = out.family(
        "kiln_net_bytes_total",
        "Bytes of the Ethernet frames received and sent",
        Kind::Counter,
    );
    f.sample(&[("direction", "rx")], s.rx_bytes);
    f.sample(&[("direction", "tx")], s.tx_bytes);
    let mut f = out.family(
        "kiln_net_dropped_frames_total",
        "Frames lost: receive errors, sends the interface refused or found its queue full, neighbour discovery the guard dropped",
        Kind::Counter,
    );
    f.sample(&[("reason", "rx_error")], s.rx_errors);
    f.sample(&[("reason", "tx_dropped")], s.tx_dropped);
    f.sample(&[("reason", "ndisc_guard")], s.ndisc_dropped);
    out.family(
        "kiln_net_tcp_syn_backlog_dropped_total",
        "Half-open TCP connections dropped for newer ones at --syn-backlog",
        Kind::Counter,
    )
    .sample(&[], s.syn_dropped);
    out.family(
        "kiln_net_tcp_refused_total",
        "TCP connections refused at --max-connections: SYNs to a listener that no socket took (answered with a RST), and connects that failed",
        Kind::Counter,
    )
    .sample(&[], s.tcp_refused);
    out.family(
        "kiln_net_tcp_retransmitted_segments_total",
        "TCP segments sent again: data, SYN or FIN whose sequence numbers were sent before on their connection",
        Kind::Counter,
    )
    .sample(&[], s.tcp_retransmits);
    out.family(
        "kiln_net_stale_deadlines_total",
        "Driver rounds that found a past deadline and did nothing (0 unless smoltcp misbehaves)",
        Kind::Counter,
    )
    .sample(&[], s.stale_deadlines);
    out.family(
        "kiln_net_tcp_sockets",
        "TCP sockets held in any state (listening, open, closing), bounded by --max-connections",
        Kind::Gauge,
    )
    .sample(&[], state.tcp_count as u64);
    out.family(
        "kiln_net_tcp_bulk_sockets",
        "TCP sockets holding the larger bulk buffers (listening ones included), bounded by --tcp-bulk-connections; the rest have --tcp-rx-buffer and --tcp-tx-buffer",
        Kind::Gauge,
    )
    .sample(&[], state.bulk_count as u64);
    out.family(
        "kiln_net_sockets",
        "Sockets held: TCP, UDP and the DHCP client",
        Kind::Gauge,
    )
    .sample(&[], state.sockets.iter().count() as u64);
}
