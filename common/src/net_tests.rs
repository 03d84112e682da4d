//! Tests of the listener: mTLS identities, refusals, per-peer caps and the
//! handshake deadline, on real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

use super::{Incoming, ServerLimits, bind, incoming};
use crate::auth::{Role, Roles};
use crate::certs::{Authority, CA_VALIDITY, CertSpec};
use crate::tls::{Security, Tls};

fn tls_for(ca: &Authority, user: &str, role: Role) -> Arc<Tls> {
    let c = ca.issue(&CertSpec::new(user, role)).unwrap();
    Tls::from_pem(&c.cert_pem, &c.key_pem, ca.cert_pem()).unwrap()
}

async fn listen(limits: ServerLimits, security: Security) -> (SocketAddr, Incoming) {
    let (listener, addr) = bind("127.0.0.1:0").await.unwrap();
    (addr, incoming(listener, &limits, &security))
}

/// Dials `addr` with TLS as `client`, expecting a server with `expect`.
async fn dial(
    addr: SocketAddr,
    client: &Tls,
    expect: &[Role],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let config = client.client_config(Roles::of(expect));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    // TLS 1.3: the server checks the client certificate after the client
    // finished; a refusal shows on the first read.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    Ok(tls)
}

/// True if the peer closed `s` (EOF or reset) within `within`.
async fn closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    // Bytes before the close (a TLS alert) do not count as being served.
    let mut buf = [0u8; 64];
    let until_closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, until_closed).await.is_ok()
}

#[tokio::test]
async fn tls_connections_carry_the_peer_identity() {
    let ca = Authority::generate("ca", CA_VALIDITY).unwrap();
    let (addr, mut conns) = listen(ServerLimits::default(), Security::Tls(tls_for(&ca, "m0", Role::Master))).await;
    let alice = tls_for(&ca, "alice", Role::Client);
    let stream = dial(addr, &alice, &[Role::Master]).await.expect("handshake");
    let session = stream.get_ref().1;
    assert_eq!(session.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let suite = session.negotiated_cipher_suite().map(|s| s.suite());
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    let conn = tokio::time::timeout(Duration::from_secs(5), conns.next()).await.unwrap().unwrap().unwrap();
    let info = conn.connect_info();
    let id = info.identity.expect("identity from the certificate");
    assert_eq!(id.user, "alice");
    assert!(id.roles.contains(Role::Client));
    assert_eq!(info.remote.map(|r| r.ip()), Some("127.0.0.1".parse().unwrap()));
}

#[tokio::test]
async fn peers_outside_the_ca_or_without_the_role_are_refused() {
    let ca = Authority::generate("ca", CA_VALIDITY).unwrap();
    let limits = ServerLimits { handshake_timeout: Duration::from_secs(1), ..Default::default() };
    let (addr, mut conns) = listen(limits, Security::Tls(tls_for(&ca, "m0", Role::Master))).await;
    // A client whose certificate another CA signed (it trusts our CA).
    let rogue_ca = Authority::generate("rogue", CA_VALIDITY).unwrap();
    let c = rogue_ca.issue(&CertSpec::new("mallory", Role::Admin)).unwrap();
    let rogue = Tls::from_pem(&c.cert_pem, &c.key_pem, &format!("{}{}", rogue_ca.cert_pem(), ca.cert_pem())).unwrap();
    match dial(addr, &rogue, &[Role::Master]).await {
        Err(_) => {}
        Ok(mut s) => assert!(closed(&mut s, Duration::from_secs(5)).await, "rogue client kept its connection"),
    }
    // A plaintext client.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    assert!(closed(&mut plain, Duration::from_secs(5)).await, "plaintext kept its connection");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), conns.next()).await.is_err(),
        "a refused connection reached the server"
    );
    // A server whose certificate lacks the role the client expects.
    let (addr2, _conns2) = listen(ServerLimits::default(), Security::Tls(tls_for(&ca, "bob", Role::Client))).await;
    let alice = tls_for(&ca, "alice", Role::Client);
    let e = dial(addr2, &alice, &[Role::Master, Role::Chunkserver]).await.unwrap_err();
    assert!(e.to_string().contains("expected master,chunkserver"), "{e}");
}

