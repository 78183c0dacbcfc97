//! One SOCKS connection: handshake (tor-socksproto), then CONNECT, RESOLVE or RESOLVE_PTR.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tor_socksproto::{
    Buffer, Error as SocksError, Handshake, NextStep, SocksAddr, SocksCmd, SocksProxyHandshake,
    SocksRequest, SocksStatus, SocksVersion,
};

use super::reply::{self, code};
use super::Shared;
use crate::egress::{EgressError, Host, Isolation, Target};

/// Serves one client until it is done; never panics on what the client sends.
pub(super) async fn serve(mut stream: TcpStream, peer: IpAddr, shared: &Shared) {
    let counters = &shared.counters;
    counters.connections.fetch_add(1, Relaxed);
    counters.active.fetch_add(1, Relaxed);
    let handshake = tokio::time::timeout(shared.settings.handshake_timeout, handshake(&mut stream))
        .await
        .unwrap_or(Err("handshake_timeout"));
    match handshake {
        Ok(request) => serve_request(&mut stream, peer, request, shared).await,
        Err(reason) => {
            counters.failure(reason);
            if shared.settings.log_queries {
                tracing::info!(client = %peer, reason, "SOCKS handshake failed");
            }
        }
    }
    let _ = stream.shutdown().await;
    counters.active.fetch_sub(1, Relaxed);
}

/// Runs the handshake to a request. On a request the codec rejects, answers what RFC 1928
/// asks for (07, 08, 01, or SOCKS4's 0x5b) when there is a request to answer; a bad version
/// or a truncated handshake is just closed. The error is the failure counter's name.
async fn handshake(stream: &mut TcpStream) -> Result<SocksRequest, &'static str> {
    let mut hs = SocksProxyHandshake::new();
    // Precise reads: nothing past the request is consumed, so data a client sends early stays
    // in the socket for the stream.
    let mut buf = Buffer::new_precise();
    let mut version = None;
    let mut socks5_request_stage = false;
    let mut socks5_auth_stage = false;
    let err = loop {
        match hs.step(&mut buf) {
            Ok(NextStep::Recv(mut recv)) => {
                let n = stream.read(recv.buf()).await.map_err(|_| "io_error")?;
                if n == 0 {
                    return Err("truncated");
                }
                recv.note_received(n).map_err(|_| "truncated")?;
                if version.is_none() {
                    version = buf.filled_slice().first().copied();
                }
            }
            Ok(NextStep::Send(data)) => {
                stream.write_all(&data).await.map_err(|_| "io_error")?;
                // [5, 0]: no authentication chosen; [1, 0]: credentials taken. Either way the
                // request comes next.
                socks5_request_stage = data == [5, 0] || data == [1, 0];
                socks5_auth_stage = data == [5, 2];
            }
            Ok(NextStep::Finished(done)) => return done.into_output().map_err(|_| "malformed"),
            Err(err) => break err,
        }
    };
    let request = buf.filled_slice();
    let (answer, reason): (&[u8], &'static str) = match (&err, version) {
        (SocksError::BadProtocol(_), _) => (&[], "bad_version"),
        (_, Some(5)) if socks5_request_stage => {
            let rejection = reply::socks5_rejection(request);
            let reason = match rejection {
                code::COMMAND_NOT_SUPPORTED => "unsupported_command",
                code::ADDRTYPE_NOT_SUPPORTED => "unsupported_address",
                _ => "malformed",
            };
            let _ = stream.write_all(&reply::socks5_reply(rejection)).await;
            return Err(reason);
        }
        // RFC 1929: a status other than 0 fails the sub-negotiation.
        (_, Some(5)) if socks5_auth_stage => (&[1, 1], "bad_auth"),
        (SocksError::NotImplemented(_), Some(5)) => {
            (&reply::SOCKS5_NO_METHODS, "no_acceptable_auth")
        }
        (_, Some(5)) => (&[], "malformed"),
        (_, Some(4)) => {
            let reason = match request.get(1) {
                Some(1) | Some(0xf0) | Some(0xf1) | None => "malformed",
                Some(_) => "unsupported_command",
            };
            (&reply::SOCKS4_REJECTED, reason)
        }
        _ => (&[], "malformed"),
    };
    if !answer.is_empty() {
        let _ = stream.write_all(answer).await;
    }
    Err(reason)
}

async fn serve_request(
    stream: &mut TcpStream,
    peer: IpAddr,
    request: SocksRequest,
    shared: &Shared,
) {
    let isolation = reply::isolation_key(peer, request.auth(), &shared.hasher);
    let outcome = match request.command() {
        SocksCmd::CONNECT => connect(stream, &request, &isolation, shared).await,
        SocksCmd::RESOLVE => resolve(stream, &request, &isolation, shared).await,
        SocksCmd::RESOLVE_PTR => resolve_ptr(stream, &request, &isolation, shared).await,
        // The codec only lets the three above through; answer anything else all the same.
        _ => Err(Failure::Code(
            code::COMMAND_NOT_SUPPORTED,
            "unsupported_command",
        )),
    };
    let outcome_text = match outcome {
        Ok(()) => "ok".to_owned(),
        Err(failure) => {
            let (status, reason, text) = match &failure {
                Failure::Egress(err) => (
                    reply::status_for(err),
                    reply::reason_for(err),
                    err.to_string(),
                ),
                Failure::Code(c, reason) => (SocksStatus::from(*c), *reason, (*reason).to_owned()),
            };
            shared.counters.failure(reason);
            if let Ok(bytes) = request.reply(status, None) {
                let _ = stream.write_all(&bytes).await;
            }
            text
        }
    };
    if shared.settings.log_queries {
        tracing::info!(
            client = %peer,
            command = %request.command(),
            target = %request.addr(),
            port = request.port(),
            isolation = %isolation.0,
            outcome = %outcome_text,
            "SOCKS request"
        );
    }
}

