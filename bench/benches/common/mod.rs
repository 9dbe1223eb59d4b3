//! What the HTTP latency benchmarks share: one kept-open HTTP/1.1 client connection, over plain TCP or TLS.
//! (A module of the benches rather than of the `muster-bench` library, which keeps hyper out of `cargo test`.)

use axum::body::Bytes;
use axum::http::header;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One kept-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// The HTTP/1.1 handshake over an open stream (the caller sets `TCP_NODELAY`, as Go's client does).
    pub async fn over<S>(stream: S) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// POSTs a JSON body; the response body, or an error for any status but 2xx.
    pub async fn post(&mut self, path: &str, body: &Bytes) -> Result<Bytes, Error> {
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(body)
    }
}
