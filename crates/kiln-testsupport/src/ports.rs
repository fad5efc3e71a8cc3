//! Free ports on 127.0.0.1, picked by the kernel.

/// A TCP port on 127.0.0.1 nobody listens on right now. Another process
/// may take it before the test does; callers that must not flake retry.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port on 127.0.0.1")
}

/// A UDP port on 127.0.0.1 nobody uses right now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port on 127.0.0.1")
}
