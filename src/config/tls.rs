//! TLS for `mqtts://` brokers: rustls with the system's roots or a `ca_file`, and optionally
//! a client certificate (`cert_file` + `key_file`) for mutual TLS. The server name checked is
//! the URL's host. Files are read and parsed when the config loads, so a missing or broken
//! file is a config error with its line, not a failure at the first connect.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;

/// Which setting a TLS problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Ca,
    Cert,
    Key,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub which: Which,
    pub message: String,
}

fn err(which: Which, message: String) -> TlsError {
    TlsError { which, message }
}

fn certs(path: &Path, which: Which) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    std::fs::metadata(path)
        .map_err(|e| err(which, format!("cannot read `{}`: {e}", path.display())))?;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(which, format!("`{}`: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                which,
                format!("`{}` is not PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            which,
            format!("`{}` holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// Builds the rustls client config.
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs(path, Which::Ca)? {
                roots
                    .add(cert)
                    .map_err(|e| err(Which::Ca, format!("`{}`: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert); // a system root rustls cannot use is skipped
            }
            if roots.is_empty() {
                return Err(err(
                    Which::Ca,
                    "no system root certificates found (install ca-certificates) and no ca_file given".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(Which::Ca, e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certs(cert, Which::Cert)?;
            std::fs::metadata(key)
                .map_err(|e| err(Which::Key, format!("cannot read `{}`: {e}", key.display())))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                err(
                    Which::Key,
                    format!("`{}` is not a PEM private key: {e}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                err(
                    Which::Key,
                    format!("`{}` does not fit the certificate: {e}", key.display()),
                )
            })?
        }
    };
    Ok(Arc::new(config))
}
