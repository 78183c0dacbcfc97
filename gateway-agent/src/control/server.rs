//! Serves the control socket.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    task::JoinHandle,
};

use super::protocol::{AgentStatus, Request, Response, MAX_REQUEST_BYTES};
use crate::dhcp::LeaseRecord;

/// What the server answers from: closures over the running services' live state.
pub struct ControlState {
    /// The agent's status now (shared with the metrics endpoint).
    pub status: Arc<dyn Fn() -> AgentStatus + Send + Sync>,
    /// The DHCP leases now (`None`: the DHCP server is off).
    pub leases: Option<Box<dyn Fn() -> Vec<LeaseRecord> + Send + Sync>>,
}

/// A running control server; removes its socket file when stopped.
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket left by a crash) and starts serving.
    pub async fn start(path: &Path, state: ControlState) -> Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another agent is answering on {} (control.socket)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        // Root and the admin group only: status reveals the network layout.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("setting permissions on {}", path.display()))?;
        let state = Arc::new(state);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let state = state.clone();
                        tokio::spawn(async move {
                            if let Err(err) = serve(stream, &state).await {
                                tracing::debug!("control client: {err:#}");
                            }
                        });
                    }
                    Err(err) => {
                        tracing::warn!("control socket accept: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(ControlServer {
            path: path.to_path_buf(),
            task,
        })
    }

    /// Stops serving and removes the socket file.
    pub fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(stream: UnixStream, state: &ControlState) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64));
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .context("timed out waiting for a request")??;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => answer(request, state),
        Err(err) => Response::Error {
            message: format!("bad request: {err}"),
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

fn answer(request: Request, state: &ControlState) -> Response {
    match request {
        Request::Status => Response::Status(Box::new((state.status)())),
        Request::Leases => match &state.leases {
            Some(leases) => Response::Leases { leases: leases() },
            None => Response::Error {
                message: "the DHCP server is disabled (dhcp.enabled = false)".into(),
            },
        },
    }
}
