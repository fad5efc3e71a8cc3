//! The two rtnetlink messages that join the container's interface and the
//! unikernel's tap (what `tc qdisc add dev X ingress` and `tc filter add dev
//! X ingress protocol all u32 match u32 0 0 action mirred egress redirect
//! dev Y` send), built as bytes, and the reading of the kernel's answer.
//!
//! Layouts from Linux's uapi headers: `linux/netlink.h` (nlmsghdr, nlattr),
//! `linux/rtnetlink.h` (tcmsg), `linux/pkt_cls.h` (TCA_U32_*, tc_u32_sel),
//! `linux/tc_act/tc_mirred.h` (tc_mirred).

const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_U32_TERMINAL: u8 = 1;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: u32 = 0xffff_0000;
/// `TC_H_INGRESS`, the parent of an ingress qdisc.
const TC_H_INGRESS: u32 = 0xffff_fff1;
const ETH_P_ALL: u16 = 0x0003;

/// A netlink message under construction.
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    /// `struct tcmsg`.
    fn tcmsg(&mut self, ifindex: u32, handle: u32, parent: u32, info: u32) {
        self.buf.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, padding
        self.buf.extend_from_slice(&ifindex.to_ne_bytes());
        self.buf.extend_from_slice(&handle.to_ne_bytes());
        self.buf.extend_from_slice(&parent.to_ne_bytes());
        self.buf.extend_from_slice(&info.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn string(&mut self, kind: u16, s: &str) {
        let mut payload = s.as_bytes().to_vec();
        payload.push(0);
        self.attr(kind, &payload);
    }

    fn begin(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

/// `tc qdisc add dev IFINDEX ingress`.
pub fn ingress_qdisc(ifindex: u32, seq: u32) -> Vec<u8> {
    let mut m = Message::new(RTM_NEWQDISC, CREATE, seq);
    m.tcmsg(ifindex, INGRESS_HANDLE, TC_H_INGRESS, 0);
    m.string(TCA_KIND, "ingress");
    m.finish()
}

/// `tc filter add dev IFINDEX ingress protocol all prio 1 u32 match u32 0 0
/// action mirred egress redirect dev TO`.
pub fn redirect_filter(ifindex: u32, to: u32, seq: u32) -> Vec<u8> {
    let mut m = Message::new(RTM_NEWTFILTER, CREATE, seq);
    let info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
    m.tcmsg(ifindex, 0, INGRESS_HANDLE, info);
    m.string(TCA_KIND, "u32");
    m.begin(TCA_OPTIONS);
    // struct tc_u32_sel with one key that matches everything.
    let mut sel = vec![TC_U32_TERMINAL, 0, 1, 0]; // flags, offshift, nkeys, pad
    sel.extend_from_slice(&[0; 12]); // offmask, off, offoff, hoff, hmask
    sel.extend_from_slice(&[0; 16]); // key: mask, val, off, offmask
    m.attr(TCA_U32_SEL, &sel);
    m.begin(TCA_U32_ACT);
    m.begin(1); // the first action
    m.string(TCA_ACT_KIND, "mirred");
    m.begin(TCA_ACT_OPTIONS);
    // struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex.
    let mut parms = Vec::with_capacity(28);
    parms.extend_from_slice(&0u32.to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes());
    parms.extend_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    parms.extend_from_slice(&0i32.to_ne_bytes());
    parms.extend_from_slice(&0i32.to_ne_bytes());
    parms.extend_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    parms.extend_from_slice(&to.to_ne_bytes());
    m.attr(TCA_MIRRED_PARMS, &parms);
    m.end();
    m.end();
    m.end();
    m.end();
    m.finish()
}

/// The kernel's answer to the request numbered `seq`: `Ok(())` for an
/// acknowledgement, the errno for an error, `None` if `reply` does not
/// hold that answer.
pub fn parse_ack(reply: &[u8], seq: u32) -> Option<Result<(), i32>> {
    let mut rest = reply;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        if len < 16 || len > rest.len() {
            return None;
        }
        if kind == NLMSG_ERROR && msg_seq == seq && len >= 20 {
            let error = i32::from_ne_bytes(rest[16..20].try_into().ok()?);
            return Some(if error == 0 { Ok(()) } else { Err(-error) });
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingress_qdisc_message_is_what_tc_sends() {
        let m = ingress_qdisc(7, 1);
        assert_eq!(m.len(), 16 + 20 + 12);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 36);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(&m[40..48], b"ingress\0");
    }

    #[test]
    fn the_filter_nests_add_up() {
        let m = redirect_filter(7, 9, 2);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        // TCA_OPTIONS spans the rest of the message.
        let options = 16 + 20 + 8;
        let len = u16::from_ne_bytes(m[options..options + 2].try_into().unwrap()) as usize;
        assert_eq!(options + len, m.len());
        // The mirred parameters end the message, with the target's index.
        assert_eq!(u32::from_ne_bytes(m[m.len() - 4..].try_into().unwrap()), 9);
        assert_eq!(
            i32::from_ne_bytes(m[m.len() - 8..m.len() - 4].try_into().unwrap()),
            TCA_EGRESS_REDIR
        );
    }

    #[test]
    fn acks_and_errors_are_told_apart_and_junk_is_not_an_answer() {
        let mut ack = vec![0u8; 36];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(parse_ack(&ack, 5), Some(Ok(())));
        assert_eq!(parse_ack(&ack, 6), None);
        ack[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(parse_ack(&ack, 5), Some(Err(17)));
        assert_eq!(parse_ack(&ack[..10], 5), None);
        let mut bad = ack.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(parse_ack(&bad, 5), None);
    }
}