async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(addr).await.unwrap()
}

#[tokio::test]
async fn idle_sockets_of_one_peer_cannot_lock_out_the_others() {
    let limits = ServerLimits {
        max_connections: 8,
        max_connections_per_peer: 2,
        handshake_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (addr, mut conns) = listen(limits, Security::Insecure).await;
    // Two silent connections fill 127.0.0.2's share; a third is closed at once.
    let mut idle = vec![connect_from("127.0.0.2", addr).await, connect_from("127.0.0.2", addr).await];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = connect_from("127.0.0.2", addr).await;
    assert!(closed(&mut third, Duration::from_millis(400)).await, "over the per-peer cap but kept");
    // Another peer is still served.
    let mut ok = connect_from("127.0.0.1", addr).await;
    ok.write_all(b"PRI").await.unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(2), conns.next()).await.expect("served").unwrap().unwrap();
    assert_eq!(conn.connect_info().remote.map(|r| r.ip().to_string()), Some("127.0.0.1".into()));
    // The silent ones are closed at the handshake deadline, freeing the share.
    for s in &mut idle {
        assert!(closed(s, Duration::from_secs(3)).await, "silent connection outlived the handshake deadline");
    }
    let mut again = connect_from("127.0.0.2", addr).await;
    again.write_all(b"PRI").await.unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(2), conns.next()).await.expect("served").unwrap().unwrap();
    assert_eq!(conn.connect_info().remote.map(|r| r.ip().to_string()), Some("127.0.0.2".into()));
}

#[tokio::test]
async fn a_silent_tls_peer_is_closed_at_the_handshake_deadline() {
    let ca = Authority::generate("ca", CA_VALIDITY).unwrap();
    let limits = ServerLimits { handshake_timeout: Duration::from_millis(300), ..Default::default() };
    let (addr, _conns) = listen(limits, Security::Tls(tls_for(&ca, "m0", Role::Master))).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut silent, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn renewed_certificate_files_are_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::generate("ca", CA_VALIDITY).unwrap();
    let write = |user: &str, role: Role, ca_pem: &str| {
        let c = ca.issue(&CertSpec::new(user, role)).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &c.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &c.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    };
    write("m0", Role::Master, ca.cert_pem());
    let server = Tls::load(crate::tls::TlsFiles::in_dir(dir.path())).unwrap();
    let (addr, _conns) = listen(ServerLimits::default(), Security::Tls(server.clone())).await;
    let client = tls_for(&ca, "alice", Role::Client);
    dial(addr, &client, &[Role::Master]).await.expect("the first certificate");

    // The files are replaced (a renewed Secret): a certificate of another
    // role, and a CA bundle that also trusts a second CA (a rotation).
    let next = Authority::generate("next ca", CA_VALIDITY).unwrap();
    write("cs0", Role::Chunkserver, &format!("{}{}", ca.cert_pem(), next.cert_pem()));
    assert!(server.reload().unwrap(), "changed files were not taken");
    assert_eq!(server.identity().user, "cs0");
    let e = dial(addr, &client, &[Role::Master]).await.unwrap_err();
    assert!(e.to_string().contains("expected master"), "{e}");
    dial(addr, &client, &[Role::Chunkserver]).await.expect("the renewed certificate");
    // A client of the new CA is trusted now.
    let from_next = next.issue(&CertSpec::new("bob", Role::Client)).unwrap();
    let bundle = format!("{}{}", ca.cert_pem(), next.cert_pem());
    let bob = Tls::from_pem(&from_next.cert_pem, &from_next.key_pem, &bundle).unwrap();
    let mut s = dial(addr, &bob, &[Role::Chunkserver]).await.expect("a client of the new CA");
    assert!(!closed(&mut s, Duration::from_millis(300)).await, "the new CA's client was refused");

    // A broken file keeps the previous material.
    std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
    assert!(server.reload().is_err());
    assert_eq!(server.identity().user, "cs0");
    dial(addr, &client, &[Role::Chunkserver]).await.expect("still served with the last good certificate");
}
