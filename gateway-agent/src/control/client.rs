//! The CLI's side of the control socket (blocking: the CLI has no runtime).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::protocol::{Request, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no agent is answering on {path} ({reason})")]
    NoAgent {
        /// The socket path.
        path: String,
        /// What connect said.
        reason: String,
    },
    /// The agent answered something unexpected, or too late.
    #[error("the agent on {path} did not answer properly: {reason}")]
    BadAnswer {
        /// The socket path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Runs `operation` of `service` with `args`: what it returned, or why not (the agent's
/// refusal, or an answer that is not an operation's).
pub fn operate(
    socket: &Path,
    service: &str,
    operation: &str,
    args: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let asked = Request::Operate {
        service: service.into(),
        operation: operation.into(),
        args,
    };
    match request(socket, &asked)? {
        Response::Operated { value } => Ok(value),
        Response::Error { message } => anyhow::bail!("the agent refused: {message}"),
        other => anyhow::bail!("the agent answered something else: {other:?}"),
    }
}

/// Sends `request` and reads the response, waiting at most 5 s.
pub fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    request_within(socket, request, Duration::from_secs(5))
}

/// Sends `request` and reads the response, waiting at most `timeout` (operations that walk
/// a store, like the registry's GC, take longer than a status read).
pub fn request_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let path = socket.display().to_string();
    let bad = |reason: String| ClientError::BadAnswer {
        path: path.clone(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(|err| ClientError::NoAgent {
        path: path.clone(),
        reason: err.to_string(),
    })?;
    let timeout = Some(timeout);
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| bad(e.to_string()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| bad(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| bad(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(answer.trim()).map_err(|e| bad(format!("{e}: {answer:?}")))
}

/// Whether an agent answers on `socket`.
pub fn agent_answers(socket: &Path) -> bool {
    matches!(request(socket, &Request::Status), Ok(Response::Status(_)))
}
