use super::*;

const MINIMAL: &str = r#"
name: orders
source: { host: mssql, user: sa, password: "S3cret!pw" }
target: { host: pg, user: postgres, password_env: PGPASS_TEST, database: sales }
objects: { databases: [sales] }
"#;

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// Parses a spec that must fail and returns the error text naming the field(s).
fn error_of(text: &str) -> String {
    match TaskSpec::parse(text) {
        Ok(_) => panic!("expected a validation error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_field_error(text: &str, field: &str, fragment: &str) {
    let err = error_of(text);
    assert!(
        err.contains(&format!("{field}: ")),
        "error does not name {field}: {err}"
    );
    assert!(
        err.contains(fragment),
        "error for {field} lacks '{fragment}': {err}"
    );
}

#[test]
fn minimal_spec_gets_the_documented_defaults() {
    let spec = TaskSpec::parse(MINIMAL).unwrap();
    assert_eq!(spec.source.port, 1433);
    assert_eq!(spec.target.port, 5432);
    assert_eq!(spec.target.sslmode, SslMode::Prefer);
    assert!(spec.sync.schema && spec.sync.full && spec.sync.incremental);
    assert_eq!(spec.incremental.mode, IncrementalMode::CdcPolling);
    assert_eq!(spec.start_point(), StartPoint::L0);
    assert_eq!(spec.incremental.max_cdc_tables, 1000);
    assert_eq!(
        spec.retry,
        RetrySpec {
            connection_minutes: 720,
            other_minutes: 10
        }
    );
    assert_eq!(spec.conflict_mode, ConflictMode::Precheck);
    assert_eq!(spec.objects.capitalization, Capitalization::Lower);
    assert!(spec.alerts.on_failure && spec.alerts.log);
    assert_eq!(spec.chunk_rows, 100_000);
    assert_eq!(spec.parallel_chunks, 4);
}

#[test]
fn json_is_accepted_too() {
    let json = r#"{"name":"j","source":{"host":"h","user":"u","password_file":"/p"},
        "target":{"host":"h","user":"u","password":"x","database":"d"},
        "objects":{"databases":["a","b"]}}"#;
    let spec = TaskSpec::parse(json).unwrap();
    assert_eq!(spec.objects.databases.len(), 2);
}

#[test]
fn the_deploy_example_parses_and_validates() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/task.example.yaml"
    ))
    .expect("deploy/task.example.yaml exists");
    let spec = TaskSpec::parse(&text).unwrap();
    assert!(
        !spec.objects.tables.is_empty(),
        "the example documents per-table options"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let err = error_of(&with("chunk_row: 5\n"));
    assert!(err.contains("chunk_row"), "{err}");
}

#[test]
fn name_must_be_a_simple_identifier() {
    assert_field_error(
        &MINIMAL.replace("name: orders", "name: Orders Sync"),
        "name",
        "1 to 63",
    );
    assert_field_error(
        &MINIMAL.replace("name: orders", &format!("name: {}", "a".repeat(64))),
        "name",
        "1 to 63",
    );
}

#[test]
fn connections_need_host_user_and_exactly_one_password_source() {
    assert_field_error(
        &MINIMAL.replace("host: mssql", "host: ''"),
        "source.host",
        "empty",
    );
    assert_field_error(
        &MINIMAL.replace("user: sa", "user: ''"),
        "source.user",
        "empty",
    );
    assert_field_error(
        &MINIMAL.replace("password: \"S3cret!pw\"", "password: a, password_env: B"),
        "source.password",
        "exactly one",
    );
    assert_field_error(
        &MINIMAL.replace(", password: \"S3cret!pw\"", ""),
        "source.password",
        "exactly one",
    );
    assert_field_error(
        &MINIMAL.replace("database: sales", "database: ''"),
        "target.database",
        "empty",
    );
    assert_field_error(&with("source: {}\n"), "spec", "duplicate field");
    assert_field_error(
        &MINIMAL.replace("host: pg,", "host: pg, port: 0,"),
        "target.port",
        "1 to 65535",
    );
    assert_field_error(
        &with("capture_address: capture:50051\n"),
        "capture_address",
        "http://",
    );
    let bad_sslmode = MINIMAL.replace("database: sales", "database: sales, sslmode: verify");
    assert!(
        error_of(&bad_sslmode).contains("sslmode") || error_of(&bad_sslmode).contains("variant")
    );
}

