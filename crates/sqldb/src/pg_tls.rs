//! TLS to PostgreSQL with libpq's `sslmode` meanings (docs/design.md §3.5).
//!
//! The connection URL carries the settings as libpq's do:
//! `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert` (a PEM file of trusted CAs), `sslcert` and
//! `sslkey` (a client certificate and its key, PEM). They are taken out of
//! the URL here, because the driver knows only the first three modes, and
//! turned into a rustls configuration:
//!
//! | mode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` | when the server offers it | not checked |
//! | `require` | always | not checked; checked as `verify-ca` when `sslrootcert` is given (as libpq does) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and issued for the host connected to |
//!
//! Trusted CAs are those of `sslrootcert`, or the machine's certificate store
//! when it is absent (the compiled-in Mozilla roots when the store is empty).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Config;
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{DbError, DbResult, ErrorKind};

const BACKEND: &str = "postgres";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, the certificate not checked.
    #[default]
    Prefer,
    /// TLS always, the certificate not checked (unless a root CA is given).
    Require,
    /// TLS always, the certificate signed by a trusted CA.
    VerifyCa,
    /// TLS always, the certificate signed by a trusted CA and for the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = DbError;

    fn from_str(s: &str) -> DbResult<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // The value is not repeated: it sits in a URL beside a password.
            _ => {
                return Err(invalid(
                    "sslmode: expected disable, prefer, require, verify-ca or verify-full".into(),
                ));
            }
        })
    }
}

impl SslMode {
    /// The name libpq gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of a connection URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: trusted CAs (PEM).
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's key (PEM).
    pub client_key: Option<PathBuf>,
}

/// The query parameters handled here rather than by the driver.
const TLS_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Parses a connection URL into the driver's configuration and the TLS
/// settings. Errors never repeat the URL (it may hold a password).
pub(crate) fn parse_url(url: &str) -> DbResult<(Config, TlsSettings)> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut settings = TlsSettings::default();
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !TLS_PARAMS.contains(&key) {
            kept.push(pair);
            continue;
        }
        let value = percent_decode(value)
            .ok_or_else(|| invalid(format!("{key}: not a valid percent-encoded value")))?;
        match key {
            "sslmode" => settings.mode = value.parse()?,
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(value)),
            "sslcert" => settings.client_cert = Some(PathBuf::from(value)),
            _ => settings.client_key = Some(PathBuf::from(value)),
        }
    }
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&driver_url)
        .map_err(|e| invalid(format!("invalid connection URL: {e}")))?;
    config.ssl_mode(match settings.mode {
        SslMode::Disable => DriverMode::Disable,
        SslMode::Prefer => DriverMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
    });
    if settings.client_cert.is_some() != settings.client_key.is_some() {
        return Err(invalid(
            "sslcert and sslkey go together: give both or neither".into(),
        ));
    }
    Ok((config, settings))
}

