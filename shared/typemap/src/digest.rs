//! Order-independent row digests over canonical forms, for verification. Capture computes
//! them next to the source (`ChecksumChunks` with columns), verification computes the same
//! from PostgreSQL with [`crate::pg_canonical_sql`], so only sums per key range cross the
//! network.
//!
//! A row's digest is MD5 over the framed canonical forms of its written columns
//! ([`canonical_bytes`]); a key's digest is MD5 over its key columns' forms in key order (a
//! table without key: the row digest). A set of rows is summarized by [`Aggregate`]: the row
//! count and the sums of the digests' two 64-bit halves. Addition does not depend on row order
//! (the engines scan in their own orders), and unlike XOR a duplicated row does not cancel out.

use dbsync_proto::v1::{CanonicalColumn, ColumnSchema, Value};
use md5::{Digest, Md5};

use crate::{canonical_bytes, map_column, MappingOptions, PgColumnType, PgKind};

pub type Digest16 = [u8; 16];

/// Count and digest sums of a set of rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub rows: u64,
    pub high: i128,
    pub low: i128,
}

impl Aggregate {
    pub fn add(&mut self, digest: &Digest16) {
        let (high, low) = lanes(digest);
        self.rows += 1;
        self.high += i128::from(high);
        self.low += i128::from(low);
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.rows += other.rows;
        self.high += other.high;
        self.low += other.low;
    }

    /// The sums as 16-byte big-endian two's complement (the wire form).
    pub fn sums_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.high.to_be_bytes().to_vec(),
            self.low.to_be_bytes().to_vec(),
        )
    }

    /// From the wire form; None when a sum is not 16 bytes.
    pub fn from_sums_bytes(rows: u64, high: &[u8], low: &[u8]) -> Option<Aggregate> {
        Some(Aggregate {
            rows,
            high: i128::from_be_bytes(high.try_into().ok()?),
            low: i128::from_be_bytes(low.try_into().ok()?),
        })
    }
}

fn lanes(d: &Digest16) -> (i64, i64) {
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&d[..8]);
    low.copy_from_slice(&d[8..]);
    (i64::from_be_bytes(high), i64::from_be_bytes(low))
}

/// The bucket of a key digest among `buckets` (first 32 bits, big-endian, modulo).
pub fn bucket_of(key: &Digest16, buckets: u32) -> u32 {
    u32::from_be_bytes([key[0], key[1], key[2], key[3]]) % buckets.max(1)
}

/// Key and row digests of source rows, reusing one buffer (no allocation per row).
pub struct RowDigester {
    /// (index into the source row, target type) of each written column.
    columns: Vec<(usize, PgColumnType)>,
    /// Indices into `columns` in key order; empty for a table without key.
    key: Vec<usize>,
    buf: Vec<u8>,
    /// Start offset of each column's form in `buf`.
    starts: Vec<usize>,
}

impl RowDigester {
    pub fn new(columns: Vec<(usize, PgColumnType)>, key: Vec<usize>) -> RowDigester {
        let starts = Vec::with_capacity(columns.len() + 1);
        RowDigester {
            columns,
            key,
            buf: Vec::with_capacity(512),
            starts,
        }
    }

    /// `(key digest, row digest)` of a source row (values in source column order).
    pub fn digests(&mut self, values: &[Value]) -> (Digest16, Digest16) {
        self.buf.clear();
        self.starts.clear();
        for (source_index, ty) in &self.columns {
            self.starts.push(self.buf.len());
            match values.get(*source_index) {
                Some(v) => canonical_bytes(v, ty, &mut self.buf),
                None => self.buf.extend_from_slice(b"N;"),
            }
        }
        self.starts.push(self.buf.len());
        let row: Digest16 = Md5::digest(&self.buf).into();
        if self.key.is_empty() {
            return (row, row);
        }
        let mut key = Md5::new();
        for k in &self.key {
            key.update(&self.buf[self.starts[*k]..self.starts[*k + 1]]);
        }
        (key.finalize().into(), row)
    }
}

/// The type a source column's values are compared in when the target column is of `kind`:
/// the default mapping's policies (text cleaning, sql_variant as text) with the target's kind.
/// The one rule for both sides: apply encodes and verify compares its written columns in this
/// type, capture digests source rows in it.
pub fn canonical_type(source: &ColumnSchema, kind: PgKind) -> PgColumnType {
    let mut ty = map_column(source, &MappingOptions::default())
        .unwrap_or_else(|_| PgColumnType::new(&source.name, kind));
    ty.kind = kind;
    ty
}

/// The wire form of a written column for [`kind_from_column`].
pub fn canonical_column(source_index: usize, kind: PgKind) -> CanonicalColumn {
    let (precision, scale, length) = match kind {
        PgKind::Numeric { precision, scale } => {
            (precision.map_or(-1, i32::from), u32::from(scale), -1)
        }
        PgKind::Time { precision }
        | PgKind::Timestamp { precision }
        | PgKind::Timestamptz { precision } => (i32::from(precision), 0, -1),
        PgKind::Char { length } => (-1, 0, i32::try_from(length).unwrap_or(i32::MAX)),
        PgKind::Varchar { length } => (
            -1,
            0,
            length.map_or(-1, |l| i32::try_from(l).unwrap_or(i32::MAX)),
        ),
        _ => (-1, 0, -1),
    };
    CanonicalColumn {
        source_index: u32::try_from(source_index).unwrap_or(u32::MAX),
        pg_type: kind.type_name().to_string(),
        precision,
        scale,
        length,
    }
}