#[test]
fn sync_needs_at_least_one_kind_and_schema_off_needs_ignore() {
    assert_field_error(
        &with("sync: { schema: false, full: false, incremental: false }\n"),
        "sync",
        "at least one",
    );
    assert_field_error(
        &with("sync: { schema: false }\n"),
        "conflict_mode",
        "ignore",
    );
    TaskSpec::parse(&with("sync: { schema: false }\nconflict_mode: ignore\n")).unwrap();
}

#[test]
fn incremental_options_are_checked() {
    assert_field_error(
        &with("incremental: { poll_interval_ms: 10 }\n"),
        "incremental.poll_interval_ms",
        "50 to 60000",
    );
    assert_field_error(
        &with("incremental: { max_cdc_tables: 0 }\n"),
        "incremental.max_cdc_tables",
        "1 to 100000",
    );
    assert_field_error(
        &with("incremental: { mode: log }\n"),
        "incremental.mode",
        "cdc-polling",
    );
    // Incremental-only tasks start now by default and may start at an LSN or time.
    let only_inc = with("sync: { schema: false, full: false }\nconflict_mode: ignore\n");
    assert_eq!(
        TaskSpec::parse(&only_inc).unwrap().start_point(),
        StartPoint::Now
    );
    assert_field_error(
        &format!("{only_inc}incremental: {{ start: l0 }}\n"),
        "incremental.start",
        "needs sync.full",
    );
    assert_field_error(
        &format!("{only_inc}incremental: {{ start: lsn }}\n"),
        "incremental.start_lsn",
        "20 hex",
    );
    assert_field_error(
        &format!("{only_inc}incremental: {{ start: lsn, start_lsn: '0x12' }}\n"),
        "incremental.start_lsn",
        "20 hex",
    );
    TaskSpec::parse(&format!(
        "{only_inc}incremental: {{ start: lsn, start_lsn: '0x0000002A000001F80003' }}\n"
    ))
    .unwrap();
    assert_field_error(
        &format!("{only_inc}incremental: {{ start: time, start_time: yesterday }}\n"),
        "incremental.start_time",
        "RFC 3339",
    );
    TaskSpec::parse(&format!(
        "{only_inc}incremental: {{ start: time, start_time: '2026-11-25T10:00:00Z' }}\n"
    ))
    .unwrap();
    assert_field_error(
        &with("incremental: { start: now }\n"),
        "incremental.start",
        "l0",
    );
}

#[test]
fn object_selection_is_checked() {
    assert_field_error(
        &MINIMAL.replace("databases: [sales]", "databases: []"),
        "objects.databases",
        "1 to 10",
    );
    let eleven = (0..11)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_field_error(
        &MINIMAL.replace("databases: [sales]", &format!("databases: [{eleven}]")),
        "objects.databases",
        "1 to 10",
    );
    assert_field_error(
        &MINIMAL.replace(
            "databases: [sales]",
            "databases: [sales], include: ['dbo.orders']",
        ),
        "objects.include[0]",
        "db.schema.table",
    );
    assert_field_error(
        &MINIMAL.replace(
            "databases: [sales]",
            "databases: [sales], exclude: ['a..b']",
        ),
        "objects.exclude[0]",
        "db.schema.table",
    );
    assert_field_error(
        &MINIMAL.replace(
            "databases: [sales]",
            "databases: [sales], schemas: { dbo: x }",
        ),
        "objects.schemas.dbo",
        "db.schema",
    );
    assert_field_error(
        &MINIMAL.replace(
            "databases: [sales]",
            "databases: [sales], capitalization: camel",
        ),
        "objects.capitalization",
        "lower",
    );
}

#[test]
fn per_table_options_are_checked() {
    let table = |opts: &str| {
        MINIMAL.replace(
            "databases: [sales]",
            &format!("databases: [sales], tables: {{ 'dbo.orders': {opts} }}"),
        )
    };
    let ok = TaskSpec::parse(&table(
        "{ rename: orders_pg, where: \"status <> 'x' AND id > 10\", operations: [insert, update], columns: { Total: { expression: 'Total * 100' }, Note: { skip: true }, Name: { rename: name_pg } } }",
    ))
    .unwrap();
    let t = ok
        .table_options("SALES", "dbo", "ORDERS")
        .expect("case-insensitive lookup");
    assert_eq!(
        t.operations.as_deref(),
        Some(&[DmlOperation::Insert, DmlOperation::Update][..])
    );
    assert_field_error(
        &table("{ where: 'status = = 1' }"),
        "objects.tables.dbo.orders.where",
        "does not parse",
    );
    assert_field_error(
        &table("{ where: 'a = 1 b' }"),
        "objects.tables.dbo.orders.where",
        "does not parse",
    );
    assert_field_error(
        &table("{ operations: [] }"),
        "objects.tables.dbo.orders.operations",
        "at least one",
    );
    assert_field_error(
        &table("{ rename: '' }"),
        "objects.tables.dbo.orders.rename",
        "empty",
    );
    assert_field_error(
        &table("{ columns: { a: { skip: true, rename: b } } }"),
        "objects.tables.dbo.orders.columns.a",
        "skip cannot",
    );
    assert_field_error(
        &table("{ columns: { a: { expression: ' ' } } }"),
        "objects.tables.dbo.orders.columns.a.expression",
        "empty",
    );
    assert_field_error(
        &table("{ operations: [merge] }"),
        "objects.tables.dbo.orders.operations[0]",
        "insert",
    );
    let two_dbs = MINIMAL.replace(
        "databases: [sales]",
        "databases: [sales, hr], tables: { 'dbo.orders': {} }",
    );
    assert_field_error(&two_dbs, "objects.tables.dbo.orders", "ambiguous");
}

