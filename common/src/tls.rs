//! mTLS for every gfs connection.
//!
//! TLS 1.3 only (rustls with ring). Both sides present a certificate signed
//! by the cluster CA, the only trust anchor. A peer is identified by its
//! certificate's subject, not by the name it was dialled at (as SPIFFE and
//! service meshes do): chunkservers are dialled at whatever address they
//! advertise, so a host-name check would tie certificates to addresses the
//! CA cannot know in advance. A client connection instead checks that the
//! server's certificate carries the role it expects (a master or a
//! chunkserver), and servers read the caller's roles per request
//! ([`crate::auth::Caller`]).
//!
//! Certificates are files (`--tls-cert`, `--tls-key`, `--tls-ca`), checked
//! again at most every [`RELOAD_INTERVAL`] and reloaded when they change, so
//! a renewed Kubernetes Secret (cert-manager) takes effect without a restart.
//! A reload that fails keeps the previous material and logs why.
//!
//! TLS session tickets are off: every connection is verified against the
//! current CA, and gfs connections are long-lived HTTP/2 anyway.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls::{SignatureScheme, version::TLS13};

use crate::auth::{Identity, Role, Roles, check_name};
use crate::error::{Error, Result};

/// Shortest time between two checks of the certificate files for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The certificate, key and CA files of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of this component (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificate(s) trusted for peers. Several may be listed while
    /// a CA is rotated.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files of a directory in the Kubernetes TLS Secret layout
    /// (cert-manager's too): `tls.crt`, `tls.key`, `ca.crt`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key"), ca: dir.join("ca.crt") }
    }
}

/// The TLS flags every gfs binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Directory with `tls.crt`, `tls.key` and `ca.crt` (a mounted
    /// Kubernetes TLS Secret); the --tls-cert/--tls-key/--tls-ca flags
    /// override single files.
    #[arg(long, env = "GFS_TLS_DIR", value_name = "DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// PEM certificate (chain) of this component, signed by the cluster CA;
    /// its subject names the identity: CN = user, O = group, OU = role
    /// (master, chunkserver, client, admin).
    #[arg(long, env = "GFS_TLS_CERT", value_name = "PEM", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "GFS_TLS_KEY", value_name = "PEM", global = true)]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the cluster CA that every peer must chain to.
    #[arg(long, env = "GFS_TLS_CA", value_name = "PEM", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Run without TLS: plaintext connections, no caller authenticated
    /// (a warning is logged). Only for trials on a trusted machine.
    #[arg(long, env = "GFS_INSECURE", global = true)]
    pub insecure: bool,
}

impl TlsArgs {
    /// Builds the [`Security`] of a server from these flags: `--insecure`
    /// (which logs a warning), or all three files from `--tls-dir` and the
    /// single file flags. Anything else is an error that says what to pass.
    pub fn security(&self) -> Result<Security> {
        let s = self.security_or(None)?;
        if matches!(s, Security::Insecure) {
            tracing::warn!(
                "running without TLS (--insecure): connections are plaintext and callers are not authenticated"
            );
        }
        Ok(s)
    }

    /// As [`TlsArgs::security`] without the warning (a client's choice is
    /// its own), taking `fallback` (a directory in the Secret layout) when
    /// no TLS flag at all is given and it exists.
    pub fn security_or(&self, fallback: Option<&Path>) -> Result<Security> {
        let any_file =
            self.tls_dir.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_ca.is_some();
        if self.insecure {
            if any_file {
                return Err(Error::InvalidArgument("--insecure cannot be combined with TLS flags".into()));
            }
            return Ok(Security::Insecure);
        }
        let dir = self.tls_dir.clone().or_else(|| {
            let d = fallback?;
            (!any_file && d.join("tls.crt").exists()).then(|| d.to_path_buf())
        });
        let base = dir.as_deref().map(TlsFiles::in_dir);
        let pick = |flag: &Option<PathBuf>, from_dir: Option<PathBuf>| flag.clone().or(from_dir);
        let cert = pick(&self.tls_cert, base.as_ref().map(|b| b.cert.clone()));
        let key = pick(&self.tls_key, base.as_ref().map(|b| b.key.clone()));
        let ca = pick(&self.tls_ca, base.as_ref().map(|b| b.ca.clone()));
        match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Security::Tls(Tls::load(TlsFiles { cert, key, ca })?)),
            _ => Err(Error::InvalidArgument(
                "TLS needs a certificate, key and CA: pass --tls-dir DIR (tls.crt, tls.key, ca.crt) or \
                 --tls-cert, --tls-key and --tls-ca (env GFS_TLS_DIR, GFS_TLS_CERT, ...); \
                 pass --insecure to run without TLS"
                    .into(),
            )),
        }
    }
}

