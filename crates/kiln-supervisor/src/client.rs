//! The client side of the control socket, used by `kiln up`, `ps`, `logs`
//! and the other commands.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::proto::{Request, Response};

/// The socket a client uses: `$KILN_SOCKET`, else the system daemon's.
pub fn default_socket() -> std::path::PathBuf {
    std::env::var_os("KILN_SOCKET")
        .filter(|s| !s.is_empty())
        .map_or_else(|| DEFAULT_SOCKET.into(), Into::into)
}

/// The system daemon's socket.
pub const DEFAULT_SOCKET: &str = "/run/kiln/kiln.sock";
/// The system daemon's state directory.
pub const DEFAULT_STATE: &str = "/var/lib/kiln";

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to the kiln daemon at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The conversation failed.
    #[error("the kiln daemon's answer was cut short: {0}")]
    Io(#[from] io::Error),
    /// The daemon refused the connection (not allowed, too many clients).
    #[error("the kiln daemon refused the connection: {}", .0.error.as_deref().unwrap_or("no reason given"))]
    Refused(Response),
    /// The answer is not JSON this client understands.
    #[error("the kiln daemon answered something unexpected: {0}")]
    Protocol(String),
}

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to `socket` and reads the daemon's greeting.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
        let writer = stream.try_clone()?;
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
        };
        // The greeting, or the daemon's refusal of this connection.
        let greeting = client.answer()?;
        if !greeting.ok {
            return Err(ClientError::Refused(greeting));
        }
        Ok(client)
    }

    fn answer(&mut self) -> Result<Response, ClientError> {
        let mut answer = Vec::new();
        (&mut self.reader)
            .take(64 * 1024 * 1024)
            .read_until(b'\n', &mut answer)?;
        if answer.is_empty() {
            return Err(ClientError::Protocol(
                "no answer (connection closed)".into(),
            ));
        }
        serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends `request` and reads the response line.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        self.answer()
    }

    /// Copies what follows the response (the console of `logs`) to `out`
    /// until the daemon closes the stream.
    pub fn copy_rest(&mut self, out: &mut impl Write) -> Result<u64, ClientError> {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.reader.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            out.write_all(buf.get(..n).unwrap_or_default())?;
            out.flush()?;
            total += n as u64;
        }
    }
}
