//! The relay's byte copy, both ways with half-close (as `tokio::io::copy_bidirectional`),
//! through buffers in an anonymous mapping of the connection's own: unmapped when the
//! connection ends, so the guest's memory goes back down after a burst of connections
//! instead of staying in the heap between other allocations (BENCHMARKS.md, "Memory
//! that goes back down").

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes each direction reads at once (tokio's copy uses the same).
const BUF: usize = 8 * 1024;

/// Copies `a` to `b` and `b` to `a` until both have ended; an end of stream on one side
/// shuts down the other's write side. Returns the bytes copied each way.
pub async fn both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut map = memmap2::MmapMut::map_anon(2 * BUF)?;
    let (to_b, to_a) = map.split_at_mut(BUF);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::try_join!(
        one_way(&mut ar, &mut bw, to_b),
        one_way(&mut br, &mut aw, to_a)
    )
}

async fn one_way<R, W>(r: &mut R, w: &mut W, buf: &mut [u8]) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let n = r.read(buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close_on() {
        let (mut client, mut a) = duplex(64);
        let (mut b, mut server) = duplex(64);
        let relay = tokio::spawn(async move { both(&mut a, &mut b).await });
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let send = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big, "client to server, then its end of stream");
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(
            writer.await.unwrap(),
            b"answer",
            "the other way after a half-close"
        );
        assert_eq!(relay.await.unwrap().unwrap(), (100_000, 6));
    }
}
