//! PRELOGIN reply and LOGIN7 parsing.

use bytes::{BufMut, BytesMut};

use super::reader::{utf16_to_string, Reader};
use super::WireError;
use crate::api::LoginRequest;

/// The version the stand-in reports (SQL Server 2022, 16.0.1000).
pub const SERVER_VERSION: [u8; 4] = [16, 0, 0x03, 0xE8];
pub const SERVER_NAME: &str = "dbsync-sqlserver-sim";
pub const PROGRAM_NAME: &str = "Microsoft SQL Server";
/// TDS 7.4, the only version the stand-in speaks.
pub const TDS_VERSION: u32 = 0x7400_0004;

const ENCRYPT_NOT_SUP: u8 = 0x02;

/// The PRELOGIN reply payload: VERSION, ENCRYPTION = NOT_SUP, INSTOPT, MARS off.
/// tiberius rejects any option token outside 0x00..=0x07, so nothing else is sent.
pub fn prelogin_reply() -> BytesMut {
    let options: [(u8, &[u8]); 4] = [
        (
            0x00,
            &[
                SERVER_VERSION[0],
                SERVER_VERSION[1],
                SERVER_VERSION[2],
                SERVER_VERSION[3],
                0,
                0,
            ],
        ),
        (0x01, &[ENCRYPT_NOT_SUP]),
        (0x02, &[0x00]),
        (0x04, &[0x00]),
    ];
    let mut out = BytesMut::new();
    let mut offset = options.len() * 5 + 1;
    for (token, data) in options {
        out.put_u8(token);
        out.put_u16(offset as u16);
        out.put_u16(data.len() as u16);
        offset += data.len();
    }
    out.put_u8(0xFF);
    for (_, data) in options {
        out.extend_from_slice(data);
    }
    out
}

/// What LOGIN7 carries besides the credentials (Debug leaves the password out: see
/// `LoginRequest`).
#[derive(Debug, Clone)]
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub request: LoginRequest,
}

/// Parse a LOGIN7 payload (offset/length pairs into a UTF-16LE variable part).
pub fn parse_login7(payload: &[u8]) -> Result<Login7, WireError> {
    let mut fixed = Reader::new(payload, "LOGIN7");
    let _length = fixed.u32()?;
    let tds_version = fixed.u32()?;
    let packet_size = fixed.u32()?;
    let field = |offset_at: usize| -> Result<&[u8], WireError> {
        let mut r = Reader::new(payload, "LOGIN7");
        r.skip(offset_at)?;
        let offset = r.u16()? as usize;
        let chars = r.u16()? as usize;
        payload.get(offset..offset + chars * 2).ok_or_else(|| {
            WireError::invalid(
                "LOGIN7",
                format!("field at {offset_at} points outside the packet"),
            )
        })
    };
    let text = |offset_at: usize| -> Result<String, WireError> {
        utf16_to_string(field(offset_at)?).map_err(|e| WireError::invalid("LOGIN7", e))
    };
    let password_bytes: Vec<u8> = field(44)?.iter().map(|b| deobfuscate(*b)).collect();
    let password =
        utf16_to_string(&password_bytes).map_err(|e| WireError::invalid("LOGIN7 password", e))?;
    Ok(Login7 {
        tds_version,
        packet_size,
        request: LoginRequest {
            host_name: text(36)?,
            user: text(40)?,
            password,
            app_name: text(48)?,
            database: text(68)?,
        },
    })
}

/// Undo the LOGIN7 password obfuscation (the client swaps nibbles, then XORs with 0xA5).
fn deobfuscate(b: u8) -> u8 {
    let x = b ^ 0xA5;
    x.rotate_left(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_deobfuscation_inverts_the_client_scheme() {
        for b in 0..=255u8 {
            let obfuscated = b.rotate_left(4) ^ 0xA5;
            assert_eq!(deobfuscate(obfuscated), b);
        }
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let login = Login7 {
            tds_version: TDS_VERSION,
            packet_size: 4096,
            request: LoginRequest {
                user: "sa".into(),
                password: "Secret#42".into(),
                database: "db".into(),
                app_name: "app".into(),
                host_name: "host".into(),
            },
        };
        let shown = format!("{login:?}");
        assert!(!shown.contains("Secret#42"), "{shown}");
        assert!(shown.contains("sa"));
    }

    #[test]
    fn prelogin_reply_says_encryption_not_supported() {
        let reply = prelogin_reply();
        // Second option header is ENCRYPTION; its data byte is at the given offset.
        assert_eq!(reply[5], 0x01);
        let offset = u16::from_be_bytes([reply[6], reply[7]]) as usize;
        assert_eq!(reply[offset], ENCRYPT_NOT_SUP);
    }
}
