//! The link protocol's frames and their byte layout (docs/LINK.md).
//!
//! Every frame is `u32 length (big-endian) | u8 type | payload`, where the
//! length counts the type byte and the payload and never exceeds
//! [`MAX_FRAME_LEN`]. The reader checks the length before it allocates, so a
//! peer cannot make us reserve more than one maximum frame. Payloads are
//! fixed layouts, decoded strictly: a wrong length, an unknown type or a bad
//! flag is an error, never a guess, and never a panic.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use geiger_protocol::lease_proof::{LeaseAttestation, ATTESTATION_LEN};

use crate::chunk::{DeviceId, SignedChunk, DEVICE_ID_LEN};

/// First bytes of a Hello: this is a geiger link, not some other protocol
/// that happened to dial the port.
pub const MAGIC: [u8; 4] = *b"GLNK";
/// The newest link protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 4;
/// The oldest version it still speaks: a version 3 peer gets every frame
/// but [`Frame::SourceReport`], so devices and nodes may be upgraded in
/// either order.
pub const MIN_PROTOCOL_VERSION: u16 = 3;
/// The first version whose devices send [`Frame::SourceReport`].
pub const SOURCE_REPORT_VERSION: u16 = 4;
/// Most lease attestations a Hello carries (one per member, at most).
pub const MAX_ATTESTATIONS: usize = 32;
/// Largest value of the length prefix (type byte + payload).
pub const MAX_FRAME_LEN: usize = 128 * 1024;
/// Largest chunk a device may send; leaves room for the chunk header.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// Largest human-readable message in an Error frame.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Most credits a node may have outstanding; bounds the device's counter.
pub const MAX_OUTSTANDING_CREDITS: u64 = 1 << 16;

const T_HELLO: u8 = 1;
const T_WELCOME: u8 = 2;
const T_CREDIT: u8 = 3;
const T_CHUNK: u8 = 4;
const T_HEARTBEAT: u8 = 5;
const T_ERROR: u8 = 6;
const T_SOURCE_REPORT: u8 = 7;

const HELLO_LEN: usize = 4 + 2 + 8 + 1 + 8;
const WELCOME_LEN: usize = 2 + DEVICE_ID_LEN + 32 + 8 + 8 + 4;
const CHUNK_HEADER_LEN: usize = 8 + 8 + 64;
const ERROR_HEADER_LEN: usize = 2 + 8 + 2;
const SOURCE_REPORT_LEN: usize = 6 * 8;

/// Node → device, first frame of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// The node's lease epoch for this link (fencing token).
    pub epoch: u64,
    /// The highest sequence the cluster has accounted for (appended or
    /// quarantined), if any; the device re-sends retained chunks after it.
    pub resume_after: Option<u64>,
    /// Members' signatures that the ledger leased the device to this node
    /// at `epoch` (version 3; a version 2 Hello has none).
    pub attestations: Vec<LeaseAttestation>,
}

/// Device → node, the accepted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub device_id: DeviceId,
    pub public_key: [u8; 32],
    pub epoch: u64,
    /// The sequence of the first chunk this session will carry.
    pub next_seq: u64,
    pub chunk_size: u32,
}

/// Device → node (version 4): what the device's entropy source has
/// produced since it opened. Every count is cumulative, so a lost report
/// loses nothing and the node takes differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceReport {
    /// Milliseconds since the source opened.
    pub uptime_ms: u64,
    /// Counter events registered (0 for a source that is not a counter).
    pub events: u64,
    /// Raw samples the extractor produced: bits and ties.
    pub raw_samples: u64,
    /// Raw bits among them.
    pub raw_bits: u64,
    /// Raw samples the device's own health tests discarded.
    pub raw_rejected: u64,
    /// Bytes handed to the chunk path (conditioned, for a decay source).
    pub output_bytes: u64,
}

impl SourceReport {
    fn per_second(&self, n: u64) -> f64 {
        if self.uptime_ms == 0 {
            0.0
        } else {
            n as f64 * 1000.0 / self.uptime_ms as f64
        }
    }

