//! The API's error shape for the requests hyper refuses by itself.
//!
//! hyper answers an HTTP/1.1 head it cannot take (malformed, a target over
//! 65,534 bytes, a head over its read buffer) with a bodiless 400, 414 or
//! 431 and closes the connection; it has no hook to change that answer.
//! [`JsonParseErrors`] sits between hyper and the socket and, as hyper
//! writes that answer, writes instead the same status with the JSON error
//! body every other error has (`malformed_request`, `uri_too_long`,
//! `headers_too_large`).
//!
//! hyper's answer is told apart by its exact shape: one write holding a
//! whole head, status 400, 414 or 431, `connection: close` and
//! `content-length: 0`. The router never writes such a head (all its errors
//! have bodies), and a write that only continues a response never begins
//! with a status line.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use geiger_protocol::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::{MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_URI_BYTES};

/// An HTTP/1.1 connection's I/O, with hyper's bodiless parse-error answers
/// replaced by JSON ones.
pub(crate) struct JsonParseErrors<I> {
    inner: I,
    /// The answer being written in place of hyper's.
    replacement: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// How many of hyper's bytes it stands for.
    replaces: usize,
}

impl<I> JsonParseErrors<I> {
    pub(crate) fn new(inner: I) -> Self {
        JsonParseErrors {
            inner,
            replacement: None,
        }
    }
}

/// The error code for `head` if it is hyper's own parse-error answer.
fn hyper_parse_error(head: &[u8]) -> Option<ErrorCode> {
    // Cheap tests first: every write of every response comes through here.
    if head.len() > 512 || !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let code = match &head[9..13] {
        b"400 " => ErrorCode::MalformedRequest,
        b"414 " => ErrorCode::UriTooLong,
        b"431 " => ErrorCode::HeadersTooLarge,
        _ => return None,
    };
    let head = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    let bodiless_and_closing = head.contains("\r\ncontent-length: 0\r\n")
        && head.contains("\r\nconnection: close\r\n")
        && !head.contains("\r\ncontent-type:");
    bodiless_and_closing.then_some(code)
}

/// The whole answer, head and JSON body, for `code`.
fn json_answer(code: ErrorCode) -> Vec<u8> {
    let (reason, message) = match code {
        ErrorCode::UriTooLong => (
            "URI Too Long",
            format!("the request target is longer than the server reads (at most {MAX_URI_BYTES} bytes)"),
        ),
        ErrorCode::HeadersTooLarge => (
            "Request Header Fields Too Large",
            format!(
                "the request head is larger than the server reads (at most {MAX_HEADER_FIELDS} header fields and {MAX_HEADER_BYTES} bytes)"
            ),
        ),
        _ => (
            "Bad Request",
            "the request head is malformed: its request line, a header field or the HTTP version"
                .to_string(),
        ),
    };
    let body = serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        code.http_status(),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonParseErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none() {
            let Some(code) = hyper_parse_error(data) else {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            };
            tracing::debug!(
                status = code.http_status(),
                "answering a request head hyper refused with the JSON error"
            );
            this.replacement = Some(Replacement {
                bytes: json_answer(code),
                written: 0,
                replaces: data.len(),
            });
        }
        let Some(r) = this.replacement.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while r.written < r.bytes.len() {
            match ready!(Pin::new(&mut this.inner).poll_write(cx, &r.bytes[r.written..])) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => r.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let replaced = r.replaces.min(data.len());
        this.replacement = None;
        Poll::Ready(Ok(replaced))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper's answer is a head alone, so in the first non-empty slice;
        // taking only that slice is a short write, which callers expect.
        let first = bufs.iter().find(|b| !b.is_empty());
        match first {
            Some(first) if self.replacement.is_some() || hyper_parse_error(first).is_some() => {
                self.poll_write(cx, first)
            }
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 03:45:09 GMT\r\n\r\n";

    #[test]
    fn hypers_own_answers_are_recognised_and_nothing_else_is() {
        assert_eq!(
            hyper_parse_error(HYPER_431),
            Some(ErrorCode::HeadersTooLarge)
        );
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_parse_error(hyper_414), Some(ErrorCode::UriTooLong));
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            hyper_parse_error(hyper_400),
            Some(ErrorCode::MalformedRequest)
        );
        // The router's own errors have a body; other statuses pass; a body
        // or a partial head is never taken for an answer.
        let router_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 90\r\n\r\n";
        assert_eq!(hyper_parse_error(router_431), None);
        let kept_open = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_parse_error(kept_open), None);
        let not_found = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_parse_error(not_found), None);
        assert_eq!(hyper_parse_error(&HYPER_431[..40]), None);
        assert_eq!(hyper_parse_error(b"{\"error\":{}}"), None);
    }

    #[tokio::test]
    async fn hypers_answer_is_written_as_the_json_error_and_counted_as_written() {
        use tokio::io::AsyncWriteExt;
        let mut io = JsonParseErrors::new(Vec::new());
        let n = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, HYPER_431))
            .await
            .unwrap();
        assert_eq!(n, HYPER_431.len());
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let written = String::from_utf8(io.inner).unwrap();
        let (head, rest) = written.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let (body, after) = rest.split_at(rest.find("HTTP/1.1 200").unwrap());
        let parsed: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error.code, ErrorCode::HeadersTooLarge);
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(after, "HTTP/1.1 200 OK\r\n\r\n");
    }
}
