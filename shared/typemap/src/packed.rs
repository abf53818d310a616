//! dbsync's packed row format: full-sync chunks travel as one byte string per batch
//! (`RowBatch.packed_rows`) instead of a protobuf message per value, so capture writes a cell
//! without building a [`Value`] and apply reads it back into reused [`Value`] slots without
//! allocating.
//!
//! Layout: per row a varint value count, then per value one tag byte and its payload.
//! Integers are LEB128 varints (signed ones zigzag-encoded), floats little-endian.
//!
//! | tag | value                   | payload                                          |
//! |-----|-------------------------|--------------------------------------------------|
//! | 0   | NULL                    | —                                                |
//! | 1/2 | bool false/true         | —                                                |
//! | 3   | int                     | zigzag varint                                    |
//! | 4   | float32                 | 4 bytes                                          |
//! | 5   | float64                 | 8 bytes                                          |
//! | 6   | decimal                 | varint scale, varint n, n bytes of `unscaled`     |
//! | 7   | text                    | varint n, n bytes UTF-8                          |
//! | 8   | binary                  | varint n, n bytes                                |
//! | 9   | uuid                    | varint n, n bytes                                |
//! | 10  | date                    | zigzag varint days                               |
//! | 11  | time                    | zigzag varint ticks                              |
//! | 12  | datetime                | zigzag varint ticks                              |
//! | 13  | datetimeoffset          | zigzag varint utc ticks, zigzag varint offset    |
//! | 14  | unchanged               | one byte                                         |
//!
//! Unpacking gives exactly the [`Value`]s that were packed (the round trip is the identity).

use dbsync_proto::v1::{value::Kind, DateTimeOffset, Decimal, Value};

use crate::TypemapError;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT32: u8 = 4;
const FLOAT64: u8 = 5;
const DECIMAL: u8 = 6;
const TEXT: u8 = 7;
const BINARY: u8 = 8;
const UUID: u8 = 9;
const DATE: u8 = 10;
const TIME: u8 = 11;
const DATETIME: u8 = 12;
const DATETIMEOFFSET: u8 = 13;
const UNCHANGED: u8 = 14;

/// The shortest sign-extended little-endian two's complement of `unscaled` (the form of
/// `Decimal.unscaled`): the bytes and how many of them are used.
#[inline]
pub fn shortest_le_bytes(unscaled: i128) -> ([u8; 16], usize) {
    let bytes = unscaled.to_le_bytes();
    let mut len = 16;
    // Drop high bytes that are pure sign extension of the byte below them.
    while len > 1 {
        let top = bytes[len - 1];
        let below_negative = bytes[len - 2] & 0x80 != 0;
        if (top == 0x00 && !below_negative) || (top == 0xff && below_negative) {
            len -= 1;
        } else {
            break;
        }
    }
    (bytes, len)
}

/// Appends packed values to a byte buffer. Start each row with [`PackedWriter::begin_row`].
pub struct PackedWriter<'a>(pub &'a mut Vec<u8>);

