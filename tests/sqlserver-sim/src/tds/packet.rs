//! Packet framing: the 8-byte header, reassembly of multi-packet requests and splitting of
//! responses at the negotiated packet size.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::WireError;

pub const HEADER_LEN: usize = 8;
/// Packet sizes a client may negotiate (tiberius rejects an ENVCHANGE outside this range).
pub const MIN_PACKET_SIZE: usize = 512;
pub const MAX_PACKET_SIZE: usize = 32767;
/// The packet size before LOGIN7 negotiates one.
pub const DEFAULT_PACKET_SIZE: usize = 4096;
/// A request larger than this is refused (it would only come from a broken client).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

const STATUS_EOM: u8 = 0x01;

/// Packet types (header byte 0).
pub mod kind {
    pub const SQL_BATCH: u8 = 0x01;
    pub const RPC: u8 = 0x03;
    pub const REPLY: u8 = 0x04;
    pub const ATTENTION: u8 = 0x06;
    pub const BULK_LOAD: u8 = 0x07;
    pub const TRANSACTION_MANAGER: u8 = 0x0E;
    pub const LOGIN7: u8 = 0x10;
    pub const PRELOGIN: u8 = 0x12;
}

/// One client message, reassembled from its packets.
#[derive(Debug)]
pub struct Message {
    pub kind: u8,
    pub payload: BytesMut,
}

/// Read the next message; `Ok(None)` when the client closed the connection between messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Message>, WireError> {
    let mut payload = BytesMut::new();
    let mut kind = None;
    loop {
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && kind.is_none() => {
                return Ok(None)
            }
            Err(e) => return Err(WireError::Io(e)),
        }
        let packet_kind = header[0];
        let status = header[1];
        let length = u16::from_be_bytes([header[2], header[3]]) as usize;
        if length < HEADER_LEN {
            return Err(WireError::Framing(format!(
                "packet length {length} is shorter than its header"
            )));
        }
        match kind {
            None => kind = Some(packet_kind),
            Some(k) if k != packet_kind => {
                return Err(WireError::Framing(format!(
                    "packet of type {packet_kind:#04x} inside a message of type {k:#04x}"
                )))
            }
            Some(_) => {}
        }
        if payload.len() + length - HEADER_LEN > MAX_MESSAGE_LEN {
            return Err(WireError::Framing(format!(
                "message longer than {MAX_MESSAGE_LEN} bytes"
            )));
        }
        let start = payload.len();
        payload.resize(start + length - HEADER_LEN, 0);
        reader.read_exact(&mut payload[start..]).await?;
        if status & STATUS_EOM != 0 {
            return Ok(Some(Message {
                kind: packet_kind,
                payload,
            }));
        }
    }
}

/// Cuts a token stream into reply packets of the negotiated size.
#[derive(Debug, Clone)]
pub struct PacketFramer {
    packet_size: usize,
    packet_id: u8,
}

impl PacketFramer {
    pub fn new(packet_size: usize) -> Self {
        PacketFramer {
            packet_size: packet_size.clamp(MIN_PACKET_SIZE, MAX_PACKET_SIZE),
            packet_id: 1,
        }
    }

    pub fn packet_size(&self) -> usize {
        self.packet_size
    }

    pub fn set_packet_size(&mut self, packet_size: usize) {
        self.packet_size = packet_size.clamp(MIN_PACKET_SIZE, MAX_PACKET_SIZE);
    }

    fn max_payload(&self) -> usize {
        self.packet_size - HEADER_LEN
    }

    /// Move every full packet that is certainly not the last one from `tokens` to `out`.
    /// A packet is cut only while more data remains after it, so the final packet of a
    /// response is never sent without its EOM bit.
    pub fn frame_full(&mut self, tokens: &mut BytesMut, out: &mut BytesMut) {
        let max = self.max_payload();
        while tokens.len() > max {
            self.put_packet(tokens, max, false, out);
        }
    }

    /// Move everything in `tokens` to `out`; the last packet carries EOM when `end_of_message`.
    /// With `end_of_message` false and nothing buffered, nothing is written.
    pub fn frame_rest(&mut self, tokens: &mut BytesMut, end_of_message: bool, out: &mut BytesMut) {
        self.frame_full(tokens, out);
        if !tokens.is_empty() || end_of_message {
            let n = tokens.len();
            self.put_packet(tokens, n, end_of_message, out);
            if end_of_message {
                self.packet_id = 1;
            }
        }
    }

    fn put_packet(&mut self, tokens: &mut BytesMut, n: usize, eom: bool, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + n);
        out.put_u8(kind::REPLY);
        out.put_u8(if eom { STATUS_EOM } else { 0 });
        out.put_u16((HEADER_LEN + n) as u16);
        out.put_u16(0); // spid
        out.put_u8(self.packet_id);
        out.put_u8(0); // window
        out.extend_from_slice(&tokens[..n]);
        tokens.advance(n);
        self.packet_id = self.packet_id.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_framed_response_reassembles_and_only_its_last_packet_has_eom() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut framer = PacketFramer::new(512);
        let mut tokens = BytesMut::from(&payload[..]);
        let mut out = BytesMut::new();
        framer.frame_full(&mut tokens, &mut out);
        framer.frame_rest(&mut tokens, true, &mut out);
        assert!(tokens.is_empty());

        let mut packets = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            assert!(len <= 512, "packet of {len} bytes");
            packets.push((rest[1], rest[6]));
            rest = &rest[len..];
        }
        let eoms: Vec<bool> = packets
            .iter()
            .map(|(status, _)| status & STATUS_EOM != 0)
            .collect();
        assert_eq!(eoms.iter().filter(|e| **e).count(), 1);
        assert!(*eoms.last().unwrap());
        assert_eq!(packets[1].1, 2, "packet ids count up");

        // The same bytes as a client request: reassembled whole (the type byte says REPLY,
        // which the reader does not interpret).
        let message = read_message(&mut &out[..]).await.unwrap().unwrap();
        assert_eq!(message.kind, kind::REPLY);
        assert_eq!(&message.payload[..], &payload[..]);
    }

    #[tokio::test]
    async fn framing_errors_are_reported_not_panicked() {
        let short = [0x01u8, 0x01, 0x00, 0x04, 0, 0, 1, 0];
        assert!(matches!(
            read_message(&mut &short[..]).await,
            Err(WireError::Framing(_))
        ));
        let mixed = [
            0x01u8, 0x00, 0x00, 0x09, 0, 0, 1, 0, 0xAA, 0x03, 0x01, 0x00, 0x09, 0, 0, 2, 0, 0xBB,
        ];
        assert!(matches!(
            read_message(&mut &mixed[..]).await,
            Err(WireError::Framing(_))
        ));
        let truncated = [0x01u8, 0x01, 0x00, 0x20, 0, 0, 1, 0, 1, 2];
        assert!(matches!(
            read_message(&mut &truncated[..]).await,
            Err(WireError::Io(_))
        ));
        assert!(
            read_message(&mut &[][..]).await.unwrap().is_none(),
            "a clean close between messages"
        );
    }
}
