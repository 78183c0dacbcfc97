//! Serves the control socket: `status` from the running services' views, and the operations
//! each service declares (`leases` of `dhcp`, …).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::protocol::{Request, Response, MAX_REQUEST_BYTES};
use crate::net::listener::{Clients, Connection, Listener, ListenerSettings};
use crate::service::{self, Entry, Handles, Running, ServiceView, StatusSource};

/// The CLI asks one question at a time; more than this at once is not the CLI.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket's entry in the service list.
pub const SERVICE: Entry = Entry {
    name: "control",
    start,
};

fn start(handles: &mut Handles) -> service::BoxFuture<'_, Result<Option<Running>>> {
    Box::pin(async move {
        let path = handles.cfg.control.socket.clone();
        let server = ControlServer::start(&path, handles.status_source()).await?;
        let view = Arc::new(ControlView { path });
        Ok(Some(Running::stopped_by(view, move || server.stop())))
    })
}

struct ControlView {
    path: PathBuf,
}

impl ServiceView for ControlView {
    fn name(&self) -> &'static str {
        "control"
    }
    fn status(&self) -> Value {
        serde_json::json!({ "socket": self.path.display().to_string() })
    }
    fn summary(&self) -> Vec<String> {
        Vec::new()
    }
    fn metrics(&self, _: &mut crate::metrics::Exposition) {}
}

/// A running control server; removes its socket file when stopped.
pub struct ControlServer {
    path: PathBuf,
    listener: Listener,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket left by a crash) and answers from `source`.
    pub async fn start(path: &Path, source: Arc<StatusSource>) -> Result<ControlServer> {
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
        let socket = UnixListener::bind(path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        // Root and the admin group only: status reveals the network layout.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("setting permissions on {}", path.display()))?;
        let settings = ListenerSettings {
            name: "control socket",
            clients: Clients::Local,
            max_connections: MAX_CONNECTIONS,
        };
        let listener = Listener::spawn(socket, settings, move |conn: Connection<UnixStream>| {
            let source = source.clone();
            async move {
                if let Err(err) = serve(conn.stream, &source).await {
                    tracing::debug!("control client: {err:#}");
                }
            }
        });
        Ok(ControlServer {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// Stops serving and removes the socket file.
    pub async fn stop(self) {
        self.listener.stop().await;
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(stream: UnixStream, source: &StatusSource) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("timed out waiting for a request")??;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => answer(request, source).await,
        Err(err) => Response::Error {
            message: format!("bad request: {err}"),
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

async fn answer(request: Request, source: &StatusSource) -> Response {
    match request {
        Request::Status => Response::Status(Box::new(source.status())),
        Request::Operate {
            service,
            operation,
            args,
        } => {
            let Some(view) = source.view(&service) else {
                let why = if source.known().contains(&service.as_str()) {
                    format!("the {service} service does not run (see its `enabled` key)")
                } else {
                    format!("there is no service {service:?}")
                };
                return Response::Error { message: why };
            };
            if !view.operations().contains(&operation.as_str()) {
                return Response::Error {
                    message: format!(
                        "the {service} service has no operation {operation:?} (it has: {})",
                        view.operations().join(", ")
                    ),
                };
            }
            match view.operate(&operation, args).await {
                Ok(value) => Response::Operated { value },
                Err(err) => Response::Error {
                    message: format!("{service} {operation}: {err:#}"),
                },
            }
        }
    }
}