/// Why a request failed: an egress or lookup error, or a reply code with its counter name.
enum Failure {
    Egress(EgressError),
    Code(u8, &'static str),
}

impl From<EgressError> for Failure {
    fn from(err: EgressError) -> Self {
        Failure::Egress(err)
    }
}

async fn connect(
    stream: &mut TcpStream,
    request: &SocksRequest,
    isolation: &Isolation,
    shared: &Shared,
) -> Result<(), Failure> {
    let target = Target {
        host: host_of(request.addr()),
        port: request.port(),
    };
    let mut outbound = tokio::time::timeout(
        shared.settings.connect_timeout,
        shared.connector.connect(&target, isolation),
    )
    .await
    .map_err(|_| Failure::Code(code::TTL_EXPIRED, "timeout"))??;
    let ok = request
        .reply(SocksStatus::SUCCEEDED, None)
        .map_err(|_| Failure::Code(code::GENERAL_FAILURE, "general_failure"))?;
    stream
        .write_all(&ok)
        .await
        .map_err(|_| Failure::Code(code::GENERAL_FAILURE, "io_error"))?;
    shared.counters.streams.fetch_add(1, Relaxed);
    // Either side closing or failing ends the stream; neither is the server's failure.
    if let Ok((up, down)) = crate::egress::relay(stream, &mut outbound).await {
        shared.counters.bytes_up.fetch_add(up, Relaxed);
        shared.counters.bytes_down.fetch_add(down, Relaxed);
    }
    Ok(())
}

async fn resolve(
    stream: &mut TcpStream,
    request: &SocksRequest,
    isolation: &Isolation,
    shared: &Shared,
) -> Result<(), Failure> {
    let addr = match host_of(request.addr()) {
        Host::Ip(ip) => ip,
        Host::Name(name) => {
            let addrs = tokio::time::timeout(
                shared.settings.connect_timeout,
                shared.resolver.resolve(&name, isolation),
            )
            .await
            .map_err(|_| Failure::Code(code::TTL_EXPIRED, "timeout"))??;
            // A SOCKS4 reply only carries IPv4.
            let v4 = addrs.iter().find(|a| a.is_ipv4()).copied();
            let pick = match request.version() {
                SocksVersion::V4 => v4,
                _ => v4.or_else(|| addrs.first().copied()),
            };
            pick.ok_or_else(|| EgressError::NotFound(name.clone()))?
        }
    };
    let answer = request
        .reply(SocksStatus::SUCCEEDED, Some(&SocksAddr::Ip(addr)))
        .map_err(|_| Failure::Code(code::GENERAL_FAILURE, "general_failure"))?;
    shared.counters.resolves.fetch_add(1, Relaxed);
    let _ = stream.write_all(&answer).await;
    Ok(())
}

async fn resolve_ptr(
    stream: &mut TcpStream,
    request: &SocksRequest,
    isolation: &Isolation,
    shared: &Shared,
) -> Result<(), Failure> {
    let Host::Ip(addr) = host_of(request.addr()) else {
        return Err(Failure::Code(
            code::ADDRTYPE_NOT_SUPPORTED,
            "unsupported_address",
        ));
    };
    let names = tokio::time::timeout(
        shared.settings.connect_timeout,
        shared.resolver.resolve_ptr(addr, isolation),
    )
    .await
    .map_err(|_| Failure::Code(code::TTL_EXPIRED, "timeout"))??;
    let name = names
        .into_iter()
        .find_map(|name| tor_socksproto::SocksHostname::try_from(name).ok())
        .ok_or_else(|| EgressError::NotFound(addr.to_string()))?;
    let answer = request
        .reply(SocksStatus::SUCCEEDED, Some(&SocksAddr::Hostname(name)))
        .map_err(|_| Failure::Code(code::GENERAL_FAILURE, "general_failure"))?;
    shared.counters.resolve_ptrs.fetch_add(1, Relaxed);
    let _ = stream.write_all(&answer).await;
    Ok(())
}

/// A request's address as a target host: a name that is an IP literal counts as the address.
fn host_of(addr: &SocksAddr) -> Host {
    match addr {
        SocksAddr::Ip(ip) => Host::Ip(*ip),
        SocksAddr::Hostname(name) => {
            let name: &str = name.as_ref();
            match name.parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_) => Host::Name(name.to_owned()),
            }
        }
    }
}
