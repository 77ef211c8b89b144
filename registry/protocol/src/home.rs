//! The state directory (`$HARNESS_HOME`, default `$XDG_DATA_HOME/harness`) and the credentials in it.
//!
//! On first start the daemon creates a private CA, a server certificate signed by it and a random
//! access token, each written 0600 into a 0700 directory. Existing files are never regenerated: clients
//! have pinned that CA and hold that token. Everything here is blocking file I/O; async callers wrap it
//! in `blocking::unblock`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";
pub const TOKEN: &str = "token";
/// Written by the daemon once it listens: [`DaemonInfo`].
pub const DAEMON_INFO: &str = "daemon.json";
pub const REGISTRY_DB: &str = "registry.redb";

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot determine the harness state directory: set HARNESS_HOME ({0})")]
    NoHome(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("generating credentials: {0}")]
    Generate(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessHome {
    root: PathBuf,
}

/// The credentials a server needs (PEM text) and a client needs (CA + token).
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How a client finds a running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// e.g. `wss://127.0.0.1:40123/v1/ws`
    pub url: String,
    pub pid: u32,
}

impl HarnessHome {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HarnessHome { root: root.into() }
    }

    /// `$HARNESS_HOME`, else the platform data dir (`~/.local/share/harness` on Linux).
    pub fn from_env() -> Result<Self, HomeError> {
        if let Some(dir) = std::env::var_os("HARNESS_HOME").filter(|v| !v.is_empty()) {
            return Ok(HarnessHome::new(dir));
        }
        use etcetera::BaseStrategy;
        let base =
            etcetera::choose_base_strategy().map_err(|e| HomeError::NoHome(e.to_string()))?;
        Ok(HarnessHome::new(base.data_dir().join("harness")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// Creates the directory (0700) if needed and tightens its mode if it exists.
    pub fn ensure_dir(&self) -> Result<(), HomeError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.root).map_err(io_err(&self.root))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&self.root))?;
        }
        Ok(())
    }

    /// Loads the credentials, creating whichever are missing. `extra_sans` are added to the server
    /// certificate next to `localhost`, `127.0.0.1` and `::1` when it is first created.
    pub fn ensure_credentials(&self, extra_sans: &[String]) -> Result<Credentials, HomeError> {
        self.ensure_dir()?;
        let (ca_cert, ca_key) = (self.path(CA_CERT), self.path(CA_KEY));
        if !ca_cert.exists() || !ca_key.exists() {
            let key = rcgen::KeyPair::generate().map_err(gen_err)?;
            let cert = ca_params()?.self_signed(&key).map_err(gen_err)?;
            write_private(&ca_key, key.serialize_pem().as_bytes())?;
            write_private(&ca_cert, cert.pem().as_bytes())?;
            // A new CA invalidates any old server certificate.
            let _ = fs::remove_file(self.path(SERVER_CERT));
        }
        let ca_pem = read_text(&ca_cert)?;
        let (srv_cert, srv_key) = (self.path(SERVER_CERT), self.path(SERVER_KEY));
        if !srv_cert.exists() || !srv_key.exists() {
            let ca_key_pem = read_text(&ca_key)?;
            let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(gen_err)?;
            let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
            let mut sans = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            sans.extend(extra_sans.iter().filter(|s| !s.is_empty()).cloned());
            sans.dedup();
            let mut params = rcgen::CertificateParams::new(sans).map_err(gen_err)?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "harness daemon");
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2124, 1, 1);
            let key = rcgen::KeyPair::generate().map_err(gen_err)?;
            let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
            write_private(&srv_key, key.serialize_pem().as_bytes())?;
            write_private(&srv_cert, cert.pem().as_bytes())?;
        }
        let token_path = self.path(TOKEN);
        if !token_path.exists() {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| HomeError::Generate(e.to_string()))?;
            write_private(&token_path, hex::encode(bytes).as_bytes())?;
        }
        Ok(Credentials {
            ca_pem,
            server_cert_pem: read_text(&srv_cert)?,
            server_key_pem: read_text(&srv_key)?,
            token: read_text(&token_path)?.trim().to_string(),
        })
    }

    /// What a client needs, without creating anything: the CA and the token.
    pub fn client_credentials(&self) -> Result<(String, String), HomeError> {
        Ok((
            read_text(&self.path(CA_CERT))?,
            read_text(&self.path(TOKEN))?.trim().to_string(),
        ))
    }

    /// The local daemon's certificate (`server.pem`), if there is one: a client may pin it.
    pub fn server_certificate(&self) -> Option<String> {
        fs::read_to_string(self.path(SERVER_CERT)).ok()
    }

    /// Records where the daemon listens (0600, atomically replaced, not synced: see
    /// [`write_runtime`]).
    pub fn write_daemon_info(&self, info: &DaemonInfo) -> Result<(), HomeError> {
        self.ensure_dir()?;
        let path = self.path(DAEMON_INFO);
        let json = serde_json::to_vec_pretty(info).map_err(|e| HomeError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_runtime(&path, &json)
    }

    pub fn read_daemon_info(&self) -> Result<DaemonInfo, HomeError> {
        let path = self.path(DAEMON_INFO);
        let text = read_text(&path)?;
        serde_json::from_str(&text).map_err(|e| HomeError::Invalid {
            path,
            message: e.to_string(),
        })
    }
}

/// The CA's parameters. Signing needs only its name and key usages, so they are rebuilt here rather
/// than parsed back from `ca.pem`.
fn ca_params() -> Result<rcgen::CertificateParams, HomeError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "harness local CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

fn gen_err(e: rcgen::Error) -> HomeError {
    HomeError::Generate(e.to_string())
}

fn read_text(path: &Path) -> Result<String, HomeError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes `bytes` to a temporary 0600 file, fsyncs it and renames it over `path`, so a crash never
/// leaves a half-written key or token.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    write_replacing(path, bytes, true)
}

/// [`write_private`] without the fsync, for what describes the running daemon (`daemon.json`,
/// `daemon.pid`, its last port): a machine crash ends the daemon too, so durability buys nothing
/// there (readers check that the recorded pid is alive), while each sync delays the daemon's
/// start by the disk's flush latency. A reader never sees a half-written file (rename); after
/// a machine crash it may find an empty one, which reads as no daemon.
pub fn write_runtime(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> Result<(), HomeError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}