/// The TLS connector for `settings`; `None` for `disable`. Reads the
/// certificate files now, so a missing or unreadable file is reported at
/// connect time, naming the file.
pub(crate) fn connector(settings: &TlsSettings) -> DbResult<Option<MakeRustlsConnect>> {
    if settings.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let check_chain = match settings.mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        SslMode::Require => settings.root_cert.is_some(),
        SslMode::Prefer | SslMode::Disable => false,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if check_chain {
        let roots = trusted_roots(settings.root_cert.as_deref())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| invalid(format!("the trusted certificates cannot be used: {e}")))?;
        if settings.mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        }
    } else {
        Arc::new(Unchecked(algorithms))
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs(cert_path, "sslcert")?;
            if let Some(version) = certs
                .first()
                .and_then(|c| x509_version(c))
                .filter(|v| *v < 3)
            {
                return Err(file_error("sslcert", cert_path, &old_version(version)));
            }
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| file_error("sslkey", key_path, &e.to_string()))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                invalid(format!(
                    "the client certificate (sslcert {}) and key (sslkey {}) cannot be used: {e}",
                    cert_path.display(),
                    key_path.display()
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

fn trusted_roots(root_cert: Option<&Path>) -> DbResult<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let (added, _) = roots.add_parsable_certificates(read_certs(path, "sslrootcert")?);
            if added == 0 {
                return Err(file_error(
                    "sslrootcert",
                    path,
                    "holds no usable certificate",
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
    }
    Ok(roots)
}

fn read_certs(path: &Path, what: &str) -> DbResult<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(what, path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Why an X.509 version 1 or 2 client certificate is refused, and how to
/// make the version 3 one that is accepted (docs/design.md §3.5).
fn old_version(version: u8) -> String {
    format!(
        "is an X.509 version {version} certificate, which nodestore's TLS library \
         (rustls) does not accept although libpq does; `openssl x509 -req` as \
         PostgreSQL's documentation shows it makes version 1. Sign the request \
         again with an extension, which makes version 3: add \
         `-extfile <(printf 'basicConstraints=CA:FALSE')` to that command"
    )
}

/// The version of the X.509 certificate `der` (1, 2 or 3), read from its
/// first bytes: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
/// [0] EXPLICIT version DEFAULT v1, ... } ... }`. `None` for what does not
/// parse that far (rustls then says what is wrong with it).
fn x509_version(der: &[u8]) -> Option<u8> {
    /// The position after a DER tag and length at `at`, if the tag is `tag`.
    fn enter(der: &[u8], at: usize, tag: u8) -> Option<usize> {
        if *der.get(at)? != tag {
            return None;
        }
        let first = *der.get(at + 1)?;
        if first < 0x80 {
            return Some(at + 2);
        }
        let n = usize::from(first & 0x7f);
        (1..=4).contains(&n).then_some(at + 2 + n)
    }
    let tbs = enter(der, 0, 0x30)?;
    let inner = enter(der, tbs, 0x30)?;
    if der.get(inner) != Some(&0xa0) {
        return Some(1);
    }
    let int = enter(der, inner, 0xa0)?;
    if der.get(int..int + 2)? != [0x02, 0x01] {
        return None;
    }
    der.get(int + 2).map(|v| v.saturating_add(1))
}

fn file_error(what: &str, path: &Path, why: &str) -> DbError {
    invalid(format!("{what} {}: {why}", path.display()))
}

fn invalid(message: String) -> DbError {
    DbError::new(BACKEND, ErrorKind::Connection, message)
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root CA: the traffic is encrypted and
/// the handshake's signatures checked, but the certificate is taken as it
/// comes, as libpq does in those modes.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Decodes `%XX` escapes (and `+` is kept as is, as libpq does).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn certificate_versions_are_read_from_the_first_bytes() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 } ... } }: version 3.
        let v3 = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x05,
        ];
        assert_eq!(x509_version(&v3), Some(3));
        // No [0] element: version 1 (long-form lengths too).
        let v1 = [0x30, 0x81, 0x06, 0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x05];
        assert_eq!(x509_version(&v1), Some(1));
        // What does not parse that far is left to rustls, never a panic.
        for bad in [&[][..], &[0x30], &[0x30, 0x85], &[0x31, 0x00], &v3[..6]] {
            assert_eq!(x509_version(bad), None, "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn tls_settings_come_out_of_the_url_and_the_rest_goes_to_the_driver() {
        let (config, tls) = parse_url(
            "postgres://u:pw@db.example:5433/node?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(tls.client_cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(tls.client_key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_dbname(), Some("node"));
        assert_eq!(config.get_ssl_mode(), DriverMode::Require);

        let (config, tls) = parse_url("postgres://u@h/db").unwrap();
        assert_eq!(tls, TlsSettings::default());
        assert_eq!(tls.mode, SslMode::Prefer, "libpq's default");
        assert_eq!(config.get_ssl_mode(), DriverMode::Prefer);
        let (config, _) = parse_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), DriverMode::Disable);
    }

    #[test]
    fn bad_tls_settings_are_refused_by_name_without_the_password() {
        for (url, needle) in [
            (
                "postgres://u:secret@h/db?sslmode=allow-ish",
                "sslmode: expected disable",
            ),
            (
                "postgres://u:secret@h/db?sslcert=/c.pem",
                "sslcert and sslkey",
            ),
            ("postgres://u:secret@h/db?sslrootcert=%zz", "sslrootcert"),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        let (_, tls) =
            parse_url("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem").unwrap();
        let e = connector(&tls).err().unwrap().to_string();
        assert!(e.contains("sslrootcert /nonexistent.pem"), "{e}");
    }
}