impl PackedWriter<'_> {
    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    #[inline]
    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    #[inline]
    fn bytes(&mut self, tag: u8, b: &[u8]) {
        self.0.push(tag);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    #[inline]
    pub fn begin_row(&mut self, values: usize) {
        self.varint(values as u64);
    }
    #[inline]
    pub fn null(&mut self) {
        self.0.push(NULL);
    }
    #[inline]
    pub fn bool(&mut self, b: bool) {
        self.0.push(if b { TRUE } else { FALSE });
    }
    #[inline]
    pub fn int(&mut self, i: i64) {
        self.0.push(INT);
        self.zigzag(i);
    }
    #[inline]
    pub fn float32(&mut self, f: f32) {
        self.0.push(FLOAT32);
        self.0.extend_from_slice(&f.to_le_bytes());
    }
    #[inline]
    pub fn float64(&mut self, f: f64) {
        self.0.push(FLOAT64);
        self.0.extend_from_slice(&f.to_le_bytes());
    }
    /// A decimal from its parts, stored as [`crate::decimal_from_parts`] would.
    #[inline]
    pub fn decimal(&mut self, unscaled: i128, scale: u32) {
        let (bytes, len) = shortest_le_bytes(unscaled);
        self.decimal_bytes(&bytes[..len], scale);
    }
    #[inline]
    fn decimal_bytes(&mut self, unscaled: &[u8], scale: u32) {
        self.0.push(DECIMAL);
        self.varint(u64::from(scale));
        self.varint(unscaled.len() as u64);
        self.0.extend_from_slice(unscaled);
    }
    #[inline]
    pub fn text(&mut self, s: &str) {
        self.bytes(TEXT, s.as_bytes());
    }
    #[inline]
    pub fn binary(&mut self, b: &[u8]) {
        self.bytes(BINARY, b);
    }
    #[inline]
    pub fn uuid(&mut self, b: &[u8]) {
        self.bytes(UUID, b);
    }
    #[inline]
    pub fn date(&mut self, days: i32) {
        self.0.push(DATE);
        self.zigzag(i64::from(days));
    }
    #[inline]
    pub fn time(&mut self, ticks: i64) {
        self.0.push(TIME);
        self.zigzag(ticks);
    }
    #[inline]
    pub fn datetime(&mut self, ticks: i64) {
        self.0.push(DATETIME);
        self.zigzag(ticks);
    }
    #[inline]
    pub fn datetimeoffset(&mut self, utc_ticks: i64, offset_minutes: i32) {
        self.0.push(DATETIMEOFFSET);
        self.zigzag(utc_ticks);
        self.zigzag(i64::from(offset_minutes));
    }

    /// Any wire value.
    pub fn value(&mut self, value: &Value) {
        match &value.kind {
            None => self.null(),
            Some(Kind::Bool(b)) => self.bool(*b),
            Some(Kind::Int(i)) => self.int(*i),
            Some(Kind::Float32(f)) => self.float32(*f),
            Some(Kind::Float64(f)) => self.float64(*f),
            Some(Kind::Decimal(d)) => self.decimal_bytes(&d.unscaled, d.scale),
            Some(Kind::Text(s)) => self.text(s),
            Some(Kind::Binary(b)) => self.binary(b),
            Some(Kind::Uuid(b)) => self.uuid(b),
            Some(Kind::Date(d)) => self.date(*d),
            Some(Kind::Time(t)) => self.time(*t),
            Some(Kind::Datetime(t)) => self.datetime(*t),
            Some(Kind::Datetimeoffset(d)) => self.datetimeoffset(d.utc_ticks, d.offset_minutes),
            Some(Kind::Unchanged(u)) => {
                self.0.push(UNCHANGED);
                self.0.push(u8::from(*u));
            }
        }
    }

    /// A whole row of wire values.
    pub fn row(&mut self, values: &[Value]) {
        self.begin_row(values.len());
        for v in values {
            self.value(v);
        }
    }
}

/// Reads packed rows back, one at a time, into reused [`Value`] slots.
pub struct PackedReader<'a> {
    rest: &'a [u8],
}

fn malformed(detail: impl Into<String>) -> TypemapError {
    TypemapError::Malformed {
        column: String::new(),
        detail: format!("packed row batch: {}", detail.into()),
    }
}

