//! Certificates: the configured ones, or a self-signed development
//! certificate made at start-up (monolithic mode only).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Paths of a PEM certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Writes a self-signed certificate for `localhost` into `dir` and returns
/// its paths. Browsers and clients must be told to trust it.
pub fn development_certificate(dir: &Path) -> anyhow::Result<CertificateFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).context("generating a development certificate")?;
    let files = CertificateFiles {
        cert: dir.join("dev-cert.pem"),
        key: dir.join("dev-key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem()).context("writing the development certificate")?;
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
    tracing::warn!(
        cert = %files.cert.display(),
        "serving HTTPS with a self-signed development certificate; configure gateway.tls_cert and gateway.tls_key for production"
    );
    Ok(files)
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents).context("writing the development key")
}
