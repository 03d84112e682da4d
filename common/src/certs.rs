//! Issuing gfs certificates with rcgen: the throwaway CA of `gfs server`,
//! the operator's self-managed CA (when cert-manager is absent) and test
//! clusters. The subject carries the identity (see [`crate::auth`]):
//! CN = user, O = group, OU = role.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::OffsetDateTime;

use crate::auth::{Role, check_name};
use crate::error::{Error, Result};
use crate::tls::TlsFiles;

/// Validity of a generated CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of a generated component certificate.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before they are issued (clock skew).
const BACKDATE: Duration = Duration::from_secs(3600);

fn rc(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

fn window(validity: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - BACKDATE, now + validity)
}

/// A certificate authority that can sign component certificates.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a certificate says about its holder.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject CN: the user (or component) name.
    pub user: String,
    /// Subject O: a group, if any.
    pub group: Option<String>,
    /// Subject OU: the role.
    pub role: Role,
    /// DNS names (SAN), for tools that check names; gfs itself checks roles.
    pub dns_names: Vec<String>,
    /// IP addresses (SAN).
    pub ips: Vec<IpAddr>,
    /// How long it is valid.
    pub validity: Duration,
}

impl CertSpec {
    /// A spec for `user` with `role`, valid for [`CERT_VALIDITY`].
    pub fn new(user: impl Into<String>, role: Role) -> Self {
        CertSpec {
            user: user.into(),
            group: None,
            role,
            dns_names: vec!["localhost".into()],
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            validity: CERT_VALIDITY,
        }
    }
}

/// A signed certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl Authority {
    /// Generates a new CA named `name`, valid for `validity`.
    pub fn generate(name: &str, validity: Duration) -> Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA params"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = window(validity);
        let key = KeyPair::generate().map_err(rc("CA key"))?;
        let cert = params.self_signed(&key).map_err(rc("CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Authority { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// Loads a CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::InvalidArgument(format!("CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| Error::InvalidArgument(format!("CA certificate: {e}")))?;
        Ok(Authority { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    /// The CA certificate (PEM): what every component trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for `spec`, usable as TLS server and client.
    pub fn issue(&self, spec: &CertSpec) -> Result<Issued> {
        check_name("user", &spec.user)?;
        if let Some(g) = &spec.group {
            check_name("group", g)?;
        }
        let mut params = CertificateParams::new(spec.dns_names.clone())
            .map_err(|e| Error::InvalidArgument(format!("certificate names {:?}: {e}", spec.dns_names)))?;
        params.subject_alt_names.extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(DnType::CommonName, spec.user.as_str());
        if let Some(g) = &spec.group {
            params.distinguished_name.push(DnType::OrganizationName, g.as_str());
        }
        params.distinguished_name.push(DnType::OrganizationalUnitName, spec.role.name());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        (params.not_before, params.not_after) = window(spec.validity);
        let key = KeyPair::generate().map_err(rc("key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rc("certificate"))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename), with
/// mode 0600 for keys.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let io = |e| Error::io(format!("write {}", path.display()), e);
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The certificate files of a local cluster (`gfs server`), in one folder:
/// `ca.crt`/`ca.key`, and a folder per component in the Kubernetes TLS
/// Secret layout (`<name>/tls.crt`, `tls.key`, `ca.crt`), which is what
/// `--tls-dir` takes.
#[derive(Debug, Clone)]
pub struct LocalPki {
    dir: PathBuf,
}

impl LocalPki {
    /// Opens `dir`, generating the CA on first use (an existing CA is
    /// reused, so certificates stay valid across restarts).
    pub fn open(dir: &Path) -> Result<(LocalPki, Authority)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = if crt.exists() && key.exists() {
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io(format!("read {}", p.display()), e));
            Authority::from_pem(&read(&crt)?, &read(&key)?)?
        } else {
            let ca = Authority::generate("gfs local CA", CA_VALIDITY)?;
            write_file(&key, ca.key_pem(), true)?;
            write_file(&crt, ca.cert_pem(), false)?;
            ca
        };
        Ok((LocalPki { dir: dir.to_path_buf() }, ca))
    }

    /// The files of component `name`, issuing them with `ca` when missing
    /// or not valid for at least another day.
    pub fn component(&self, ca: &Authority, name: &str, spec: &CertSpec) -> Result<TlsFiles> {
        let files = self.files(name);
        let io = |e| Error::io(format!("create {}", self.dir.join(name).display()), e);
        std::fs::create_dir_all(self.dir.join(name)).map_err(io)?;
        // The CA copy is refreshed too if the CA was replaced.
        if std::fs::read_to_string(&files.ca).ok().as_deref() != Some(ca.cert_pem()) {
            write_file(&files.ca, ca.cert_pem(), false)?;
        }
        let fresh = crate::tls::Tls::load(files.clone()).is_ok_and(|t| {
            let id = t.identity();
            id.user == spec.user && id.roles.contains(spec.role)
        }) && valid_for(&files.cert, Duration::from_secs(24 * 3600));
        if !fresh {
            let issued = ca.issue(spec)?;
            write_file(&files.key, &issued.key_pem, true)?;
            write_file(&files.cert, &issued.cert_pem, false)?;
        }
        Ok(files)
    }

    /// Paths of component `name` (which may not exist yet).
    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(&self.dir.join(name))
    }
}

/// What a certificate says, read back from its PEM (the operator decides
/// from this when to issue it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject CN.
    pub common_name: String,
    /// Subject OUs (the roles).
    pub org_units: Vec<String>,
    /// DNS names of the SAN extension.
    pub dns_names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Parses the first certificate of `pem`.
    pub fn parse(pem: &str) -> Result<CertInfo> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        use x509_parser::extensions::GeneralName;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let bad = |what: String| Error::InvalidArgument(format!("certificate: {what}"));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
        let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().unwrap_or_default().to_string();
        let subject = cert.subject();
        let common_name = subject.iter_common_name().next().map(text).unwrap_or_default();
        let org_units = subject.iter_organizational_unit().map(text).collect();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(bad(e.to_string())),
        };
        let v = cert.validity();
        Ok(CertInfo {
            common_name,
            org_units,
            dns_names,
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
        })
    }
}