impl<'a> PackedReader<'a> {
    pub fn new(packed: &'a [u8]) -> PackedReader<'a> {
        PackedReader { rest: packed }
    }

    /// No bytes left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, TypemapError> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| malformed("ends inside a value"))?;
        self.rest = rest;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, TypemapError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    #[inline]
    fn zigzag(&mut self) -> Result<i64, TypemapError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], TypemapError> {
        if n > self.rest.len() {
            return Err(malformed(format!("a value of {n} bytes runs past the end")));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    #[inline]
    fn sized(&mut self) -> Result<&'a [u8], TypemapError> {
        let n = usize::try_from(self.varint()?).map_err(|_| malformed("length overflows"))?;
        self.take(n)
    }

    #[inline]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], TypemapError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// Reads the next row into `row`, reusing its values' strings and byte vectors.
    pub fn next_row(&mut self, row: &mut Vec<Value>) -> Result<(), TypemapError> {
        let n = usize::try_from(self.varint()?).map_err(|_| malformed("value count overflows"))?;
        if n > self.rest.len() {
            return Err(malformed(format!("a row of {n} values runs past the end")));
        }
        row.resize_with(n, Value::default);
        for slot in row.iter_mut() {
            self.next_value(slot)?;
        }
        Ok(())
    }

    #[inline]
    fn next_value(&mut self, slot: &mut Value) -> Result<(), TypemapError> {
        let tag = self.byte()?;
        slot.kind = match tag {
            NULL => None,
            FALSE => Some(Kind::Bool(false)),
            TRUE => Some(Kind::Bool(true)),
            INT => Some(Kind::Int(self.zigzag()?)),
            FLOAT32 => Some(Kind::Float32(f32::from_le_bytes(self.fixed()?))),
            FLOAT64 => Some(Kind::Float64(f64::from_le_bytes(self.fixed()?))),
            DECIMAL => {
                let scale = u32::try_from(self.varint()?)
                    .map_err(|_| malformed("decimal scale overflows"))?;
                let unscaled = self.sized()?;
                if let Some(Kind::Decimal(d)) = &mut slot.kind {
                    d.unscaled.clear();
                    d.unscaled.extend_from_slice(unscaled);
                    d.scale = scale;
                    return Ok(());
                }
                Some(Kind::Decimal(Decimal {
                    unscaled: unscaled.to_vec(),
                    scale,
                }))
            }
            TEXT => {
                let bytes = self.sized()?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| malformed(format!("text is not UTF-8: {e}")))?;
                if let Some(Kind::Text(s)) = &mut slot.kind {
                    s.clear();
                    s.push_str(text);
                    return Ok(());
                }
                Some(Kind::Text(text.to_owned()))
            }
            BINARY | UUID => {
                let bytes = self.sized()?;
                match (&mut slot.kind, tag) {
                    (Some(Kind::Binary(b)), BINARY) | (Some(Kind::Uuid(b)), UUID) => {
                        b.clear();
                        b.extend_from_slice(bytes);
                        return Ok(());
                    }
                    (_, BINARY) => Some(Kind::Binary(bytes.to_vec())),
                    _ => Some(Kind::Uuid(bytes.to_vec())),
                }
            }
            DATE => {
                let days = self.zigzag()?;
                Some(Kind::Date(
                    i32::try_from(days).map_err(|_| malformed("date out of range"))?,
                ))
            }
            TIME => Some(Kind::Time(self.zigzag()?)),
            DATETIME => Some(Kind::Datetime(self.zigzag()?)),
            DATETIMEOFFSET => {
                let utc_ticks = self.zigzag()?;
                let offset = self.zigzag()?;
                Some(Kind::Datetimeoffset(DateTimeOffset {
                    utc_ticks,
                    offset_minutes: i32::try_from(offset)
                        .map_err(|_| malformed("offset out of range"))?,
                }))
            }
            UNCHANGED => Some(Kind::Unchanged(self.byte()? != 0)),
            other => return Err(malformed(format!("unknown value tag {other}"))),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decimal_from_parts;

    fn v(k: Kind) -> Value {
        Value { kind: Some(k) }
    }

    fn every_kind() -> Vec<Value> {
        vec![
            Value { kind: None },
            v(Kind::Bool(false)),
            v(Kind::Bool(true)),
            v(Kind::Int(0)),
            v(Kind::Int(i64::MIN)),
            v(Kind::Int(i64::MAX)),
            v(Kind::Int(-1)),
            v(Kind::Float32(f32::MIN_POSITIVE)),
            v(Kind::Float32(-0.0)),
            v(Kind::Float64(f64::MAX)),
            v(Kind::Float64(f64::NEG_INFINITY)),
            v(Kind::Decimal(decimal_from_parts(10_i128.pow(38) - 1, 38))),
            v(Kind::Decimal(decimal_from_parts(-(10_i128.pow(38) - 1), 0))),
            v(Kind::Decimal(decimal_from_parts(-12345, 2))),
            v(Kind::Decimal(decimal_from_parts(0, 4))),
            v(Kind::Text(String::new())),
            v(Kind::Text("a\0b 𝄞 ü".into())),
            v(Kind::Text("x".repeat(100_000))),
            v(Kind::Binary(vec![])),
            v(Kind::Binary((0..=255).collect())),
            v(Kind::Uuid((0u8..16).collect())),
            v(Kind::Date(0)),
            v(Kind::Date(3_652_058)),
            v(Kind::Time(863_999_999_999)),
            v(Kind::Datetime(0)),
            v(Kind::Datetime(3_652_059 * 864_000_000_000 - 1)),
            v(Kind::Datetimeoffset(DateTimeOffset {
                utc_ticks: 5,
                offset_minutes: -840,
            })),
            v(Kind::Unchanged(true)),
        ]
    }

    #[test]
    fn rows_round_trip_exactly_into_reused_slots() {
        let rows = [
            every_kind(),
            every_kind().into_iter().rev().collect(),
            vec![],
            vec![Value { kind: None }],
        ];
        let mut buf = Vec::new();
        for r in &rows {
            PackedWriter(&mut buf).row(r);
        }
        let mut reader = PackedReader::new(&buf);
        let mut slot = Vec::new();
        for r in &rows {
            reader.next_row(&mut slot).unwrap();
            assert_eq!(&slot, r);
        }
        assert!(reader.is_empty());
    }

    #[test]
    fn decimals_from_parts_pack_like_the_wire_form() {
        for (unscaled, scale) in [
            (0i128, 0u32),
            (127, 2),
            (128, 2),
            (-128, 3),
            (-129, 3),
            (i128::MAX, 38),
            (i128::MIN, 38),
        ] {
            let mut a = Vec::new();
            PackedWriter(&mut a).decimal(unscaled, scale);
            let mut b = Vec::new();
            PackedWriter(&mut b).value(&v(Kind::Decimal(decimal_from_parts(unscaled, scale))));
            assert_eq!(a, b, "{unscaled} scale {scale}");
        }
    }

    #[test]
    fn truncated_or_unknown_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        PackedWriter(&mut buf).row(&every_kind());
        let mut slot = Vec::new();
        for cut in 0..buf.len() {
            assert!(
                PackedReader::new(&buf[..cut]).next_row(&mut slot).is_err(),
                "cut at {cut}"
            );
        }
        assert!(PackedReader::new(&[1, 99]).next_row(&mut slot).is_err());
        assert!(PackedReader::new(&[1, TEXT, 2, 0xff, 0xfe])
            .next_row(&mut slot)
            .is_err());
    }
}
