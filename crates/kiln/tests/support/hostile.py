"""Hostile traffic for crates/kiln/tests/hostile.rs, written as raw
Ethernet frames (AF_PACKET) to an interface inside the test's network
namespace. Every run is bounded in count and time and seeded.

usage: hostile.py IFACE SERVER_MAC SERVER_IP6 COMMAND ARGS...
  flood N RATE      N SYNs to 10.0.0.2:8080 from spoofed 10.0.0.100-249
  garbage N         N malformed frames (checksums, fragments, TCP flags and
                    options, oversized ICMP, ARP noise)
  v6burst           200 router advertisements + 3000 mutated IPv6 TCP
                    frames, in about 0.3 s
  slow N SECS       N connections to 10.0.0.2:8080 sending one byte of a
                    request head every 2 s, for SECS seconds (plain sockets)
  churn RATE SECS   RATE short connections a second for SECS seconds, each
                    GET /robots.txt then close; fails if more than 1 in
                    1,000 is not served
  mutate N          N connections, each sending a mutated request (bytes
                    flipped, inserted, cut) and reading until close or 0.2 s
"""
import random
import socket
import struct
import sys
import time

SERVER4 = socket.inet_aton("10.0.0.2")
PORT = 8080


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, src, kind, payload):
    return dst + src + struct.pack("!H", kind) + payload


def ipv4(src, dst, proto, payload, ident=0, frag=0x4000, ihl_opts=b""):
    ihl = 5 + len(ihl_opts) // 4
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), ident, frag, 64,
                    proto, 0, src, dst) + ihl_opts
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def tcp(src, dst, sport, dport, seq, ack, flags, opts=b"", payload=b"", v6=False):
    opts += b"\0" * (-len(opts) % 4)
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (20 + len(opts)) // 4 << 4, flags,
                    64240, 0, 0) + opts + payload
    if v6:
        ph = src + dst + struct.pack("!IxxxB", len(h), 6)
    else:
        ph = src + dst + struct.pack("!BBH", 0, 6, len(h))
    c = csum(ph + h)
    return h[:16] + struct.pack("!H", c) + h[18:]


def ipv6(src, dst, nxt, payload, hops=64):
    return struct.pack("!IHBB", 0x60000000, len(payload), nxt, hops) + src + dst + payload


def icmp6(src, dst, body):
    ph = src + dst + struct.pack("!IxxxB", len(body), 58)
    c = csum(ph + body)
    return body[:2] + struct.pack("!H", c) + body[4:]


