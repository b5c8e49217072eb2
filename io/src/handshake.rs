//! The hello that opens every connection: a magic, a version and the
//! cluster token.
//!
//! It is checked before any frame is read, so a process that does not know
//! the token (or is not pslite at all) never reaches the core. The token is
//! compared in constant time. Lengths are capped before reading.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settings::TOKEN_LEN_MAX;

const HELLO_MAGIC: [u8; 4] = *b"PSLH";
const HELLO_VERSION: u16 = 1;

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    #[error("not a pslite hello (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("unsupported hello version {0}")]
    Version(u16),
    #[error("token of {0} bytes exceeds the cap")]
    TokenTooLong(usize),
    #[error("wrong cluster token")]
    WrongToken,
    #[error("i/o during hello: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes our hello.
pub(crate) async fn send_hello<W: AsyncWriteExt + Unpin>(out: &mut W, token: Option<&str>) -> std::io::Result<()> {
    let token = token.unwrap_or("").as_bytes();
    let mut hello = Vec::with_capacity(8 + token.len());
    hello.extend_from_slice(&HELLO_MAGIC);
    hello.extend_from_slice(&HELLO_VERSION.to_le_bytes());
    hello.extend_from_slice(&(token.len() as u16).to_le_bytes());
    hello.extend_from_slice(token);
    out.write_all(&hello).await
}

/// Reads and checks a peer's hello.
pub(crate) async fn expect_hello<R: AsyncReadExt + Unpin>(
    input: &mut R,
    token: Option<&str>,
) -> Result<(), HelloError> {
    let mut head = [0u8; 8];
    input.read_exact(&mut head).await?;
    let magic = [head[0], head[1], head[2], head[3]];
    if magic != HELLO_MAGIC {
        return Err(HelloError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != HELLO_VERSION {
        return Err(HelloError::Version(version));
    }
    let len = usize::from(u16::from_le_bytes([head[6], head[7]]));
    if len > TOKEN_LEN_MAX {
        return Err(HelloError::TokenTooLong(len));
    }
    let mut presented = vec![0u8; len];
    input.read_exact(&mut presented).await?;
    let expected = token.unwrap_or("").as_bytes();
    if !constant_time_eq(&presented, expected) {
        return Err(HelloError::WrongToken);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_token_passes_and_wrong_token_is_refused() {
        let mut buf = Vec::new();
        send_hello(&mut buf, Some("secret")).await.unwrap();
        expect_hello(&mut buf.as_slice(), Some("secret")).await.unwrap();
        assert!(matches!(expect_hello(&mut buf.as_slice(), Some("other")).await, Err(HelloError::WrongToken)));
        assert!(matches!(expect_hello(&mut buf.as_slice(), None).await, Err(HelloError::WrongToken)));
        let garbage = b"GET / HTTP/1.1\r\n";
        assert!(matches!(expect_hello(&mut garbage.as_slice(), None).await, Err(HelloError::BadMagic(_))));
    }
}