/// True if the certificate in `path` is still valid `margin` from now.
fn valid_for(path: &Path, margin: Duration) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok(der) = CertificateDer::from_pem_file(path) else { return false };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else { return false };
    let end = cert.validity().not_after.timestamp();
    let limit = OffsetDateTime::now_utc() + margin;
    end > limit.unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::tls::{Tls, identity_of};

    #[test]
    fn issued_certificates_carry_the_identity_and_load() {
        let ca = Authority::generate("test CA", CA_VALIDITY).unwrap();
        let mut spec = CertSpec::new("alice", Role::Client);
        spec.group = Some("eng".into());
        let c = ca.issue(&spec).unwrap();
        let tls = Tls::from_pem(&c.cert_pem, &c.key_pem, ca.cert_pem()).unwrap();
        let id = tls.identity();
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["eng".to_string()]);
        assert!(id.roles.contains(Role::Client) && !id.roles.contains(Role::Admin));
        // Reloaded from its PEM, the CA signs certificates the first trusts.
        let again = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let m = again.issue(&CertSpec::new("m0", Role::Master)).unwrap();
        assert!(Tls::from_pem(&m.cert_pem, &m.key_pem, ca.cert_pem()).is_ok());
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(m.cert_pem.as_bytes()).unwrap();
        assert!(identity_of(&der).unwrap().roles.contains(Role::Master));
    }

    #[test]
    fn material_that_does_not_fit_is_refused_with_a_clear_error() {
        use rustls::pki_types::pem::PemObject;
        let ca = Authority::generate("ca one", CA_VALIDITY).unwrap();
        let other = Authority::generate("ca two", CA_VALIDITY).unwrap();
        let a = ca.issue(&CertSpec::new("a", Role::Client)).unwrap();
        let b = ca.issue(&CertSpec::new("b", Role::Client)).unwrap();
        let e = Tls::from_pem(&a.cert_pem, &b.key_pem, ca.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("does not match the certificate"), "{e}");
        let e = Tls::from_pem(&a.cert_pem, &a.key_pem, other.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("not valid under the CA"), "{e}");
        let e = Tls::from_pem("", &a.key_pem, ca.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let mut expired = CertSpec::new("old", Role::Client);
        expired.validity = Duration::ZERO;
        let old = ca.issue(&expired).unwrap();
        // Issued valid from one hour ago until now: expired by the time it loads.
        std::thread::sleep(Duration::from_millis(1100));
        let e = Tls::from_pem(&old.cert_pem, &old.key_pem, ca.cert_pem()).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
        let _ = rustls::pki_types::CertificateDer::from_pem_slice(a.cert_pem.as_bytes()).unwrap();
    }

    #[test]
    fn cert_info_reads_back_the_subject_names_and_validity() {
        let ca = Authority::generate("info CA", CA_VALIDITY).unwrap();
        let mut spec = CertSpec::new("demo-master", Role::Master);
        spec.dns_names = vec!["*.demo-master.ns.svc".into(), "demo.ns.svc".into()];
        spec.validity = Duration::from_secs(7200);
        let c = ca.issue(&spec).unwrap();
        let info = CertInfo::parse(&c.cert_pem).unwrap();
        assert_eq!(info.common_name, "demo-master");
        assert_eq!(info.org_units, vec!["master".to_string()]);
        assert_eq!(info.dns_names, spec.dns_names);
        // Backdated an hour for clock skew.
        assert_eq!(info.not_after - info.not_before, 7200 + 3600);
        assert!(CertInfo::parse("not a certificate").is_err());
    }

    #[test]
    fn local_pki_reuses_its_ca_and_reissues_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, ca) = LocalPki::open(dir.path()).unwrap();
        let files = pki.component(&ca, "master", &CertSpec::new("master", Role::Master)).unwrap();
        let first = std::fs::read_to_string(&files.cert).unwrap();
        let (pki2, ca2) = LocalPki::open(dir.path()).unwrap();
        assert_eq!(ca2.cert_pem(), ca.cert_pem());
        let again = pki2.component(&ca2, "master", &CertSpec::new("master", Role::Master)).unwrap();
        assert_eq!(std::fs::read_to_string(&again.cert).unwrap(), first, "a valid certificate is kept");
        let other = pki2.component(&ca2, "master", &CertSpec::new("master", Role::Admin)).unwrap();
        assert_ne!(std::fs::read_to_string(&other.cert).unwrap(), first, "a different role is reissued");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
