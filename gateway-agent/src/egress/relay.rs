//! Moving bytes between an inside client and its outbound stream.

use tokio::io::{AsyncRead, AsyncWrite, BufWriter};

/// Read buffer per direction (tokio's default is 8 KiB). Buffers are per stream and allocated
/// up front: 3 x 16 KiB keeps a thousand streams under 50 MiB.
const COPY_BUFFER: usize = 16 * 1024;

/// How much of the outbound stream's data is gathered before it is written to the client.
/// A Tor stream yields one cell's payload (at most 498 bytes) per read: without gathering,
/// each would be a write system call and a TCP segment of its own to the client.
const CLIENT_WRITE_BUFFER: usize = 16 * 1024;

/// Copies both ways until both sides are closed (or one fails); returns (client → outbound,
/// outbound → client) bytes. Gathered bytes are written out whenever the outbound stream has
/// nothing more at the moment, so gathering adds no waiting.
pub async fn relay<C, O>(client: &mut C, outbound: &mut O) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut client = BufWriter::with_capacity(CLIENT_WRITE_BUFFER, client);
    tokio::io::copy_bidirectional_with_sizes(&mut client, outbound, COPY_BUFFER, COPY_BUFFER).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_pieces_arrive_without_waiting_for_a_full_buffer() {
        let (mut client, mut client_end) = tokio::io::duplex(1 << 20);
        let (mut outbound, mut outbound_end) = tokio::io::duplex(1 << 20);
        let relaying = tokio::spawn(async move { relay(&mut client_end, &mut outbound_end).await });

        // One small piece from the outbound side must reach the client on its own.
        outbound.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut got))
            .await
            .expect("the piece was flushed, not held back")
            .unwrap();
        assert_eq!(&got, b"hello");

        // Many cell-sized pieces arrive whole and in order; so does the other direction.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(498) {
            outbound.write_all(chunk).await.unwrap();
        }
        client.write_all(b"request").await.unwrap();
        let mut back = vec![0u8; data.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, data);
        let mut request = [0u8; 7];
        outbound.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"request");

        // Both ends close: the relay finishes and counts every byte.
        outbound.shutdown().await.unwrap();
        client.shutdown().await.unwrap();
        let counted = relaying.await.unwrap().unwrap();
        assert_eq!(counted, (7, 5 + data.len() as u64));
    }
}
