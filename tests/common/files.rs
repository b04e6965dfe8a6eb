//! File replacement styles used by certificate rotation tests (in place, write-then-rename,
//! vim, a Kubernetes Secret volume), and small client helpers for rotation tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use tlsedge::pki::Issued;

use super::{PATIENCE, hello, set_mode};

/// Writes `contents` to a temporary file next to `path`, then renames it over `path`
/// (certbot, most editors).
pub fn write_rename(path: &Path, contents: &str) {
    let tmp = tmp_name(path, ".tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    set_mode(&tmp, 0o600);
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A vim `:w` with the default `backupcopy=auto` on Linux: probe the directory with a `4913`
/// file, rename the old file to `name~`, write the new file, delete `name~`.
pub fn vim_save(path: &Path, contents: &str) {
    let dir = path.parent().expect("parent dir");
    let probe = dir.join("4913");
    std::fs::write(&probe, "").expect("write probe");
    std::fs::remove_file(&probe).expect("remove probe");
    let backup = tmp_name(path, "~");
    std::fs::rename(path, &backup).expect("rename to backup");
    std::fs::write(path, contents).expect("write new file");
    set_mode(path, 0o600);
    std::fs::remove_file(&backup).expect("remove backup");
}

/// A certificate and its key in one PEM file (both `cert` and `key` may point at it).
pub fn combined_pem(issued: &Issued) -> String {
    format!("{}{}", issued.cert_pem, issued.key_pem)
}

fn tmp_name(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().expect("file name").to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// A Kubernetes Secret volume as the kubelet lays it out: a timestamped directory holding the
/// files, a `..data` symlink to it, and `tls.crt` / `tls.key` symlinks through `..data`.
pub struct K8sSecret {
    /// The volume's mount directory.
    pub dir: PathBuf,
    current: String,
    swaps: u32,
}

impl K8sSecret {
    /// Creates the volume at `dir` (created if missing) holding `issued`.
    pub fn new(dir: &Path, issued: &Issued) -> Self {
        std::fs::create_dir_all(dir).expect("secret dir");
        let current = "..2026_11_26_00_00_00.1".to_owned();
        Self::fill(&dir.join(&current), issued);
        std::os::unix::fs::symlink(&current, dir.join("..data")).expect("..data link");
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file))
                .expect("file link");
        }
        Self {
            dir: dir.to_owned(),
            current,
            swaps: 1,
        }
    }

    /// The certificate path (`tls.crt`).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    /// The key path (`tls.key`).
    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// The kubelet's atomic update: new timestamped directory, `..data_tmp` symlink to it,
    /// rename over `..data`, remove the old directory.
    pub fn swap(&mut self, issued: &Issued) {
        self.swaps += 1;
        let next = format!("..2026_11_26_00_00_{:02}.{}", self.swaps % 60, self.swaps);
        Self::fill(&self.dir.join(&next), issued);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&next, &tmp).expect("..data_tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(self.dir.join(&self.current)).expect("remove old dir");
        self.current = next;
    }

    fn fill(dir: &Path, issued: &Issued) {
        std::fs::create_dir(dir).expect("timestamped dir");
        std::fs::write(dir.join("tls.crt"), &issued.cert_pem).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), &issued.key_pem).expect("tls.key");
        set_mode(&dir.join("tls.key"), 0o600);
    }
}

/// Sends `payload` on an established connection and checks that the echo backend returns it.
pub async fn echo_roundtrip(tls: &mut TlsStream<TcpStream>, payload: &[u8]) -> std::io::Result<()> {
    tls.write_all(payload).await?;
    tls.flush().await?;
    let mut got = vec![0_u8; payload.len()];
    tokio::time::timeout(PATIENCE, tls.read_exact(&mut got))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    if got != payload {
        return Err(std::io::Error::other(format!(
            "echo mismatch: sent {payload:?}, got {got:?}"
        )));
    }
    Ok(())
}

/// Polls full handshakes to `name` until the server presents `serial`; returns how long that
/// took. Panics after `limit` naming the serial still served.
pub async fn wait_serial(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
    serial: &str,
    limit: Duration,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let last = match hello(addr, name, config).await {
            Ok(reply) if reply.serial == serial => return started.elapsed(),
            Ok(reply) => reply.serial,
            Err(e) => format!("error: {e}"),
        };
        assert!(
            started.elapsed() < limit,
            "{name}: still {last} after {limit:?}, want serial {serial}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Percentile `p` (0..=100) of `samples` (sorted in place); zero if empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