/// How a component talks to its peers.
#[derive(Clone, Default)]
pub enum Security {
    /// Plaintext, nobody authenticated (`--insecure`; tests build configs
    /// in code with this default).
    #[default]
    Insecure,
    /// Mutual TLS with this material.
    Tls(Arc<Tls>),
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Security::Insecure => f.write_str("Insecure"),
            Security::Tls(t) => write!(f, "Tls({})", t.identity().user),
        }
    }
}

impl Security {
    /// Returns the TLS material, if any.
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        match self {
            Security::Tls(t) => Some(t),
            Security::Insecure => None,
        }
    }
}

/// The crypto provider of every gfs TLS config (ring, as kube's client),
/// with AES-128-GCM first: the data path encrypts every chunk byte once per
/// hop of the replica chain, and AES-128 is markedly cheaper than AES-256
/// at the same standard of security for this use.
fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        use rustls::crypto::ring::cipher_suite::{
            TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
        };
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
        Arc::new(p)
    })
    .clone()
}

/// Returns the identity in a certificate: CN = user, each O = a group,
/// each OU naming a role = that role (others are ignored).
pub fn identity_of(der: &[u8]) -> Result<Identity> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::Unauthenticated(format!("unparsable certificate: {e}")))?;
    let subject = cert.subject();
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        a.as_str().map(str::to_string).map_err(|e| Error::Unauthenticated(format!("certificate subject: {e}")))
    };
    let user = match subject.iter_common_name().next() {
        Some(cn) => text(cn)?,
        None => return Err(Error::Unauthenticated("certificate has no subject CN (the user name)".into())),
    };
    check_name("certificate CN", &user)?;
    let mut groups = Vec::new();
    for o in subject.iter_organization() {
        let g = text(o)?;
        check_name("certificate O (group)", &g)?;
        groups.push(g);
    }
    let mut roles = Roles::default();
    for ou in subject.iter_organizational_unit() {
        if let Some(r) = Role::parse(&text(ou)?) {
            roles.insert(r);
        }
    }
    Ok(Identity { user, groups, roles })
}

/// Parsed certificate material and the verifiers built from it.
struct Material {
    key: Arc<CertifiedKey>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    identity: Identity,
}

impl Material {
    /// Parses PEM text; `names` describes where each part came from, for
    /// the error messages.
    fn parse(cert: &[u8], key: &[u8], ca: &[u8], names: [&str; 3]) -> Result<Material> {
        let bad = |i: usize, why: String| Error::InvalidArgument(format!("TLS {}: {why}", names[i]));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(0, format!("bad PEM: {e}")))?;
        if chain.is_empty() {
            return Err(bad(0, "no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(1, format!("no usable private key: {e}")))?;
        let key = CertifiedKey::from_der(chain.clone(), key, &provider())
            .map_err(|e| bad(1, format!("does not match the certificate: {e}")))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            let c = c.map_err(|e| bad(2, format!("bad PEM: {e}")))?;
            roots.add(c).map_err(|e| bad(2, format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad(2, "no CA certificate in the file".into()));
        }
        let roots = Arc::new(roots);
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| bad(2, e.to_string()))?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad(2, e.to_string()))?;
        // Our own certificate must chain to the CA we trust (peers use the
        // same CA), and be valid now: fail at start, not at each handshake.
        let name = ServerName::try_from("gfs.invalid").expect("static name");
        match server_verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(bad(0, format!("not valid under the CA in {}: {e}", names[2]))),
        }
        let identity = identity_of(&chain[0]).map_err(|e| bad(0, e.to_string()))?;
        Ok(Material { key: Arc::new(key), server_verifier, client_verifier, identity })
    }
}

/// File modification stamps of the three files.
type Stamp = [Option<(SystemTime, u64)>; 3];

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [one(&files.cert), one(&files.key), one(&files.ca)]
}

fn read_files(files: &TlsFiles) -> Result<Material> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::InvalidArgument(format!("TLS {}: {e}", p.display())));
    let (c, k, a) = (read(&files.cert)?, read(&files.key)?, read(&files.ca)?);
    let names = [files.cert.display().to_string(), files.key.display().to_string(), files.ca.display().to_string()];
    Material::parse(&c, &k, &a, [&names[0], &names[1], &names[2]])
}

/// The current material, reloaded from files when they change.
struct Store {
    files: Option<TlsFiles>,
    current: RwLock<Arc<Material>>,
    /// Stamp of the loaded files, and when to look at them again.
    check: Mutex<(Stamp, Instant)>,
}

impl Store {
    fn current(&self) -> Arc<Material> {
        if self.files.is_some() {
            let due = self.check.lock().map(|c| Instant::now() >= c.1).unwrap_or(false);
            if due && let Err(e) = self.reload() {
                tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificates");
            }
        }
        self.current.read().expect("tls material lock").clone()
    }

