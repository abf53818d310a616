//! Golden tests for T-SQL → PostgreSQL expression translation, and a check that PostgreSQL
//! accepts the translations as defaults, generated columns, CHECKs and index predicates.

use dbsync_proto::v1::ColumnSchema;
use dbsync_typemap::*;

fn col(name: &str, type_name: &str, max_length: i32, precision: i32, scale: i32) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        type_name: type_name.into(),
        max_length,
        precision,
        scale,
        nullable: true,
        ..Default::default()
    }
}

fn table() -> Vec<ColumnSchema> {
    vec![
        col("Id", "int", 4, 10, 0),
        col("Name", "nvarchar", 100, 0, 0),
        col("Code", "char", 3, 0, 0),
        col("Price", "decimal", 9, 10, 2),
        col("Qty", "int", 4, 10, 0),
        col("IsActive", "bit", 1, 1, 0),
        col("CreatedAt", "datetime2", 8, 27, 7),
        col("CreatedUtc", "datetimeoffset", 10, 34, 7),
        col("RowGuid", "uniqueidentifier", 16, 0, 0),
        col("Order", "int", 4, 10, 0),
    ]
}

fn ctx(usage: ExprUsage) -> ExprContext {
    ExprContext::for_table(
        usage,
        &table(),
        Capitalization::Lower,
        &MappingOptions::default(),
    )
}

fn default_for(column: &str) -> ExprContext {
    let columns = table();
    let c = columns.iter().find(|c| c.name == column).unwrap();
    let ty = map_column(c, &MappingOptions::default()).unwrap();
    ctx(ExprUsage::Default).with_target(ExprUsage::Default, &ty)
}

fn ok(tsql: &str, context: &ExprContext) -> String {
    translate_expression(tsql, context).unwrap_or_else(|e| panic!("{tsql}: {e}"))
}

#[test]
fn defaults() {
    assert_eq!(ok("((0))", &default_for("IsActive")), "false");
    assert_eq!(ok("((1))", &default_for("IsActive")), "true");
    assert_eq!(ok("((0))", &default_for("Qty")), "0");
    assert_eq!(ok("((-1))", &default_for("Qty")), "-1");
    assert_eq!(ok("((0.00))", &default_for("Price")), "0.00");
    assert_eq!(
        ok("(getdate())", &default_for("CreatedAt")),
        "LOCALTIMESTAMP"
    );
    assert_eq!(
        ok("(sysdatetime())", &default_for("CreatedAt")),
        "LOCALTIMESTAMP"
    );
    assert_eq!(
        ok("(getutcdate())", &default_for("CreatedAt")),
        "(now() AT TIME ZONE 'UTC')"
    );
    assert_eq!(
        ok("(SYSUTCDATETIME())", &default_for("CreatedAt")),
        "(now() AT TIME ZONE 'UTC')"
    );
    assert_eq!(ok("(getdate())", &default_for("CreatedUtc")), "now()");
    assert_eq!(
        ok("(sysdatetimeoffset())", &default_for("CreatedUtc")),
        "now()"
    );
    assert_eq!(
        ok("(CURRENT_TIMESTAMP)", &default_for("CreatedAt")),
        "LOCALTIMESTAMP"
    );
    assert_eq!(
        ok("(newid())", &default_for("RowGuid")),
        "gen_random_uuid()"
    );
    assert_eq!(
        ok("(newsequentialid())", &default_for("RowGuid")),
        "gen_random_uuid()"
    );
    assert_eq!(ok("(N'unknown')", &default_for("Name")), "'unknown'");
    assert_eq!(ok("('it''s')", &default_for("Name")), "'it''s'");
    assert_eq!(ok("('C:\\temp')", &default_for("Name")), "E'C:\\\\temp'");
    assert_eq!(ok("(suser_sname())", &default_for("Name")), "SESSION_USER");
    assert_eq!(
        ok("(0x00FF)", &ctx(ExprUsage::Default)),
        "E'\\\\x00ff'::bytea"
    );
    assert_eq!(ok("(NULL)", &default_for("Name")), "NULL");
}