    /// Counter events per second since the source opened.
    pub fn count_rate(&self) -> f64 {
        self.per_second(self.events)
    }

    pub fn raw_bits_per_second(&self) -> f64 {
        self.per_second(self.raw_bits)
    }

    pub fn output_bytes_per_second(&self) -> f64 {
        self.per_second(self.output_bytes)
    }

    /// Share of raw samples the device's health tests discarded.
    pub fn rejected_fraction(&self) -> f64 {
        if self.raw_samples == 0 {
            0.0
        } else {
            self.raw_rejected as f64 / self.raw_samples as f64
        }
    }
}

/// Why a session is refused or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The Hello's version is not spoken here; `detail` is ours.
    UnsupportedVersion,
    /// The Hello's epoch is older than the newest seen; `detail` is that epoch.
    StaleEpoch,
    /// A session with a newer (or equal, reconnecting) epoch took over;
    /// `detail` is its epoch.
    Superseded,
    /// The peer broke the protocol (bad frame, too many credits, ...).
    ProtocolViolation,
    /// The entropy source failed; `detail` is 0.
    SourceFailed,
    /// The node has accounted for sequences this device never issued:
    /// its sequence store was lost or rolled back; `detail` is our next seq.
    SequenceRollback,
    /// The device is shutting down.
    ShuttingDown,
    /// Nothing arrived from the peer for too long.
    Timeout,
    /// The Hello's epoch is further past the newest seen than a cluster can
    /// go; `detail` is the largest epoch the device would accept.
    EpochTooFar,
    /// The Hello did not carry signatures of a majority of the members the
    /// device trusts for its epoch; `detail` is how many it needs.
    LeaseUnproven,
    /// A code from a newer protocol revision.
    Other(u16),
}

impl ErrorCode {
    fn to_u16(self) -> u16 {
        match self {
            ErrorCode::UnsupportedVersion => 1,
            ErrorCode::StaleEpoch => 2,
            ErrorCode::Superseded => 3,
            ErrorCode::ProtocolViolation => 4,
            ErrorCode::SourceFailed => 5,
            ErrorCode::SequenceRollback => 6,
            ErrorCode::ShuttingDown => 7,
            ErrorCode::Timeout => 8,
            ErrorCode::EpochTooFar => 9,
            ErrorCode::LeaseUnproven => 10,
            ErrorCode::Other(n) => n,
        }
    }

    fn from_u16(n: u16) -> Self {
        match n {
            1 => ErrorCode::UnsupportedVersion,
            2 => ErrorCode::StaleEpoch,
            3 => ErrorCode::Superseded,
            4 => ErrorCode::ProtocolViolation,
            5 => ErrorCode::SourceFailed,
            6 => ErrorCode::SequenceRollback,
            7 => ErrorCode::ShuttingDown,
            8 => ErrorCode::Timeout,
            9 => ErrorCode::EpochTooFar,
            10 => ErrorCode::LeaseUnproven,
            n => ErrorCode::Other(n),
        }
    }
}

/// Either side, last frame before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub detail: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    /// Node → device: permission to send this many more chunks.
    Credit {
        chunks: u32,
    },
    Chunk(SignedChunk),
    /// Either side, when it has sent nothing else for a heartbeat interval.
    Heartbeat,
    Error(ErrorFrame),
    /// Device → node, version 4: sent every heartbeat interval.
    SourceReport(SourceReport),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("link I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("frame length {len} is outside 1..={MAX_FRAME_LEN}")]
    BadFrameLength { len: u64 },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame type {kind} cannot have a {len}-byte payload")]
    BadPayloadLength { kind: u8, len: usize },
    #[error("the Hello does not start with the link magic")]
    BadMagic,
    #[error("a flag byte is neither 0 nor 1")]
    BadFlag,
    #[error("the error message is not UTF-8")]
    BadUtf8,
}

