//! The thin adapter between apply and `dbsync-typemap`: type mapping, expression
//! translation and names all come from typemap, so capture, coordinator and apply share one
//! rule for each.

use dbsync_proto::v1::ColumnSchema;
pub use dbsync_typemap::{
    map_column, quote_ident, quote_literal, shorten_identifier, translate_expression, ExprColumn,
    ExprContext, ExprUsage, MappingOptions, PgKind,
};
use dbsync_typemap::{pg_identifier, Capitalization};

use crate::plan::TableTarget;

/// The PostgreSQL column type for a SQL Server column (typemap's mapping with the default
/// options), or why there is none.
pub fn map_column_type(col: &ColumnSchema) -> Result<String, String> {
    map_column(col, &MappingOptions::default())
        .map(|t| t.ddl())
        .map_err(|e| e.to_string())
}

/// The task's capitalization policy by name (`lower` default, `source`, `upper`).
pub fn capitalization(policy: &str) -> Capitalization {
    match policy {
        "source" => Capitalization::Source,
        "upper" => Capitalization::Upper,
        _ => Capitalization::Lower,
    }
}

/// Applies the capitalization policy to a name and shortens it to 63 bytes (typemap's rule,
/// shared with the coordinator).
pub fn capitalize(name: &str, policy: &str) -> String {
    pg_identifier(name, capitalization(policy))
}

/// The expression context of a table: its written columns under their target names.
pub fn expr_context(t: &TableTarget, usage: ExprUsage) -> ExprContext {
    ExprContext::for_columns(
        usage,
        t.source
            .columns
            .iter()
            .zip(&t.columns)
            .filter(|(_, tc)| !tc.skip)
            .map(|(c, tc)| (c, tc.name.clone())),
        capitalization(&t.capitalization),
        &MappingOptions::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_types_as_the_reference_says() {
        let c = |t: &str, len: i32, p: i32, s: i32| ColumnSchema {
            type_name: t.into(),
            max_length: len,
            precision: p,
            scale: s,
            ..Default::default()
        };
        assert_eq!(
            map_column_type(&c("nvarchar", 400, 0, 0)).unwrap(),
            "varchar(200)"
        );
        assert_eq!(map_column_type(&c("nvarchar", -1, 0, 0)).unwrap(), "text");
        assert_eq!(
            map_column_type(&c("datetime2", 8, 27, 7)).unwrap(),
            "timestamp(6)"
        );
        assert_eq!(
            map_column_type(&c("decimal", 17, 38, 38)).unwrap(),
            "numeric(38,38)"
        );
        assert_eq!(
            map_column_type(&c("money", 8, 19, 4)).unwrap(),
            "numeric(19,4)"
        );
        assert_eq!(
            map_column_type(&c("float", 8, 53, 0)).unwrap(),
            "double precision"
        );
        assert!(map_column_type(&c("cursor", 0, 0, 0)).is_err());
    }
}