#[test]
fn checks_and_predicates() {
    let check = ctx(ExprUsage::Check);
    assert_eq!(ok("([Price]>(0))", &check), "price > 0");
    assert_eq!(
        ok("([Qty]>=(0) AND [Qty]<=(100))", &check),
        "(qty >= 0) AND (qty <= 100)"
    );
    assert_eq!(
        ok("([Code]='A' OR [Code]='B')", &check),
        "(code = 'A') OR (code = 'B')"
    );
    assert_eq!(
        ok("([Code] IN ('A', 'B', N'C'))", &check),
        "code IN ('A', 'B', 'C')"
    );
    assert_eq!(ok("([Qty] NOT IN (1,2))", &check), "qty NOT IN (1, 2)");
    assert_eq!(
        ok("([Price] BETWEEN (0) AND (99.99))", &check),
        "price BETWEEN 0 AND 99.99"
    );
    assert_eq!(ok("([IsActive]=(1))", &check), "isactive = true");
    assert_eq!(ok("([IsActive]<>0)", &check), "isactive <> false");
    assert_eq!(ok("(len([Name])>(0))", &check), "length(rtrim(name)) > 0");
    assert_eq!(
        ok("(isnull([Qty],(0))>=(0))", &check),
        "COALESCE(qty, 0) >= 0"
    );
    // COLLATE "default": LIKE works on nondeterministic (case-insensitive) columns before PG 18.
    assert_eq!(
        ok("([Name] like 'A%')", &check),
        "name COLLATE \"default\" LIKE 'A%'"
    );
    assert_eq!(ok("(NOT [Name] IS NULL)", &check), "NOT (name IS NULL)");
    assert_eq!(
        ok("([Name] IS NOT NULL)", &ctx(ExprUsage::IndexPredicate)),
        "name IS NOT NULL"
    );
    assert_eq!(ok("([Order] != 5)", &check), "\"order\" <> 5");
    assert_eq!(ok("([Qty] !< 1)", &check), "qty >= 1");
    assert_eq!(
        ok("([CreatedAt]>'2020-01-01')", &check),
        "createdat > '2020-01-01'"
    );
    assert_eq!(ok("([Qty] % 2 = 0)", &check), "(qty % 2) = 0");
    assert_eq!(ok("([Qty]*([Price]+(1)))", &check), "qty * (price + 1)");
    assert_eq!(ok("(-[Qty] < 0)", &check), "(- qty) < 0");
}

#[test]
fn computed_columns() {
    let computed = ctx(ExprUsage::Computed);
    assert_eq!(ok("([Price]*[Qty])", &computed), "price * qty");
    assert_eq!(
        ok("([Name]+N' ('+[Code]+')')", &computed),
        "((name || ' (') || code) || ')'"
    );
    assert_eq!(
        ok("(upper(ltrim(rtrim([Name]))))", &computed),
        "upper(ltrim(rtrim(name)))"
    );
    assert_eq!(
        ok("(substring([Name],(1),(3)))", &computed),
        "substring(name, 1, 3)"
    );
    assert_eq!(
        ok("(left([Name],2)+right([Code],1))", &computed),
        "left(name, 2) || right(code, 1)"
    );
    assert_eq!(
        ok("(charindex('x',[Name]))", &computed),
        "strpos(name, 'x')"
    );
    assert_eq!(
        ok("(CONVERT([varchar](10),[Id]))", &computed),
        "CAST(id AS varchar(10))"
    );
    assert_eq!(
        ok("(CAST([Price] AS decimal(12,4)))", &computed),
        "CAST(price AS numeric(12,4))"
    );
    assert_eq!(
        ok("(CAST([Qty] AS nvarchar(max)))", &computed),
        "CAST(qty AS text)"
    );
    assert_eq!(
        ok(
            "(CASE WHEN [Qty]>(10) THEN 'many' ELSE 'few' END)",
            &computed
        ),
        "CASE WHEN qty > 10 THEN 'many' ELSE 'few' END"
    );
    assert_eq!(
        ok("(iif([Qty]>(10),(1),(0)))", &computed),
        "CASE WHEN qty > 10 THEN 1 ELSE 0 END"
    );
    assert_eq!(
        ok("(datepart(year,[CreatedAt]))", &computed),
        "CAST(date_part('year', createdat) AS integer)"
    );
    assert_eq!(
        ok("(year([CreatedAt]))", &computed),
        "CAST(date_part('year', createdat) AS integer)"
    );
    assert_eq!(
        ok("(dateadd(day,(1),[CreatedAt]))", &computed),
        "createdat + (1) * interval '1 day'"
    );
    assert_eq!(
        ok("(datediff(day,[CreatedAt],'2030-01-01'))", &computed),
        "CAST('2030-01-01' AS date) - CAST(createdat AS date)"
    );
    assert_eq!(ok("(round([Price],(1)))", &computed), "round(price, 1)");
    assert_eq!(ok("(ceiling([Price]))", &computed), "ceil(price)");
    assert_eq!(ok("([Qty]&(3))", &computed), "qty & 3");
    assert_eq!(ok("([Qty]^(3))", &computed), "qty # 3");
}

