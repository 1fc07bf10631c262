//! The relay under test: a `waybill serve` child process (so its memory is
//! measured apart from the load generator's), or a relay someone else started.

use super::LoadError;
use super::metrics::{self, Memory};
use crate::enroll::{EnrollRequest, enroll};
use crate::keys::{self, RelayKeys};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use waybill_core::Role;
use waybill_core::credential::Credential;

/// A relay the scenarios talk to.
pub struct RelayUnderTest {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its keys (loaded from its data directory), to issue credentials.
    pub keys: RelayKeys,
    /// Its process id, when known (memory figures need it).
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl RelayUnderTest {
    /// Start `waybill serve` (binary `waybill`) on a free loopback port with its
    /// data in `data`, and wait until it accepts devices.
    pub async fn spawn(waybill: &Path, data: &Path) -> Result<Self, LoadError> {
        // Create the keys first, so this process can sign credentials at once.
        let (keys, _) = keys::load_or_create(data, None, &[])
            .map_err(|e| LoadError::Setup(format!("relay keys in {}: {e}", data.display())))?;
        let addr = free_udp_port()?;
        let log = std::fs::File::create(data.join("relay.log"))
            .map_err(|e| LoadError::Setup(format!("relay log: {e}")))?;
        let child = Command::new(waybill)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("WAYBILL_BENCH_RELAY_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LoadError::Setup(format!("cannot start {}: {e}", waybill.display())))?;
        let relay = Self {
            addr,
            keys,
            pid: Some(child.id()),
            child: Some(child),
        };
        relay.wait_ready(data).await?;
        Ok(relay)
    }

    /// A relay already running at `addr` with its data in `data` (`pid` for
    /// memory figures, if known).
    pub fn external(addr: SocketAddr, data: &Path, pid: Option<u32>) -> Result<Self, LoadError> {
        let (keys, _) = keys::load_or_create(data, None, &[])
            .map_err(|e| LoadError::Setup(format!("relay keys in {}: {e}", data.display())))?;
        Ok(Self {
            addr,
            keys,
            pid,
            child: None,
        })
    }

    async fn wait_ready(&self, data: &Path) -> Result<(), LoadError> {
        let probe = self.credential("bench-probe", Role::Dispatcher, "")?;
        let fleet = super::device::Fleet::new(self.addr, &self.keys.cert_der, 1)?;
        let started = Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                fleet.connect(0, probe.to_bytes(), None, None),
            )
            .await;
            if let Ok(Ok(device)) = attempt {
                device.close().await;
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(LoadError::Setup(format!(
                    "the relay did not accept a device within 30 s (see {})",
                    data.join("relay.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A credential for `device` with `role` (`id`: its store or courier),
    /// valid for a day.
    pub fn credential(&self, device: &str, role: Role, id: &str) -> Result<Credential, LoadError> {
        let (courier, store) = match role {
            Role::Courier => (Some(id.to_owned()), None),
            Role::Store => (None, Some(id.to_owned())),
            Role::Dispatcher => (None, None),
        };
        let request = EnrollRequest {
            role,
            courier,
            store,
            device_id: Some(device.to_owned()),
            relay_addr: self.addr.to_string(),
            valid_for_ms: 24 * 3_600_000,
            now_ms: crate::cli::now_ms(),
        };
        enroll(&self.keys, &request).map_err(|e| LoadError::Setup(e.to_string()))
    }

    /// The relay's memory (zeros when its pid is unknown).
    pub fn memory(&self) -> Memory {
        match self.pid {
            Some(pid) => metrics::memory(Some(pid)),
            None => Memory::default(),
        }
    }

    /// Reset the relay's peak RSS, so the next [`Self::memory`] peak covers what
    /// follows. Returns whether it worked.
    pub fn reset_peak(&self) -> bool {
        self.pid.is_some_and(|pid| metrics::reset_peak(Some(pid)))
    }

    /// Stop a relay this process started (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RelayUnderTest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback UDP port free right now.
fn free_udp_port() -> Result<SocketAddr, LoadError> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| LoadError::Setup(format!("no free UDP port: {e}")))?;
    socket
        .local_addr()
        .map_err(|e| LoadError::Setup(format!("no free UDP port: {e}")))
}

/// A fresh directory `name` under `work` (emptied if it exists).
pub fn fresh_dir(work: &Path, name: &str) -> Result<PathBuf, LoadError> {
    let dir = work.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| LoadError::Setup(format!("{}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| LoadError::Setup(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}
