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

use dbsync_apply::pg::catalog::{ResolvedTable, WriteColumn};
use dbsync_proto::v1::{CanonicalColumn, Value};
pub use dbsync_typemap::digest::{bucket_of, Aggregate, Digest16};
use dbsync_typemap::digest::{canonical_column, RowDigester};
use dbsync_typemap::{
    canonical_bytes, canonical_text, pg_canonical_sql, pg_canonical_text_sql, quote_literal,
    PgColumnType,
};

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
        // Columns computed by ETL expressions differ from the source on purpose: they are not
        // compared (key columns stay, rows are matched by them).
        let computed = |w: &WriteColumn| {
            table
                .target
                .etl
                .as_ref()
                .is_some_and(|e| e.computes(w.source_index))
        };
        let compared: Vec<usize> = (0..table.write.len())
            .filter(|i| table.key.contains(i) || !computed(&table.write[*i]))
            .collect();
        let columns: Vec<Column> = compared
            .iter()
            .map(|&i| &table.write[i])
            .map(|w| Column {
                source_index: w.source_index,
                source_name: table.target.source.columns[w.source_index].name.clone(),
                quoted: w.quoted.clone(),
                ty: w.ty.clone(),
            })
            .collect();
        let keyed = !table.key.is_empty();
        let key = if keyed {
            table
                .key
                .iter()
                .filter_map(|k| compared.iter().position(|c| c == k))
                .collect()
        } else {
            (0..columns.len()).collect()
        };
        Shape {
            columns,
            key,
            keyed,
            qualified: table.target.qualified.clone(),
        }
    }

    /// Computes the source side's digests as [`Shape::row_digest_sql`] and
    /// [`Shape::key_digest_sql`] do on the target.
    pub fn digester(&self) -> RowDigester {
        let columns = self
            .columns
            .iter()
            .map(|c| (c.source_index, c.ty.clone()))
            .collect();
        RowDigester::new(
            columns,
            if self.keyed {
                self.key.clone()
            } else {
                Vec::new()
            },
        )
    }

    /// The written columns and key for capture's `ChecksumChunks` (digests next to the source).
    pub fn wire(&self) -> (Vec<CanonicalColumn>, Vec<u32>) {
        let columns = self
            .columns
            .iter()
            .map(|c| canonical_column(c.source_index, c.ty.kind))
            .collect();
        let key = if self.keyed {
            self.key.iter().map(|k| *k as u32).collect()
        } else {
            Vec::new()
        };
        (columns, key)
    }

    /// `md5(<framed canonical text of every written column>)`.
    pub fn row_digest_sql(&self) -> String {
        digest_sql(
            self.columns
                .iter()
                .map(|c| pg_canonical_sql(&c.quoted, &c.ty)),
        )
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
        format!(
            "((('x' || substr({}, 1, 8))::bit(32)::int8) % {})",
            self.key_digest_sql(),
            buckets.max(1)
        )
    }

    /// The key rendered as `name=text, …` (canonical texts), equal to [`Shape::render_key`].
    pub fn render_key_sql(&self) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|k| {
                let c = &self.columns[*k];
                format!(
                    "{} || COALESCE({}, 'NULL')",
                    quote_literal(&format!("{}=", c.source_name)),
                    pg_canonical_text_sql(&c.quoted, &c.ty)
                )
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
    format!(
        "md5({})",
        if parts.is_empty() {
            "''".to_string()
        } else {
            parts.join(" || ")
        }
    )
}

/// Digests of source rows, reusing one buffer (no allocation per row).
pub struct RowHasher<'a> {
    shape: &'a Shape,
    digester: RowDigester,
}

impl<'a> RowHasher<'a> {
    pub fn new(shape: &'a Shape) -> RowHasher<'a> {
        RowHasher {
            shape,
            digester: shape.digester(),
        }
    }

    /// `(key digest, row digest)` of a source row (values in source column order).
    pub fn digests(&mut self, values: &[Value]) -> (Digest16, Digest16) {
        self.digester.digests(values)
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
        self.shape
            .key
            .iter()
            .map(|k| {
                values
                    .get(self.shape.columns[*k].source_index)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Parses a 32-digit hex digest from PostgreSQL's `md5()`.
pub fn parse_digest(hex_text: &str) -> Option<Digest16> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}