def main():
    iface, server_mac, server6, cmd = sys.argv[1:5]
    args = [int(a) for a in sys.argv[5:]]
    server_mac = bytes(int(x, 16) for x in server_mac.split(":"))
    server6 = socket.inet_pton(socket.AF_INET6, server6)
    rnd = random.Random(19)
    if cmd == "slow":
        return slow(*args)
    if cmd == "churn":
        return churn(*args)
    if cmd == "mutate":
        return mutate(*args)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    me = s.getsockname()[4]
    my4 = socket.inet_aton("10.0.0.1")
    sent = 0
    if cmd == "flood":
        n, rate = args
        start = time.monotonic()
        for i in range(n):
            src = socket.inet_aton("10.0.0.%d" % (100 + i % 150))
            t = tcp(src, SERVER4, 1024 + i % 60000, PORT, rnd.getrandbits(32), 0, 0x02,
                    opts=b"\x02\x04\x05\xb4")
            s.send(eth(server_mac, me, 0x0800, ipv4(src, SERVER4, 6, t)))
            sent += 1
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    elif cmd == "garbage":
        (n,) = args
        for i in range(n):
            kind = i % 8
            sport = 20000 + i % 40000
            if kind == 0:  # bad TCP checksum
                t = bytearray(tcp(my4, SERVER4, sport, PORT, i, 0, 0x02))
                t[16] ^= 0x55
                f = eth(server_mac, me, 0x0800, ipv4(my4, SERVER4, 6, bytes(t)))
            elif kind == 1:  # bad IPv4 header checksum
                p = bytearray(ipv4(my4, SERVER4, 6, tcp(my4, SERVER4, sport, PORT, i, 0, 0x02)))
                p[10] ^= 0xFF
                f = eth(server_mac, me, 0x0800, bytes(p))
            elif kind == 2:  # fragments (first, middle, overlapping)
                frag = [0x2000, 0x2000 | 1, 0x0000 | 2][i % 3]
                f = eth(server_mac, me, 0x0800,
                        ipv4(my4, SERVER4, 6, bytes(rnd.getrandbits(8) for _ in range(64)),
                             ident=i, frag=frag))
            elif kind == 3:  # odd TCP flags
                flags = rnd.choice([0x00, 0x3F, 0x03, 0x06, 0x29, 0xC2, 0x12, 0x11])
                f = eth(server_mac, me, 0x0800,
                        ipv4(my4, SERVER4, 6, tcp(my4, SERVER4, sport, PORT, i, i, flags)))
            elif kind == 4:  # odd TCP options
                opts = rnd.choice([b"\x02\x01", b"\x03\x03\x0f", b"\x08\x0a" + b"\xff" * 8,
                                   b"\x05\x02", b"\x04\x02\x02\x00\x03\x0e\x01", b"\xfe" * 39,
                                   b"\x02\x04\x00\x00"])
                f = eth(server_mac, me, 0x0800,
                        ipv4(my4, SERVER4, 6, tcp(my4, SERVER4, sport, PORT, i, 0, 0x02,
                                                  opts=opts[:40])))
            elif kind == 5:  # oversized / truncated ICMP echo
                body = b"\x08\x00\x00\x00" + struct.pack("!HH", 7, i) + b"x" * 1460
                body = body[:4 + 4 + 1460 - (i % 2) * 1400]
                body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
                p = bytearray(ipv4(my4, SERVER4, 1, body))
                if i % 3 == 0:
                    p[2:4] = struct.pack("!H", 65535)  # claims more than it carries
                f = eth(server_mac, me, 0x0800, bytes(p))
            elif kind == 6:  # ARP noise
                op = rnd.choice([1, 2, 3, 0])
                arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op,
                                  bytes(rnd.getrandbits(8) for _ in range(6)),
                                  socket.inet_aton("10.0.0.%d" % rnd.randrange(256)),
                                  b"\0" * 6, SERVER4 if i % 2 else b"\xff\xff\xff\xff")
                f = eth(b"\xff" * 6 if i % 2 else server_mac, me, 0x0806, arp)
            else:  # random bytes after a valid header
                f = eth(server_mac, me, rnd.choice([0x0800, 0x86DD, 0x0806, 0x1234]),
                        bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 1400))))
            s.send(f)
            sent += 1
    elif cmd == "v6burst":
        all_nodes = socket.inet_pton(socket.AF_INET6, "ff02::1")
        for i in range(200):
            router = socket.inet_pton(socket.AF_INET6, "fe80::%x:%x" % (i + 1, rnd.getrandbits(16)))
            prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:%x::" % i)
            ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
            ra += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600, 3600, 0) + prefix
            ra += b"\x01\x01" + bytes([2, 0, 0, 0, i >> 8, i & 255])
            s.send(eth(b"\x33\x33\x00\x00\x00\x01", me, 0x86DD,
                       ipv6(router, all_nodes, 58, icmp6(router, all_nodes, ra), 255)))
            sent += 1
        base = tcp(b"\0" * 16, server6, 40000, PORT, 1, 0, 0x02, v6=True)
        for i in range(3000):
            src = bytearray(socket.inet_pton(socket.AF_INET6, "fd00::1"))
            src[rnd.randrange(16)] ^= 1 << rnd.randrange(8)
            t = bytearray(tcp(bytes(src), server6, 40000 + i, PORT, i, 0, 0x02, v6=True))
            if i % 2:
                t[rnd.randrange(len(t))] ^= 1 << rnd.randrange(8)
            p = bytearray(ipv6(bytes(src), server6, 6, bytes(t)))
            if i % 5 == 0:
                p[rnd.randrange(len(p))] ^= 1 << rnd.randrange(8)
            s.send(eth(server_mac, me, 0x86DD, bytes(p)))
            sent += 1
        del base
    else:
        sys.exit("unknown command " + cmd)
    print("sent %d frames" % sent)


def slow(n, secs):
    """n connections trickling a request head, one byte every 2 s."""
    conns = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("10.0.0.2", PORT))
        except BlockingIOError:
            pass
        conns.append(c)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    end = time.monotonic() + secs
    at = 0
    while time.monotonic() < end:
        for c in conns:
            try:
                c.send(head[at % len(head):at % len(head) + 1])
            except OSError:
                pass
        at += 1
        time.sleep(min(2, max(0, end - time.monotonic())))
    for c in conns:
        c.close()
    print("trickled %d bytes on %d connections" % (at, n))


def mutate(n):
    """n connections, each one mutated request."""
    rnd = random.Random(20)
    seeds = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
             b"GET /docs/index.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\n\r\n",
             b"HEAD /about.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
             b"GET //docs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"]
    answered = 0
    for i in range(n):
        req = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 6)):
            op = rnd.randrange(3)
            at = rnd.randrange(len(req))
            if op == 0:
                req[at] = rnd.randrange(256)
            elif op == 1:
                req[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
            else:
                del req[at:at + rnd.randrange(1, 8)]
        try:
            c = socket.create_connection(("10.0.0.2", PORT), timeout=1)
            c.settimeout(0.2)
            c.sendall(bytes(req))
            while c.recv(65536):
                pass
            answered += 1
        except OSError:
            pass
        finally:
            try:
                c.close()
            except (OSError, UnboundLocalError):
                pass
    print("sent %d mutated requests, %d answered and closed" % (n, answered))


def churn(rate, secs):
    """rate short connections a second, each one request."""
    start = time.monotonic()
    done = failed = 0
    reasons = {}
    while time.monotonic() - start < secs:
        try:
            c = socket.create_connection(("10.0.0.2", PORT), timeout=2)
            c.settimeout(2)
            c.sendall(b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            c.close()
            if not data.startswith(b"HTTP/1.1 200 "):
                failed += 1
                reasons[repr(data[:20])] = reasons.get(repr(data[:20]), 0) + 1
        except OSError as e:
            failed += 1
            reasons[type(e).__name__] = reasons.get(type(e).__name__, 0) + 1
        done += 1
        ahead = done / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    print("churned %d connections, %d failed %s" % (done, failed, reasons))
    if failed * 1000 > done:
        sys.exit(1)


main()
