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
    #[error(
        "no agent is answering on {path} ({reason}): is the agent running? See \
         `systemctl status gateway-agent`; if it is, it has another control.socket than this \
         config: pass the agent's own --config"
    )]
    NoAgent {
        /// The socket path.
        path: String,
        /// What connect said.
        reason: String,
    },
    /// The agent answered something unexpected, or too late.
    #[error(
        "the agent on {path} did not answer properly: {reason} (a busy or older agent? \
         `journalctl -u gateway-agent` shows what it is doing; `gateway-agent --version` and \
         the agent's `status --json` version should match)"
    )]
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
        Response::Error { message } => {
            anyhow::bail!("the agent refused {service} {operation}: {message}")
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_agent_names_the_socket_and_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let err = request(&socket, &Request::Status).unwrap_err().to_string();
        assert!(err.starts_with("no agent is answering on "), "{err}");
        assert!(err.contains(&socket.display().to_string()), "{err}");
        assert!(err.contains("systemctl status gateway-agent"), "{err}");
        assert!(err.contains("control.socket"), "{err}");
    }

    #[test]
    fn a_refused_operation_names_the_service_and_operation() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let agent = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let answer = Response::Error {
                message: "the http_proxy service does not run (see its `enabled` key)".into(),
            };
            let mut text = serde_json::to_vec(&answer).unwrap();
            text.push(b'\n');
            stream.write_all(&text).unwrap();
        });
        let err = operate(
            &socket,
            "http_proxy",
            "cache_stats",
            serde_json::Value::Null,
        )
        .unwrap_err()
        .to_string();
        agent.join().unwrap();
        assert_eq!(
            err,
            "the agent refused http_proxy cache_stats: the http_proxy service does not run \
             (see its `enabled` key)"
        );
    }
}
