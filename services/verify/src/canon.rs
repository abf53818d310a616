//! The two halves of the comparison: row digests of source values computed here, and the SQL
//! that makes PostgreSQL compute the same digests from the stored values.
//!
//! A row's digest is MD5 over the framed canonical forms of its written columns
//! (`dbsync_typemap::canonical_bytes` / `pg_canonical_sql`), a key's digest MD5 over its key
//! columns' forms in key order (for a table without key: the whole row). A set of rows is
//! summarized by [`Aggregate`]: the row count and two 64-bit lanes of the digests added up.
//! Addition does not depend on row order, so the two engines may scan in their own orders
//! (SQL Server's uniqueidentifier and collation orders differ from PostgreSQL's), and unlike
//! XOR a duplicated row does not cancel out.

use dbsync_apply::pg::catalog::ResolvedTable;
use dbsync_proto::v1::Value;
use dbsync_typemap::{canonical_bytes, canonical_text, pg_canonical_sql, pg_canonical_text_sql, quote_literal, PgColumnType};
use md5::{Digest, Md5};

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

/// A written column as verification sees it.
#[derive(Clone, Debug)]
pub struct Column {
    /// Index into the source row.
    pub source_index: usize,
    pub source_name: String,
    /// Quoted target name.
    pub quoted: String,
    pub ty: PgColumnType,
}

/// The comparable shape of one table: written columns and which of them form the key.
#[derive(Clone, Debug)]
pub struct Shape {
    pub columns: Vec<Column>,
    /// Indices into `columns`, in key order; every column for a table without key.
    pub key: Vec<usize>,
    /// False for a table without primary key or unique index (rows are matched whole).
    pub keyed: bool,
    /// `"schema"."table"` on the target.
    pub qualified: String,
}

impl Shape {
    pub fn from_resolved(table: &ResolvedTable) -> Shape {
        let columns: Vec<Column> = table
            .write
            .iter()
            .map(|w| Column {
                source_index: w.source_index,
                source_name: table.target.source.columns[w.source_index].name.clone(),
                quoted: w.quoted.clone(),
                ty: w.ty.clone(),
            })
            .collect();
        let keyed = !table.key.is_empty();
        let key = if keyed { table.key.clone() } else { (0..columns.len()).collect() };
        Shape { columns, key, keyed, qualified: table.target.qualified.clone() }
    }

    /// `md5(<framed canonical text of every written column>)`.
    pub fn row_digest_sql(&self) -> String {
        digest_sql(self.columns.iter().map(|c| pg_canonical_sql(&c.quoted, &c.ty)))
    }

    /// `md5(<framed canonical text of the key columns>)`.
    pub fn key_digest_sql(&self) -> String {
        digest_sql(self.key.iter().map(|k| {
            let c = &self.columns[*k];
            pg_canonical_sql(&c.quoted, &c.ty)
        }))
    }

    /// The bucket of a row's key among `buckets`, as [`bucket_of`] computes it.
    pub fn bucket_sql(&self, buckets: u32) -> String {
        format!("((('x' || substr({}, 1, 8))::bit(32)::int8) % {})", self.key_digest_sql(), buckets.max(1))
    }

    /// The key rendered as `name=text, …` (canonical texts), equal to [`Shape::render_key`].
    pub fn render_key_sql(&self) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|k| {
                let c = &self.columns[*k];
                format!("{} || COALESCE({}, 'NULL')", quote_literal(&format!("{}=", c.source_name)), pg_canonical_text_sql(&c.quoted, &c.ty))
            })
            .collect();
        format!("({})", parts.join(" || ', ' || "))
    }

    /// Renders key values (in key order) as [`Shape::render_key_sql`] does.
    pub fn render_key(&self, key: &[Value]) -> String {
        let mut out = String::new();
        let mut buf = Vec::new();
        for (i, (k, v)) in self.key.iter().zip(key).enumerate() {
            let c = &self.columns[*k];
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&c.source_name);
            out.push('=');
            buf.clear();
            if canonical_text(v, &c.ty, &mut buf) {
                out.push_str(&String::from_utf8_lossy(&buf));
            } else {
                out.push_str("NULL");
            }
        }
        out
    }
}

fn digest_sql(parts: impl Iterator<Item = String>) -> String {
    let parts: Vec<String> = parts.collect();
    format!("md5({})", if parts.is_empty() { "''".to_string() } else { parts.join(" || ") })
}

/// Digests of source rows, reusing one buffer (no allocation per row).
pub struct RowHasher<'a> {
    shape: &'a Shape,
    buf: Vec<u8>,
    /// Start offset of each column's form in `buf`.
    starts: Vec<usize>,
}

impl<'a> RowHasher<'a> {
    pub fn new(shape: &'a Shape) -> RowHasher<'a> {
        RowHasher { shape, buf: Vec::with_capacity(512), starts: Vec::with_capacity(shape.columns.len() + 1) }
    }

    /// `(key digest, row digest)` of a source row (values in source column order).
    pub fn digests(&mut self, values: &[Value]) -> (Digest16, Digest16) {
        self.buf.clear();
        self.starts.clear();
        for c in &self.shape.columns {
            self.starts.push(self.buf.len());
            match values.get(c.source_index) {
                Some(v) => canonical_bytes(v, &c.ty, &mut self.buf),
                None => self.buf.extend_from_slice(b"N;"),
            }
        }
        self.starts.push(self.buf.len());
        let row: Digest16 = Md5::digest(&self.buf).into();
        if !self.shape.keyed {
            return (row, row);
        }
        let mut key = Md5::new();
        for k in &self.shape.key {
            key.update(&self.buf[self.starts[*k]..self.starts[*k + 1]]);
        }
        (key.finalize().into(), row)
    }

    /// The framed canonical form of each written column of a source row.
    pub fn column_forms(&mut self, values: &[Value]) -> Vec<Vec<u8>> {
        self.shape
            .columns
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                match values.get(c.source_index) {
                    Some(v) => canonical_bytes(v, &c.ty, &mut out),
                    None => out.extend_from_slice(b"N;"),
                }
                out
            })
            .collect()
    }

    /// The key values of a source row, in key order.
    pub fn key_values(&self, values: &[Value]) -> Vec<Value> {
        self.shape.key.iter().map(|k| values.get(self.shape.columns[*k].source_index).cloned().unwrap_or_default()).collect()
    }
}

/// Parses a 32-digit hex digest from PostgreSQL's `md5()`.
pub fn parse_digest(hex_text: &str) -> Option<Digest16> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
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
}