#[test]
fn untranslatable_expressions_are_reported_with_their_text() {
    let cases = [
        (
            "([dbo].[fn_Check]([Qty]))",
            ExprUsage::Check,
            "user-defined function",
        ),
        ("(getdate())", ExprUsage::Computed, "immutable"),
        ("(newid())", ExprUsage::IndexPredicate, "immutable"),
        (
            "([Name] LIKE '[A-C]%')",
            ExprUsage::Check,
            "character classes",
        ),
        (
            "(CONVERT(varchar(10), [CreatedAt], 112))",
            ExprUsage::Computed,
            "style",
        ),
        ("(soundex([Name]))", ExprUsage::Computed, "soundex"),
        ("([Missing] > 0)", ExprUsage::Check, "unknown column"),
        ("([CreatedAt] + 1)", ExprUsage::Computed, "date arithmetic"),
        (
            "(datediff(month,[CreatedAt],getdate()))",
            ExprUsage::Check,
            "boundary",
        ),
        ("([Price] > ", ExprUsage::Check, "end"),
        ("(@x)", ExprUsage::Check, "variable"),
    ];
    for (tsql, usage, reason) in cases {
        match translate_expression(tsql, &ctx(usage)) {
            Err(TypemapError::Untranslatable {
                expression,
                reason: why,
            }) => {
                assert_eq!(expression, tsql);
                assert!(why.to_lowercase().contains(reason), "{tsql}: {why}");
            }
            other => panic!("{tsql}: expected Untranslatable, got {other:?}"),
        }
    }
    // Without column types, + between two unknowns is ambiguous.
    let untyped = ExprContext::default();
    assert!(translate_expression("([a]+[b])", &untyped).is_err());
    assert_eq!(
        translate_expression(
            "([A]+1)",
            &ExprContext {
                columns: vec![],
                ..Default::default()
            }
        )
        .ok(),
        None
    );
}

#[tokio::test]
async fn postgres_accepts_the_translations() {
    let client = dbsync_pgtest::PgCluster::shared()
        .connect("postgres")
        .await
        .unwrap();
    let computed = ctx(ExprUsage::Computed);
    let check = ctx(ExprUsage::Check);
    let total = ok("([Price]*[Qty])", &computed);
    let label = ok("([Name]+N' ('+[Code]+')')", &computed);
    let year = ok("(datepart(year,[CreatedAt]))", &computed);
    let check_sql = ok(
        "([Qty]>=(0) AND [IsActive]=(1) AND len([Name])>(0))",
        &check,
    );
    let predicate = ok(
        "([Name] IS NOT NULL AND [Qty] IN (1,2,3))",
        &ctx(ExprUsage::IndexPredicate),
    );
    let ddl = format!(
        "DROP TABLE IF EXISTS tr; CREATE TABLE tr (
           id integer, name varchar(50) DEFAULT {}, code char(3), price numeric(10,2) DEFAULT {},
           qty integer, isactive boolean DEFAULT {}, createdat timestamp(6) DEFAULT {},
           createdutc timestamptz(6) DEFAULT {}, rowguid uuid DEFAULT {}, \"order\" integer,
           total numeric GENERATED ALWAYS AS ({total}) STORED,
           label text GENERATED ALWAYS AS ({label}) STORED,
           yr integer GENERATED ALWAYS AS ({year}) STORED,
           CHECK ({check_sql}));
         CREATE UNIQUE INDEX tr_name ON tr (name) WHERE {predicate};
         INSERT INTO tr (id, name, code, qty) VALUES (1, 'Widget', 'W', 2);",
        ok("(N'none')", &default_for("Name")),
        ok("((0.00))", &default_for("Price")),
        ok("((1))", &default_for("IsActive")),
        ok("(getdate())", &default_for("CreatedAt")),
        ok("(sysdatetimeoffset())", &default_for("CreatedUtc")),
        ok("(newid())", &default_for("RowGuid")),
    );
    client
        .batch_execute(&ddl)
        .await
        .unwrap_or_else(|e| panic!("{ddl}\n{e:?}"));
    let row = client
        .query_one(
            "SELECT total::text, label, isactive, rowguid IS NOT NULL, yr > 2000 FROM tr",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0.00");
    // PostgreSQL drops char padding when concatenating (SQL Server keeps it: "Widget (W  )").
    assert_eq!(row.get::<_, String>(1), "Widget (W)");
    assert!(row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3));
    assert!(row.get::<_, bool>(4));
    // The CHECK rejects what the SQL Server CHECK rejects.
    assert!(client
        .batch_execute("INSERT INTO tr (id, name, qty) VALUES (2, 'x', -1)")
        .await
        .is_err());
    assert!(client
        .batch_execute("INSERT INTO tr (id, name, qty) VALUES (2, '   ', 1)")
        .await
        .is_err());
}
