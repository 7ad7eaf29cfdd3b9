//! How tollgate proves itself to Redis: an ACL user and password kept out of
//! the config file, and the TLS material (a private CA, a client certificate).
//!
//! Files are read when the config is loaded (at start, and again on SIGHUP,
//! which then reconnects), so `config check` proves they exist and parse, and
//! a connection never touches the filesystem.

use std::fmt;
use std::path::{Path, PathBuf};

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::secret::Secret;

/// Credentials and TLS settings applied to every connection, on top of what
/// the URLs say (a setting here wins over the URL's own user and password).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `redis.username`: the ACL user.
    pub username: Option<String>,
    /// From `redis.password_file` or `redis.password_env`.
    pub password: Option<Secret>,
    /// `[redis.tls]`; `None`: TLS only as `rediss://` URLs ask, with the system roots.
    pub tls: Option<Tls>,
}

/// `[redis.tls]`, with the files already read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// The private CA (`None`: the system roots).
    pub ca_file: Option<PathBuf>,
    ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (mutual TLS).
    pub cert_file: Option<PathBuf>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate (logged loudly at start).
    pub insecure_skip_verify: bool,
}

/// A problem with one key, for `config check`.
pub type KeyError = (&'static str, String);

impl Tls {
    /// Read and check the files; every problem names its key.
    pub fn load(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        insecure_skip_verify: bool,
    ) -> Result<Tls, Vec<KeyError>> {
        let mut errors = Vec::new();
        let ca_pem = ca_file.and_then(|p| {
            read_pem("redis.tls.ca_file", p, &mut errors, |pem| {
                let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
                if certs.is_empty() {
                    return Err(PemProblem::NoCertificate);
                }
                Ok(())
            })
        });
        let cert = cert_file.and_then(|p| {
            read_pem("redis.tls.cert_file", p, &mut errors, |pem| {
                match CertificateDer::pem_slice_iter(pem).next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(PemProblem::NoCertificate),
                }
            })
        });
        let key = key_file.and_then(|p| {
            read_pem("redis.tls.key_file", p, &mut errors, |pem| {
                PrivateKeyDer::from_pem_slice(pem)
                    .map(|_| ())
                    .map_err(PemProblem::NoKey)
            })
        });
        match (cert_file, key_file) {
            (Some(_), None) => errors.push((
                "redis.tls.key_file",
                "missing: cert_file needs key_file".into(),
            )),
            (None, Some(_)) => errors.push((
                "redis.tls.cert_file",
                "missing: key_file needs cert_file".into(),
            )),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Tls {
            ca_file: ca_file.map(Path::to_path_buf),
            ca_pem,
            cert_file: cert_file.map(Path::to_path_buf),
            client: cert.zip(key),
            insecure_skip_verify,
        })
    }

    /// What redis-rs builds its rustls config from.
    pub(super) fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

/// What is wrong with a TLS file's contents.
#[derive(Debug, thiserror::Error)]
enum PemProblem {
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("holds no PEM certificate")]
    NoCertificate,
    #[error("holds no PEM private key ({0})")]
    NoKey(rustls::pki_types::pem::Error),
}

fn read_pem(
    key: &'static str,
    path: &Path,
    errors: &mut Vec<KeyError>,
    check: impl Fn(&[u8]) -> Result<(), PemProblem>,
) -> Option<Vec<u8>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            errors.push((key, format!("cannot read {}: {e}", path.display())));
            return None;
        }
    };
    match check(&bytes) {
        Ok(()) => Some(bytes),
        Err(e) => {
            errors.push((key, format!("{} is not PEM: {e}", path.display())));
            None
        }
    }
}

/// Read `redis.password_file`: the whole file, one trailing newline dropped.
pub fn read_password_file(path: &Path) -> Result<Secret, PasswordFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let password = crate::secret::strip_one_newline(&text);
    if password.is_empty() {
        return Err(PasswordFileError::Empty(path.to_path_buf()));
    }
    Ok(Secret::new(password))
}

/// A `redis.password_file` that gives no password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
}

/// For logs and `/readyz`: how the connection is protected, never a secret.
impl fmt::Display for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_file {
            Some(ca) => write!(f, "CA: {}", ca.display())?,
            None => f.write_str("CA: system roots")?,
        }
        if let Some(cert) = &self.cert_file {
            write!(f, ", client certificate: {}", cert.display())?;
        }
        if self.insecure_skip_verify {
            f.write_str(", server certificate NOT VERIFIED")?;
        }
        Ok(())
    }
}
