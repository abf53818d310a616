//! The real target columns of a table, read from `pg_attribute`: writers encode by the type
//! PostgreSQL has (domains resolved to their base type), not by the type we meant to create.

use tokio_postgres::Client;

use dbsync_typemap::digest::canonical_type;
use dbsync_typemap::{PgColumnType, PgKind};

use crate::error::{ApplyError, Result};
use crate::pg::types::quote_ident;
use crate::plan::TableTarget;

/// A source column that is written to the target.
#[derive(Clone, Debug)]
pub struct WriteColumn {
    /// Index into the source row (`TableSchema.columns` order).
    pub source_index: usize,
    /// Quoted target column name.
    pub quoted: String,
    /// How values are encoded: the kind PostgreSQL really has (from the catalog), with the
    /// value policies of the source column's mapping (invalid text, sql_variant as text).
    pub ty: PgColumnType,
    /// The base type as SQL (`integer`, `character varying`), for array casts.
    pub base_type: String,
}

/// A table ready for writing: what to write and the key.
#[derive(Clone, Debug)]
pub struct ResolvedTable {
    pub target: TableTarget,
    /// Written columns in source order (skipped and generated columns left out).
    pub write: Vec<WriteColumn>,
    /// Indices into `write` of the key columns, in key order.
    pub key: Vec<usize>,
}

const COLUMNS_QUERY: &str = "
    SELECT a.attname::text,
           CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END::oid,
           format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END, NULL),
           bt.typname::text,
           a.attgenerated::text,
           CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
     WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum";

/// True if the table exists on the target.
pub async fn table_exists(client: &Client, t: &TableTarget) -> Result<bool> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.qualified])
        .await
        .map_err(|e| ApplyError::target(&t.qualified, "looking the table up", e))?;
    Ok(row.get(0))
}

/// Number of unique and exclusion indexes of a table: with only the key's, changes of
/// different rows can be regrouped without another constraint seeing them in a new order.
/// A unique index over a nondeterministic (case-insensitive) collation counts twice: keys that
/// differ in bytes ('abc', 'ABC') can name the same row there, which the applier's byte-wise
/// row tracking cannot see, so such tables keep their changes in order.
pub async fn unique_index_count(client: &Client, qualified: &str) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT count(*) + count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
                     WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                       AND NOT c.collisdeterministic))
               FROM pg_index i WHERE i.indrelid = $1::text::regclass AND (i.indisunique OR i.indisexclusion)",
            &[&qualified],
        )
        .await
        .map_err(|e| ApplyError::target(qualified, "reading its unique indexes", e))?;
    Ok(row.get(0))
}

impl ResolvedTable {
    pub async fn load(client: &Client, target: TableTarget) -> Result<ResolvedTable> {
        let rows = client
            .query(COLUMNS_QUERY, &[&target.qualified])
            .await
            .map_err(|e| ApplyError::target(&target.qualified, "reading the target columns", e))?;
        let mut write = Vec::new();
        let mut key = vec![usize::MAX; target.key.len()];
        for (source_index, col) in target.columns.iter().enumerate() {
            if col.skip {
                continue;
            }
            let Some(row) = rows.iter().find(|r| r.get::<_, &str>(0) == col.name) else {
                return Err(ApplyError::InvalidPlan {
                    object: format!("{}.{}", target.qualified, col.name),
                    detail:
                        "the target table has no such column; add it or skip the column in the task"
                            .into(),
                });
            };
            let generated: &str = row.get(4);
            if !generated.is_empty() {
                // A generated column is computed by PostgreSQL; its source value is not written.
                continue;
            }
            let oid: u32 = row.get(1);
            let type_name: &str = row.get(3);
            let kind = kind_from_catalog(oid, row.get(5), type_name).ok_or_else(|| {
                ApplyError::InvalidPlan {
                    object: format!("{}.{}", target.qualified, col.name),
                    detail: format!("column type {type_name} is not supported as a write target"),
                }
            })?;
            let ty = canonical_type(&target.source.columns[source_index], kind);
            if let Some(k) = target.key.iter().position(|k| *k == source_index) {
                key[k] = write.len();
            }
            write.push(WriteColumn {
                source_index,
                quoted: quote_ident(&col.name),
                ty,
                // `character` alone means char(1): a cast to it would cut char(n) keys to one
                // character, so bpchar is named without its SQL spelling.
                base_type: if oid == 1042 {
                    "bpchar".to_string()
                } else {
                    row.get(2)
                },
            });
        }
        if key.contains(&usize::MAX) {
            return Err(ApplyError::InvalidPlan {
                object: target.qualified.clone(),
                detail: "a key column is generated on the target".into(),
            });
        }
        Ok(ResolvedTable { target, write, key })
    }

    /// `("a", "b")` of the written columns.
    pub fn column_list(&self) -> String {
        let names: Vec<&str> = self.write.iter().map(|c| c.quoted.as_str()).collect();
        format!("({})", names.join(", "))
    }

    pub fn key_list(&self) -> String {
        let names: Vec<&str> = self
            .key
            .iter()
            .map(|k| self.write[*k].quoted.as_str())
            .collect();
        format!("({})", names.join(", "))
    }
}

/// The encoding of a target column from its base type OID and typmod; `type_name` decides
/// for extension types (citext, PostGIS).
pub fn kind_from_catalog(oid: u32, typmod: i32, type_name: &str) -> Option<PgKind> {
    let precision = |default: u8| {
        if typmod < 0 {
            default
        } else {
            u8::try_from(typmod).unwrap_or(default)
        }
    };
    let length = || u32::try_from(typmod - 4).ok();
    Some(match oid {
        16 => PgKind::Bool,
        17 => PgKind::Bytea,
        20 => PgKind::BigInt,
        21 => PgKind::SmallInt,
        23 => PgKind::Integer,
        // text, name, json: UTF-8 text on the wire
        25 | 19 | 114 => PgKind::Text,
        142 => PgKind::Xml,
        700 => PgKind::Real,
        701 => PgKind::Double,
        1042 => PgKind::Char {
            length: length().unwrap_or(1),
        },
        1043 => PgKind::Varchar { length: length() },
        1082 => PgKind::Date,
        1083 => PgKind::Time {
            precision: precision(6),
        },
        1114 => PgKind::Timestamp {
            precision: precision(6),
        },
        1184 => PgKind::Timestamptz {
            precision: precision(6),
        },
        1700 if typmod < 4 => PgKind::Numeric {
            precision: None,
            scale: 0,
        },
        1700 => PgKind::Numeric {
            precision: u8::try_from(((typmod - 4) >> 16) & 0xffff).ok(),
            scale: u8::try_from((typmod - 4) & 0xffff).unwrap_or(0),
        },
        2950 => PgKind::Uuid,
        3802 => PgKind::Jsonb,
        _ => match type_name {
            "citext" => PgKind::Text,
            "geometry" => PgKind::Geometry,
            "geography" => PgKind::Geography,
            _ => return None,
        },
    })
}