#[test]
fn retry_windows_are_checked() {
    assert_field_error(
        &with("retry: { connection_minutes: 9 }\n"),
        "retry.connection_minutes",
        "10 to 1440",
    );
    assert_field_error(
        &with("retry: { connection_minutes: 1441 }\n"),
        "retry.connection_minutes",
        "10 to 1440",
    );
    assert_field_error(
        &with("retry: { other_minutes: 0 }\n"),
        "retry.other_minutes",
        "1 to 1440",
    );
    assert_field_error(
        &with("retry: { other_minutes: 1441 }\n"),
        "retry.other_minutes",
        "1 to 1440",
    );
    assert_field_error(
        &with("retry: { connection_minutes: 30, other_minutes: 30 }\n"),
        "retry.other_minutes",
        "less than retry.connection_minutes",
    );
    TaskSpec::parse(&with(
        "retry: { connection_minutes: 30, other_minutes: 29 }\n",
    ))
    .unwrap();
}

#[test]
fn throttles_are_non_negative_rates() {
    for field in ["queries_per_second", "rows_per_second", "mb_per_second"] {
        assert_field_error(
            &with(&format!("throttle: {{ full: {{ {field}: -1 }} }}\n")),
            &format!("throttle.full.{field}"),
            ">= 0",
        );
    }
    for field in ["rows_per_second", "mb_per_second"] {
        assert_field_error(
            &with(&format!(
                "throttle: {{ incremental: {{ {field}: -0.5 }} }}\n"
            )),
            &format!("throttle.incremental.{field}"),
            ">= 0",
        );
    }
    assert_field_error(
        &with("throttle: { incremental: { queries_per_second: 5 } }\n"),
        "throttle.incremental",
        "unknown field",
    );
    let spec = TaskSpec::parse(&with(
        "throttle: { full: { rows_per_second: 5000, mb_per_second: 2.5 } }\n",
    ))
    .unwrap();
    assert_eq!(spec.throttle.full_proto().megabytes_per_second, 2.5);
}

#[test]
fn alerts_are_checked() {
    assert_field_error(
        &with("alerts: { lag_seconds: 0 }\n"),
        "alerts.lag_seconds",
        "1 to 604800",
    );
    assert_field_error(
        &with("alerts: { webhook_url: 'https://hooks.example/x' }\n"),
        "alerts.webhook_url",
        "http://",
    );
    TaskSpec::parse(&with(
        "alerts: { lag_seconds: 30, webhook_url: 'http://hooks:8080/x' }\n",
    ))
    .unwrap();
}

#[test]
fn chunking_is_checked() {
    assert_field_error(&with("chunk_rows: 10\n"), "chunk_rows", "1000 to 10000000");
    assert_field_error(&with("parallel_chunks: 0\n"), "parallel_chunks", "1 to 64");
    assert_field_error(&with("parallel_chunks: 65\n"), "parallel_chunks", "1 to 64");
}

