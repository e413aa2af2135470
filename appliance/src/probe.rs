//! `gatehouse health`: asks a running gatehouse whether it is live (`GET /health` on its admin
//! listener), for container health checks and scripts on hosts without curl (a scratch image
//! has nothing else to run).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The address to probe for an admin listener bound to `listen`: a wildcard address is reached
/// over loopback.
pub fn admin_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Whether `GET /health` at `admin` answers 200 within `timeout`; the error says what happened
/// instead. Plain HTTP/1.1 over one connection, as the admin listener speaks it: no client
/// stack (and no TLS roots) is needed in a scratch image or a bare chroot.
pub fn probe(admin: SocketAddr, timeout: Duration) -> Result<(), String> {
    let failed = |err: std::io::Error| format!("{admin}: {err}");
    let mut stream = TcpStream::connect_timeout(&admin, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: gatehouse-health\r\nConnection: close\r\n\r\n"
    )
    .map_err(failed)?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .map_err(failed)?;
    let status_line = status_line.trim_end();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("{admin} answered {status_line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_probed_over_loopback() {
        for (listen, probed) in [
            ("0.0.0.0:9901", "127.0.0.1:9901"),
            ("[::]:9901", "[::1]:9901"),
            ("10.0.0.5:9901", "10.0.0.5:9901"),
        ] {
            assert_eq!(admin_address(listen.parse().unwrap()).to_string(), probed);
        }
    }

    #[test]
    fn a_dead_port_and_a_wrong_answer_are_errors_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 512];
            let _ = std::io::Read::read(&mut stream, &mut request);
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        });
        let err = probe(addr, Duration::from_secs(2)).unwrap_err();
        assert!(
            err.contains("503") && err.contains(&addr.to_string()),
            "{err}"
        );
        server.join().unwrap();
        let err = probe(addr, Duration::from_secs(2)).unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