impl Frame {
    /// The frame's wire bytes, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        match self {
            Frame::Hello(h) => {
                body.push(T_HELLO);
                body.extend_from_slice(&MAGIC);
                body.extend_from_slice(&h.version.to_be_bytes());
                body.extend_from_slice(&h.epoch.to_be_bytes());
                body.push(u8::from(h.resume_after.is_some()));
                body.extend_from_slice(&h.resume_after.unwrap_or(0).to_be_bytes());
                let n = h.attestations.len().min(MAX_ATTESTATIONS);
                body.push(n as u8);
                for a in &h.attestations[..n] {
                    body.extend_from_slice(&a.to_bytes());
                }
            }
            Frame::Welcome(w) => {
                body.push(T_WELCOME);
                body.extend_from_slice(&w.version.to_be_bytes());
                body.extend_from_slice(&w.device_id.0);
                body.extend_from_slice(&w.public_key);
                body.extend_from_slice(&w.epoch.to_be_bytes());
                body.extend_from_slice(&w.next_seq.to_be_bytes());
                body.extend_from_slice(&w.chunk_size.to_be_bytes());
            }
            Frame::Credit { chunks } => {
                body.push(T_CREDIT);
                body.extend_from_slice(&chunks.to_be_bytes());
            }
            Frame::Chunk(c) => {
                body.reserve(CHUNK_HEADER_LEN + c.bytes.len());
                body.push(T_CHUNK);
                body.extend_from_slice(&c.seq.to_be_bytes());
                body.extend_from_slice(&c.timestamp_ms.to_be_bytes());
                body.extend_from_slice(&c.signature);
                body.extend_from_slice(&c.bytes);
            }
            Frame::Heartbeat => body.push(T_HEARTBEAT),
            Frame::SourceReport(r) => {
                body.push(T_SOURCE_REPORT);
                for n in [
                    r.uptime_ms,
                    r.events,
                    r.raw_samples,
                    r.raw_bits,
                    r.raw_rejected,
                    r.output_bytes,
                ] {
                    body.extend_from_slice(&n.to_be_bytes());
                }
            }
            Frame::Error(e) => {
                body.push(T_ERROR);
                body.extend_from_slice(&e.code.to_u16().to_be_bytes());
                body.extend_from_slice(&e.detail.to_be_bytes());
                let msg = truncate_utf8(&e.message, MAX_MESSAGE_LEN);
                body.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                body.extend_from_slice(msg.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one frame body (type byte and payload, without the length).
    pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
        let (&kind, p) = body
            .split_first()
            .ok_or(FrameError::BadFrameLength { len: 0 })?;
        let bad_len = || FrameError::BadPayloadLength { kind, len: p.len() };
        let mut r = Reader(p);
        let frame = match kind {
            T_HELLO => {
                // Version 2 ends after the fixed part; version 3 adds a
                // count and that many attestations.
                let count = match p.get(HELLO_LEN) {
                    None => 0,
                    Some(&n) => usize::from(n),
                };
                let expected = match p.len() {
                    HELLO_LEN => HELLO_LEN,
                    _ => HELLO_LEN + 1 + count * ATTESTATION_LEN,
                };
                if p.len() != expected || count > MAX_ATTESTATIONS {
                    return Err(bad_len());
                }
                if r.array::<4>()? != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                let version = r.u16()?;
                let epoch = r.u64()?;
                let flag = r.u8()?;
                let resume = r.u64()?;
                let resume_after = match flag {
                    0 if resume == 0 => None,
                    1 => Some(resume),
                    _ => return Err(FrameError::BadFlag),
                };
                if p.len() > HELLO_LEN {
                    r.u8()?; // the count, read above
                }
                let mut attestations = Vec::with_capacity(count);
                for _ in 0..count {
                    attestations.push(LeaseAttestation::from_bytes(&r.array()?));
                }
                Frame::Hello(Hello {
                    version,
                    epoch,
                    resume_after,
                    attestations,
                })
            }
            T_WELCOME => {
                if p.len() != WELCOME_LEN {
                    return Err(bad_len());
                }
                Frame::Welcome(Welcome {
                    version: r.u16()?,
                    device_id: DeviceId(r.array()?),
                    public_key: r.array()?,
                    epoch: r.u64()?,
                    next_seq: r.u64()?,
                    chunk_size: r.u32()?,
                })
            }
            T_CREDIT => {
                if p.len() != 4 {
                    return Err(bad_len());
                }
                Frame::Credit { chunks: r.u32()? }
            }
            T_CHUNK => {
                let data_len = p.len().saturating_sub(CHUNK_HEADER_LEN);
                if p.len() <= CHUNK_HEADER_LEN || data_len > MAX_CHUNK_BYTES {
                    return Err(bad_len());
                }
                Frame::Chunk(SignedChunk {
                    seq: r.u64()?,
                    timestamp_ms: r.u64()?,
                    signature: r.array()?,
                    bytes: r.0.to_vec(),
                })
            }
            T_HEARTBEAT => {
                if !p.is_empty() {
                    return Err(bad_len());
                }
                Frame::Heartbeat
            }
            T_SOURCE_REPORT => {
                if p.len() != SOURCE_REPORT_LEN {
                    return Err(bad_len());
                }
                Frame::SourceReport(SourceReport {
                    uptime_ms: r.u64()?,
                    events: r.u64()?,
                    raw_samples: r.u64()?,
                    raw_bits: r.u64()?,
                    raw_rejected: r.u64()?,
                    output_bytes: r.u64()?,
                })
            }
            T_ERROR => {
                if p.len() < ERROR_HEADER_LEN {
                    return Err(bad_len());
                }
                let code = ErrorCode::from_u16(r.u16()?);
                let detail = r.u64()?;
                let len = usize::from(r.u16()?);
                if len > MAX_MESSAGE_LEN || r.0.len() != len {
                    return Err(bad_len());
                }
                let message = std::str::from_utf8(r.0)
                    .map_err(|_| FrameError::BadUtf8)?
                    .to_string();
                Frame::Error(ErrorFrame {
                    code,
                    detail,
                    message,
                })
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(frame)
    }

    /// Decodes the first frame in `buf`, if it is complete: the frame and
    /// how many bytes it took, or `None` when more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let len = frame_len(prefix.try_into().unwrap_or([0; 4]))?;
        match buf.get(4..4 + len) {
            Some(body) => Ok(Some((Frame::decode_body(body)?, 4 + len))),
            None => Ok(None),
        }
    }
}

fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(FrameError::BadFrameLength { len: len as u64 });
    }
    Ok(len)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor that fails instead of panicking when the payload runs short.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let short = || FrameError::BadPayloadLength {
            kind: 0,
            len: self.0.len(),
        };
        let (head, rest) = self.0.split_at_checked(N).ok_or_else(short)?;
        self.0 = rest;
        head.try_into().map_err(|_| short())
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// Reads one frame. A clean end of stream before a frame starts is
/// [`FrameError::Closed`]; anywhere else it is an I/O error.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut prefix[1..]).await?;
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Frame::decode_body(&body)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode()).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: 1,
                epoch: 9,
                resume_after: Some(41),
                attestations: vec![],
            }),
            Frame::Hello(Hello {
                version: 1,
                epoch: 0,
                resume_after: None,
                attestations: vec![],
            }),
            Frame::Welcome(Welcome {
                version: 1,
                device_id: DeviceId([3; 16]),
                public_key: [4; 32],
                epoch: 9,
                next_seq: 42,
                chunk_size: 4096,
            }),
            Frame::Credit { chunks: 16 },
            Frame::Chunk(SignedChunk {
                seq: 42,
                timestamp_ms: 1_700_000_000_000,
                signature: [5; 64],
                bytes: vec![6; 100],
            }),
            Frame::Heartbeat,
            Frame::SourceReport(SourceReport {
                uptime_ms: 60_000,
                events: 60_123,
                raw_samples: 30_000,
                raw_bits: 29_990,
                raw_rejected: 3,
                output_bytes: 1_870,
            }),
            Frame::Error(ErrorFrame {
                code: ErrorCode::StaleEpoch,
                detail: 10,
                message: "epoch 9 is older than 10".into(),
            }),
            Frame::Error(ErrorFrame {
                code: ErrorCode::Other(999),
                detail: 0,
                message: String::new(),
            }),
        ]
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for frame in samples() {
            let wire = frame.encode();
            let (back, used) = Frame::parse(&wire).unwrap().unwrap();
            assert_eq!(back, frame);
            assert_eq!(used, wire.len());
        }
    }

    #[test]
    fn a_partial_frame_asks_for_more_bytes() {
        let wire = samples()[0].encode();
        for cut in 0..wire.len() {
            assert!(Frame::parse(&wire[..cut]).unwrap().is_none());
        }
    }

    #[test]
    fn oversized_and_empty_lengths_are_refused_before_reading_the_body() {
        let too_big = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            Frame::parse(&too_big),
            Err(FrameError::BadFrameLength { .. })
        ));
        assert!(matches!(
            Frame::parse(&[0, 0, 0, 0]),
            Err(FrameError::BadFrameLength { len: 0 })
        ));
    }

    #[test]
    fn an_empty_or_oversized_chunk_is_refused() {
        let mut body = vec![T_CHUNK];
        body.extend_from_slice(&[0u8; CHUNK_HEADER_LEN]);
        assert!(Frame::decode_body(&body).is_err());
        body.extend(std::iter::repeat_n(0u8, MAX_CHUNK_BYTES + 1));
        assert!(Frame::decode_body(&body).is_err());
    }

    #[test]
    fn a_source_report_of_the_wrong_length_is_refused() {
        let wire = Frame::SourceReport(SourceReport::default()).encode();
        let body = &wire[4..];
        assert!(Frame::decode_body(body).is_ok());
        assert!(Frame::decode_body(&body[..body.len() - 1]).is_err());
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(Frame::decode_body(&longer).is_err());
    }

    #[test]
    fn a_source_report_states_its_rates_since_the_source_opened() {
        let r = SourceReport {
            uptime_ms: 2_000,
            events: 2_000,
            raw_samples: 1_000,
            raw_bits: 990,
            raw_rejected: 10,
            output_bytes: 62,
        };
        assert_eq!(r.count_rate(), 1_000.0);
        assert_eq!(r.raw_bits_per_second(), 495.0);
        assert_eq!(r.output_bytes_per_second(), 31.0);
        assert_eq!(r.rejected_fraction(), 0.01);
        assert_eq!(SourceReport::default().count_rate(), 0.0);
        assert_eq!(SourceReport::default().rejected_fraction(), 0.0);
    }

    #[test]
    fn a_hello_without_the_magic_is_refused() {
        let mut wire = samples()[0].encode();
        wire[5] = b'X';
        assert!(matches!(Frame::parse(&wire), Err(FrameError::BadMagic)));
    }

    #[tokio::test]
    async fn frames_read_back_from_a_byte_stream_in_order() {
        let mut wire = Vec::new();
        for f in samples() {
            wire.extend(f.encode());
        }
        let mut r = &wire[..];
        for f in samples() {
            assert_eq!(read_frame(&mut r).await.unwrap(), f);
        }
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Closed)));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Frame::parse(&bytes);
            let _ = Frame::decode_body(&bytes);
        }

        #[test]
        fn decoding_a_mutated_valid_frame_never_panics(
            which in 0usize..8,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut wire = samples()[which].encode();
            for (at, x) in flips {
                let i = at % wire.len();
                wire[i] ^= x;
            }
            let _ = Frame::parse(&wire);
        }

        #[test]
        fn reading_arbitrary_bytes_from_a_stream_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut r = &bytes[..];
                while read_frame(&mut r).await.is_ok() {}
            });
        }
    }
}