#[test]
fn all_problems_are_reported_at_once() {
    let err = error_of(&with(
        "chunk_rows: 10\nparallel_chunks: 0\nretry: { other_minutes: 0 }\n",
    ));
    for field in ["chunk_rows", "parallel_chunks", "retry.other_minutes"] {
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn secrets_are_redacted_and_resolved_at_use() {
    let spec = TaskSpec::parse(MINIMAL).unwrap();
    let shown = spec.to_redacted_yaml();
    assert!(!shown.contains("S3cret!pw"), "{shown}");
    assert!(shown.contains("***"));
    assert!(!format!("{spec:?}").contains("S3cret!pw"));
    // The stored form keeps the secret so the coordinator can use it after a restart.
    let back = TaskSpec::from_store_json(&spec.to_store_json()).unwrap();
    assert_eq!(
        back.source.password.password.as_ref().unwrap().expose(),
        "S3cret!pw"
    );
    // password_env is read at use; a missing variable is named, its value never shown.
    let err = spec.target_connection().unwrap_err().to_string();
    assert!(err.contains("PGPASS_TEST"), "{err}");
    std::env::set_var("PGPASS_TEST", "pg-secret-1");
    assert_eq!(spec.target_connection().unwrap().password, "pg-secret-1");
    // password_file: trailing newline stripped.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "from-file\n").unwrap();
    let file_spec = TaskSpec::parse(&MINIMAL.replace(
        "password: \"S3cret!pw\"",
        &format!("password_file: {}", path.display()),
    ))
    .unwrap();
    assert_eq!(
        file_spec.source_connection("sales").unwrap().password,
        "from-file"
    );
}

#[test]
fn a_misplaced_password_is_not_echoed_in_parse_errors() {
    let err = error_of(&MINIMAL.replace("password: \"S3cret!pw\"", "password: [\"S3cret!pw\"]"));
    assert!(!err.contains("S3cret!pw"), "{err}");
}

#[test]
fn glob_and_selection() {
    assert!(glob_match("sales.dbo.*", "Sales.DBO.Orders"));
    assert!(glob_match("sales.*.ord?rs", "sales.x.orders"));
    assert!(!glob_match("sales.dbo.o*", "sales.dbo.customers"));
    let spec = TaskSpec::parse(&MINIMAL.replace(
        "databases: [sales]",
        "databases: [sales], include: ['sales.dbo.*'], exclude: ['sales.dbo.tmp_*']",
    ))
    .unwrap();
    assert!(spec.objects.selects("sales", "dbo", "orders"));
    assert!(!spec.objects.selects("sales", "dbo", "tmp_x"));
    assert!(!spec.objects.selects("sales", "audit", "orders"));
    assert!(!spec.objects.selects("hr", "dbo", "orders"));
}

#[test]
fn verify_after_full_needs_full_sync() {
    assert_field_error(
        &with("sync: { full: false, verify_after_full: true }\nincremental: { start: now }\n"),
        "sync.verify_after_full",
        "needs sync.full",
    );
    let spec = TaskSpec::parse(&with("sync: { verify_after_full: true }\n")).unwrap();
    assert!(spec.sync.verify_after_full && spec.sync.full);
    assert!(!TaskSpec::parse(MINIMAL).unwrap().sync.verify_after_full);
}

#[test]
fn object_prefix_defaults_to_dbsync_and_is_checked() {
    assert_eq!(
        TaskSpec::parse(MINIMAL).unwrap().incremental.object_prefix,
        "dbsync_"
    );
    let custom = TaskSpec::parse(&with("incremental: { object_prefix: _Sync2_ }\n")).unwrap();
    assert_eq!(custom.incremental.object_prefix, "_Sync2_");
    let forty = "p".repeat(40);
    TaskSpec::parse(&with(&format!(
        "incremental: {{ object_prefix: {forty} }}\n"
    )))
    .unwrap();
    for bad in [
        "\"\"",
        "2sync_",
        "db-sync_",
        "\"db sync\"",
        "dbsync$",
        &"p".repeat(41),
    ] {
        assert_field_error(
            &with(&format!("incremental: {{ object_prefix: {bad} }}\n")),
            "incremental.object_prefix",
            "letters, digits or _, starting with a letter or _",
        );
    }
}

#[test]
fn on_retention_overrun_defaults_to_resnapshot_and_is_checked() {
    assert_eq!(
        TaskSpec::parse(MINIMAL)
            .unwrap()
            .incremental
            .on_retention_overrun,
        RetentionOverrun::Resnapshot
    );
    let fail = TaskSpec::parse(&with("incremental: { on_retention_overrun: fail }\n")).unwrap();
    assert_eq!(
        fail.incremental.on_retention_overrun,
        RetentionOverrun::Fail
    );
    assert_eq!(fail.incremental.on_retention_overrun.as_str(), "fail");
    assert_field_error(
        &with("incremental: { on_retention_overrun: skip }\n"),
        "incremental.on_retention_overrun",
        "resnapshot",
    );
    assert_field_error(
        &with("incremental: { on_retention_overrun: skip }\n"),
        "incremental.on_retention_overrun",
        "fail",
    );
}