    /// Reloads the files if they changed since the last load. Returns true
    /// when new material was taken.
    fn reload(&self) -> Result<bool> {
        let Some(files) = &self.files else { return Ok(false) };
        let now = stamp(files);
        {
            let mut check = self.check.lock().expect("tls check lock");
            check.1 = Instant::now() + RELOAD_INTERVAL;
            if check.0 == now {
                return Ok(false);
            }
        }
        let m = read_files(files)?;
        tracing::info!(user = %m.identity.user, roles = %m.identity.roles, cert = %files.cert.display(), "TLS certificates reloaded");
        *self.current.write().expect("tls material lock") = Arc::new(m);
        self.check.lock().expect("tls check lock").0 = now;
        Ok(true)
    }
}

/// A component's TLS material and the rustls configs built over it.
pub struct Tls {
    store: Arc<Store>,
    server: Arc<ServerConfig>,
    clients: Mutex<HashMap<Roles, Arc<ClientConfig>>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls({:?})", self.identity())
    }
}

impl Tls {
    /// Loads the files and checks them: the key matches the certificate,
    /// the certificate is valid now under the CA, and its subject names a
    /// user. They are reloaded when they change (see the module docs).
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>> {
        let m = read_files(&files)?;
        let st = stamp(&files);
        Self::build(Some(files), m, st)
    }

    /// Builds from PEM text (tests, generated certificates).
    pub fn from_pem(cert: &str, key: &str, ca: &str) -> Result<Arc<Tls>> {
        let m = Material::parse(cert.as_bytes(), key.as_bytes(), ca.as_bytes(), ["cert", "key", "ca"])?;
        Self::build(None, m, [None; 3])
    }

    fn build(files: Option<TlsFiles>, m: Material, st: Stamp) -> Result<Arc<Tls>> {
        let store = Arc::new(Store {
            files,
            current: RwLock::new(Arc::new(m)),
            check: Mutex::new((st, Instant::now() + RELOAD_INTERVAL)),
        });
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13])
            .map_err(|e| Error::Internal(format!("tls server config: {e}")))?
            .with_client_cert_verifier(Arc::new(ClientVerifier { store: store.clone() }))
            .with_cert_resolver(Arc::new(KeyResolver { store: store.clone() }));
        server.alpn_protocols = vec![b"h2".to_vec()];
        server.send_tls13_tickets = 0;
        Ok(Arc::new(Tls { store, server: Arc::new(server), clients: Mutex::new(HashMap::new()) }))
    }

    /// This component's own identity (its certificate's subject).
    pub fn identity(&self) -> Identity {
        self.store.current().identity.clone()
    }

    /// Checks the files now (not waiting for [`RELOAD_INTERVAL`]); returns
    /// true when changed files were loaded.
    pub fn reload(&self) -> Result<bool> {
        self.store.reload()
    }

    /// The server side: TLS 1.3, a client certificate under the CA required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The client side for connections whose server must hold one of
    /// `expect` (empty: any certificate under the CA).
    pub fn client_config(&self, expect: Roles) -> Arc<ClientConfig> {
        let mut clients = self.clients.lock().expect("tls clients lock");
        if let Some(c) = clients.get(&expect) {
            return c.clone();
        }
        let verifier = Arc::new(ServerVerifier { store: self.store.clone(), expect });
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13])
            .expect("TLS 1.3 is supported by ring")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(KeyResolver { store: self.store.clone() }));
        c.alpn_protocols = vec![b"h2".to_vec()];
        c.resumption = rustls::client::Resumption::disabled();
        let c = Arc::new(c);
        clients.insert(expect, c.clone());
        c
    }
}

/// Presents the current certificate, as server and as client.
#[derive(Debug)]
struct KeyResolver {
    store: Arc<Store>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({:?})", self.files)
    }
}

impl ResolvesServerCert for KeyResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.current().key.clone())
    }
}

impl ResolvesClientCert for KeyResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.store.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server side: the client's certificate must chain to the current CA.
#[derive(Debug)]
struct ClientVerifier {
    store: Arc<Store>,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.store.current().client_verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.store.current().client_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.store.current().client_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store.current().client_verifier.supported_verify_schemes()
    }
}

/// Client side: the server's certificate must chain to the current CA and
/// carry one of the expected roles; the dialled name is not checked (see
/// the module docs).
#[derive(Debug)]
struct ServerVerifier {
    store: Arc<Store>,
    expect: Roles,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let m = self.store.current();
        match m.server_verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if !self.expect.is_empty() {
            let id = identity_of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
            if !Role::ALL.iter().any(|r| self.expect.contains(*r) && id.roles.contains(*r)) {
                return Err(rustls::Error::General(format!(
                    "server certificate of {} has role {}, expected {}",
                    id.user, id.roles, self.expect
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.store.current().server_verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.store.current().server_verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.store.current().server_verifier.supported_verify_schemes()
    }
}