/// The target kind a [`canonical_column`] describes; None for an unknown type name.
pub fn kind_from_column(c: &CanonicalColumn) -> Option<PgKind> {
    let digits = u8::try_from(c.precision.clamp(0, 6)).unwrap_or(6);
    let length = u32::try_from(c.length).ok();
    Some(match c.pg_type.as_str() {
        "bool" => PgKind::Bool,
        "int2" => PgKind::SmallInt,
        "int4" => PgKind::Integer,
        "int8" => PgKind::BigInt,
        "float4" => PgKind::Real,
        "float8" => PgKind::Double,
        "numeric" => PgKind::Numeric {
            precision: u8::try_from(c.precision).ok(),
            scale: u8::try_from(c.scale).ok()?,
        },
        "date" => PgKind::Date,
        "time" => PgKind::Time { precision: digits },
        "timestamp" => PgKind::Timestamp { precision: digits },
        "timestamptz" => PgKind::Timestamptz { precision: digits },
        "uuid" => PgKind::Uuid,
        "bytea" => PgKind::Bytea,
        "bpchar" => PgKind::Char {
            length: length.unwrap_or(1),
        },
        "varchar" => PgKind::Varchar { length },
        "text" => PgKind::Text,
        "xml" => PgKind::Xml,
        "jsonb" => PgKind::Jsonb,
        "geometry" => PgKind::Geometry,
        "geography" => PgKind::Geography,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_do_not_depend_on_order_and_count_duplicates() {
        let a: Digest16 = Md5::digest(b"a").into();
        let b: Digest16 = Md5::digest(b"b").into();
        let mut x = Aggregate::default();
        x.add(&a);
        x.add(&b);
        let mut y = Aggregate::default();
        y.add(&b);
        y.add(&a);
        assert_eq!(x, y);
        let mut z = y;
        z.add(&a);
        z.add(&a);
        assert_ne!(y, z, "a duplicated pair must not cancel out");
        let (high, low) = z.sums_bytes();
        assert_eq!(Aggregate::from_sums_bytes(z.rows, &high, &low), Some(z));
        assert_eq!(Aggregate::from_sums_bytes(1, &high[1..], &low), None);
    }

    #[test]
    fn buckets_take_the_first_32_bits() {
        let mut d = [0u8; 16];
        d[3] = 7;
        assert_eq!(bucket_of(&d, 5), 2);
        d[0] = 0xff;
        assert_eq!(bucket_of(&d, 1), 0);
        assert_eq!(bucket_of(&d, 1000), (0xff00_0007u32 % 1000));
    }

    #[test]
    fn every_kind_survives_the_wire_form() {
        let kinds = [
            PgKind::Bool,
            PgKind::SmallInt,
            PgKind::Integer,
            PgKind::BigInt,
            PgKind::Real,
            PgKind::Double,
            PgKind::Numeric {
                precision: Some(19),
                scale: 4,
            },
            PgKind::Numeric {
                precision: None,
                scale: 0,
            },
            PgKind::Date,
            PgKind::Time { precision: 3 },
            PgKind::Timestamp { precision: 6 },
            PgKind::Timestamptz { precision: 0 },
            PgKind::Uuid,
            PgKind::Bytea,
            PgKind::Char { length: 10 },
            PgKind::Varchar { length: Some(20) },
            PgKind::Varchar { length: None },
            PgKind::Text,
            PgKind::Xml,
            PgKind::Jsonb,
            PgKind::Geometry,
            PgKind::Geography,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let wire = canonical_column(i, kind);
            assert_eq!(wire.source_index as usize, i);
            assert_eq!(kind_from_column(&wire), Some(kind), "{wire:?}");
        }
        let unknown = CanonicalColumn {
            pg_type: "money".into(),
            ..Default::default()
        };
        assert_eq!(kind_from_column(&unknown), None);
    }

    #[test]
    fn a_keyless_row_is_its_own_key() {
        let ty = |k| PgColumnType::new("c", k);
        let values = [Value::default(), Value::default()];
        let mut keyed = RowDigester::new(
            vec![(0, ty(PgKind::Integer)), (1, ty(PgKind::Text))],
            vec![0],
        );
        let mut keyless = RowDigester::new(
            vec![(0, ty(PgKind::Integer)), (1, ty(PgKind::Text))],
            vec![],
        );
        let (k1, r1) = keyed.digests(&values);
        let (k2, r2) = keyless.digests(&values);
        assert_eq!(r1, r2);
        assert_eq!(k2, r2);
        assert_ne!(k1, r1);
        let n: Digest16 = Md5::digest(b"N;").into();
        assert_eq!(k1, n, "the key digest covers the key column's form only");
    }
}
