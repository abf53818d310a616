//! The task definition users write (YAML or JSON; `deploy/task.example.yaml` documents every
//! field) and its validation.
//!
//! [`TaskSpec::parse`] deserializes and validates in one step: unknown fields are rejected (a
//! typo must not silently fall back to a default) and every out-of-range or contradictory value
//! becomes a [`FieldError`] naming the dotted field path and the allowed range. Passwords are
//! held in [`Secret`]s; [`TaskSpec::redacted`] replaces them by `***` for anything shown to users.

use std::collections::BTreeMap;

use dbsync_core::Secret;
use serde::{Deserialize, Serialize};

/// One problem in a task definition: the dotted path of the field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a task definition, so users fix them in one round.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Invalid task definition: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct SpecError(pub Vec<FieldError>);

impl SpecError {
    fn one(field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique task name: lowercase letters, digits, `-` and `_`, 1–63 characters.
    pub name: String,
    /// Free-form environment tag (production, staging, ...), shown in status and metrics.
    #[serde(default)]
    pub environment: String,
    pub source: SourceSpec,
    pub target: TargetSpec,
    /// gRPC address of the capture service for this task; empty: any registered capture worker.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capture_address: String,
    #[serde(default)]
    pub sync: SyncSpec,
    #[serde(default)]
    pub incremental: IncrementalSpec,
    pub objects: ObjectsSpec,
    #[serde(default)]
    pub conflict_mode: ConflictMode,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub throttle: ThrottleSpec,
    #[serde(default)]
    pub alerts: AlertSpec,
    /// Rows per full-sync chunk (1,000–10,000,000).
    #[serde(default = "defaults::chunk_rows")]
    pub chunk_rows: u32,
    /// Chunks read and written in parallel per table group (1–64).
    #[serde(default = "defaults::parallel_chunks")]
    pub parallel_chunks: u32,
}

/// Longest `incremental.object_prefix`: leaves room for the object names appended to it
/// within SQL Server's 128-character identifiers.
const MAX_OBJECT_PREFIX_LEN: usize = 40;

/// An `incremental.object_prefix` is a plain identifier start: ASCII letters, digits and `_`,
/// not starting with a digit, 1 to 40 characters.
fn valid_object_prefix(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && prefix.len() <= MAX_OBJECT_PREFIX_LEN
}

mod defaults {
    pub fn chunk_rows() -> u32 {
        100_000
    }
    pub fn parallel_chunks() -> u32 {
        4
    }
    pub fn yes() -> bool {
        true
    }
    pub fn mssql_port() -> u16 {
        1433
    }
    pub fn pg_port() -> u16 {
        5432
    }
    pub fn poll_interval_ms() -> u32 {
        500
    }
    pub fn max_cdc_tables() -> u32 {
        1000
    }
    pub fn object_prefix() -> String {
        "dbsync_".into()
    }
    pub fn connection_minutes() -> u32 {
        720
    }
    pub fn other_minutes() -> u32 {
        10
    }
}

/// Where a password comes from: inline, an environment variable or a file (read at use).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PasswordSpec {
    #[serde(
        default,
        with = "secret_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

impl PasswordSpec {
    /// The password, read now from wherever it lives. Errors name the variable or file, never
    /// the value.
    pub fn resolve(&self, field: &str) -> Result<Secret, SpecError> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Secret::new).map_err(|_| {
                SpecError::one(
                    format!("{field}.password_env"),
                    format!(
                        "environment variable {var} is not set in the coordinator's environment"
                    ),
                )
            });
        }
        if let Some(path) = &self.password_file {
            return std::fs::read_to_string(path)
                .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
                .map_err(|e| {
                    SpecError::one(
                        format!("{field}.password_file"),
                        format!("cannot read {path}: {e}"),
                    )
                });
        }
        Err(SpecError::one(
            field,
            "no password: set password, password_env or password_file",
        ))
    }

    fn validate(&self, field: &str, errors: &mut Vec<FieldError>) {
        let given = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            push(
                errors,
                field,
                "set exactly one of password, password_env (environment variable name) or password_file (path)",
            );
        }
    }

    fn redact(&mut self) {
        if self.password.is_some() {
            self.password = Some(Secret::new("***"));
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub host: String,
    #[serde(default = "defaults::mssql_port")]
    pub port: u16,
    pub user: String,
    #[serde(flatten)]
    pub password: PasswordSpec,
    /// TLS to SQL Server.
    #[serde(default)]
    pub encrypt: bool,
    #[serde(default)]
    pub trust_server_certificate: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    /// TLS; the certificate must be signed by the CA in `PGSSLROOTCERT` (on apply and coordinator).
    #[serde(rename = "verify-ca")]
    VerifyCa,
    /// `verify-ca`, and the certificate must name the host.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub host: String,
    #[serde(default = "defaults::pg_port")]
    pub port: u16,
    pub user: String,
    #[serde(flatten)]
    pub password: PasswordSpec,
    pub database: String,
    #[serde(default)]
    pub sslmode: SslMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    #[serde(default = "defaults::yes")]
    pub schema: bool,
    #[serde(default = "defaults::yes")]
    pub full: bool,
    #[serde(default = "defaults::yes")]
    pub incremental: bool,
    /// Verify source against target once every table has finished its full sync (the result
    /// shows in the task status; a mismatch raises an alert).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_after_full: bool,
}

impl Default for SyncSpec {
    fn default() -> Self {
        SyncSpec {
            schema: true,
            full: true,
            incremental: true,
            verify_after_full: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IncrementalMode {
    #[default]
    CdcPolling,
    Hybrid,
}

impl IncrementalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IncrementalMode::CdcPolling => "cdc-polling",
            IncrementalMode::Hybrid => "hybrid",
        }
    }
}

/// What to do when the position a stream resumes from is below a capture instance's minimum
/// LSN (the CDC cleanup job removed changes dbsync had not read yet). Changes are never skipped.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetentionOverrun {
    /// Re-snapshot only the affected tables while the group's other tables keep streaming.
    #[default]
    Resnapshot,
    /// Fail the task, naming the table and the positions.
    Fail,
}

impl RetentionOverrun {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionOverrun::Resnapshot => "resnapshot",
            RetentionOverrun::Fail => "fail",
        }
    }
}

/// Where incremental sync starts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartPoint {
    /// The max LSN recorded just before the full-sync snapshot (needs `sync.full`).
    L0,
    /// The source's max LSN when the task starts.
    Now,
    /// `incremental.start_lsn`.
    Lsn,
    /// The last LSN committed at or before `incremental.start_time`.
    Time,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    #[serde(default)]
    pub mode: IncrementalMode,
    /// Default: `l0` with full sync, `now` without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartPoint>,
    /// `0x` followed by 20 hex digits, with `start: lsn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    /// RFC 3339 timestamp, with `start: time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// How often capture polls the change tables (50–60,000 ms).
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u32,
    /// Most tables CDC may be enabled on (1–100,000).
    #[serde(default = "defaults::max_cdc_tables")]
    pub max_cdc_tables: u32,
    /// Name prefix of the objects dbsync installs on the source (hybrid mode: DDL trigger,
    /// `dbo.<prefix>ddl_history`, `dbo.<prefix>heartbeat`); such tables are never synced.
    #[serde(default = "defaults::object_prefix")]
    pub object_prefix: String,
    /// Resume position below a capture instance's minimum LSN: `resnapshot` or `fail`.
    #[serde(default)]
    pub on_retention_overrun: RetentionOverrun,
}

impl Default for IncrementalSpec {
    fn default() -> Self {
        IncrementalSpec {
            mode: IncrementalMode::default(),
            start: None,
            start_lsn: None,
            start_time: None,
            poll_interval_ms: defaults::poll_interval_ms(),
            max_cdc_tables: defaults::max_cdc_tables(),
            object_prefix: defaults::object_prefix(),
            on_retention_overrun: RetentionOverrun::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Capitalization {
    #[default]
    Lower,
    Source,
    Upper,
}

impl Capitalization {
    pub fn as_str(self) -> &'static str {
        match self {
            Capitalization::Lower => "lower",
            Capitalization::Source => "source",
            Capitalization::Upper => "upper",
        }
    }
    pub fn apply(self, name: &str) -> String {
        match self {
            Capitalization::Lower => name.to_lowercase(),
            Capitalization::Source => name.to_string(),
            Capitalization::Upper => name.to_uppercase(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DmlOperation {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Target column name, used as given (no capitalization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
    /// ETL: an SQL expression over the row's source columns, evaluated by apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Do not sync this column.
    #[serde(default)]
    pub skip: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Target table name, used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
    /// T-SQL predicate on source columns; applied to full and incremental sync.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_filter: Option<String>,
    /// DML operations synced by incremental sync; default all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<DmlOperation>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnSpec>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectsSpec {
    /// Source databases, 1 to 10.
    pub databases: Vec<String>,
    /// `db.schema.table` patterns with `*` and `?`; empty: every table of the databases.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `db.schema` → target schema name (used as given).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemas: BTreeMap<String, String>,
    #[serde(default)]
    pub capitalization: Capitalization,
    /// Character columns keep the target's default (case-sensitive) collation even when the
    /// source column's collation is case-insensitive. Default false: `*_CI_*` columns get
    /// nondeterministic ICU collations, so unique keys and `=` stay case-insensitive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_collations: bool,
    /// Per-table options keyed by `db.schema.table` (`schema.table` with one database).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableSpec>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Fail the precheck when a target table exists.
    #[default]
    Precheck,
    /// Proceed; full sync keeps existing target rows, incremental overwrites them.
    Ignore,
}

impl ConflictMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictMode::Precheck => "precheck",
            ConflictMode::Ignore => "ignore",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// How long connection failures are retried (10–1440 minutes).
    #[serde(default = "defaults::connection_minutes")]
    pub connection_minutes: u32,
    /// How long other transient failures are retried (1–1440 minutes, less than connection).
    #[serde(default = "defaults::other_minutes")]
    pub other_minutes: u32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            connection_minutes: defaults::connection_minutes(),
            other_minutes: defaults::other_minutes(),
        }
    }
}

/// Rates; 0 (the default) means unlimited.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FullThrottleSpec {
    #[serde(default)]
    pub queries_per_second: f64,
    #[serde(default)]
    pub rows_per_second: f64,
    #[serde(default)]
    pub mb_per_second: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IncrementalThrottleSpec {
    #[serde(default)]
    pub rows_per_second: f64,
    #[serde(default)]
    pub mb_per_second: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    #[serde(default)]
    pub full: FullThrottleSpec,
    #[serde(default)]
    pub incremental: IncrementalThrottleSpec,
}

impl ThrottleSpec {
    pub fn full_proto(&self) -> dbsync_proto::v1::Throttle {
        dbsync_proto::v1::Throttle {
            queries_per_second: self.full.queries_per_second,
            rows_per_second: self.full.rows_per_second,
            megabytes_per_second: self.full.mb_per_second,
        }
    }
    pub fn incremental_proto(&self) -> dbsync_proto::v1::Throttle {
        dbsync_proto::v1::Throttle {
            queries_per_second: 0.0,
            rows_per_second: self.incremental.rows_per_second,
            megabytes_per_second: self.incremental.mb_per_second,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// Alert when the task fails.
    #[serde(default = "defaults::yes")]
    pub on_failure: bool,
    /// Alert when lag exceeds this many seconds (1–604,800); absent: no lag alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    /// `http://` URL that receives a JSON POST per alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Write alerts to the coordinator's log (target `dbsync_alert`).
    #[serde(default = "defaults::yes")]
    pub log: bool,
}

impl Default for AlertSpec {
    fn default() -> Self {
        AlertSpec {
            on_failure: true,
            lag_seconds: None,
            webhook_url: None,
            log: true,
        }
    }
}

/// Serde for optional secrets: read as plain strings, written as they are (the store needs
/// them; [`TaskSpec::redacted`] is what users see).
mod secret_serde {
    use dbsync_core::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(v.expose()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Secret::new))
    }
}

fn push(errors: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError {
        field: field.into(),
        message: message.into(),
    });
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: T,
    min: T,
    max: T,
) {
    if value < min || value > max {
        push(
            errors,
            field,
            format!("{value} is out of range: allowed {min} to {max}"),
        );
    }
}

fn check_rate(errors: &mut Vec<FieldError>, field: &str, value: f64) {
    if !value.is_finite() || value < 0.0 {
        push(
            errors,
            field,
            format!("{value} is not allowed: use a rate >= 0 (0 = unlimited)"),
        );
    }
}

pub const MAX_DATABASES: usize = 10;

impl TaskSpec {
    /// Parses YAML (JSON is YAML too) and validates.
    pub fn parse(text: &str) -> Result<TaskSpec, SpecError> {
        let spec: TaskSpec = serde_yaml::from_str(text).map_err(|e| {
            // serde_yaml says "path.to.field: problem at line L column C".
            let message = strip_secret_echo(&e.to_string());
            match message.split_once(": ") {
                Some((path, rest)) if !path.contains(' ') => SpecError::one(path, rest),
                _ => SpecError::one("spec", message),
            }
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut errors = Vec::new();
        let e = &mut errors;
        if self.name.is_empty()
            || self.name.len() > 63
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            push(
                e,
                "name",
                "use 1 to 63 characters from a-z, 0-9, '-' and '_'",
            );
        }
        if self.source.host.trim().is_empty() {
            push(e, "source.host", "must not be empty");
        }
        if self.source.port == 0 {
            push(e, "source.port", "0 is out of range: allowed 1 to 65535");
        }
        if self.source.user.trim().is_empty() {
            push(e, "source.user", "must not be empty");
        }
        self.source.password.validate("source.password", e);
        if self.target.host.trim().is_empty() {
            push(e, "target.host", "must not be empty");
        }
        if self.target.port == 0 {
            push(e, "target.port", "0 is out of range: allowed 1 to 65535");
        }
        if self.target.user.trim().is_empty() {
            push(e, "target.user", "must not be empty");
        }
        if self.target.database.trim().is_empty() {
            push(
                e,
                "target.database",
                "must not be empty: name the PostgreSQL database to write to",
            );
        }
        self.target.password.validate("target.password", e);
        let address = &self.capture_address;
        if !(address.is_empty()
            || address.starts_with("http://")
            || address.starts_with("https://"))
        {
            push(
                e,
                "capture_address",
                "must be an http:// or https:// gRPC address, e.g. http://capture:50051",
            );
        }

        if !(self.sync.schema || self.sync.full || self.sync.incremental) {
            push(
                e,
                "sync",
                "enable at least one of schema, full, incremental",
            );
        }
        if self.sync.verify_after_full && !self.sync.full {
            push(
                e,
                "sync.verify_after_full",
                "verifies after the full sync, so it needs sync.full: true",
            );
        }
        if !self.sync.schema && self.conflict_mode == ConflictMode::Precheck {
            push(
                e,
                "conflict_mode",
                "sync.schema is false, so the target tables must already exist, which conflict_mode precheck forbids: set conflict_mode: ignore",
            );
        }
        self.validate_incremental(e);
        self.validate_objects(e);

        check_range(
            e,
            "retry.connection_minutes",
            self.retry.connection_minutes,
            10,
            1440,
        );
        check_range(e, "retry.other_minutes", self.retry.other_minutes, 1, 1440);
        if self.retry.other_minutes >= self.retry.connection_minutes {
            push(
                e,
                "retry.other_minutes",
                format!(
                    "{} must be less than retry.connection_minutes ({})",
                    self.retry.other_minutes, self.retry.connection_minutes
                ),
            );
        }
        check_rate(
            e,
            "throttle.full.queries_per_second",
            self.throttle.full.queries_per_second,
        );
        check_rate(
            e,
            "throttle.full.rows_per_second",
            self.throttle.full.rows_per_second,
        );
        check_rate(
            e,
            "throttle.full.mb_per_second",
            self.throttle.full.mb_per_second,
        );
        check_rate(
            e,
            "throttle.incremental.rows_per_second",
            self.throttle.incremental.rows_per_second,
        );
        check_rate(
            e,
            "throttle.incremental.mb_per_second",
            self.throttle.incremental.mb_per_second,
        );
        self.alerts.validate(e);
        check_range(e, "chunk_rows", self.chunk_rows, 1_000, 10_000_000);
        check_range(e, "parallel_chunks", self.parallel_chunks, 1, 64);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecError(errors))
        }
    }

    fn validate_incremental(&self, e: &mut Vec<FieldError>) {
        let inc = &self.incremental;
        check_range(
            e,
            "incremental.poll_interval_ms",
            inc.poll_interval_ms,
            50,
            60_000,
        );
        check_range(
            e,
            "incremental.max_cdc_tables",
            inc.max_cdc_tables,
            1,
            100_000,
        );
        if !valid_object_prefix(&inc.object_prefix) {
            push(
                e,
                "incremental.object_prefix",
                format!(
                    "{:?}: use 1 to {MAX_OBJECT_PREFIX_LEN} letters, digits or _, starting with a letter or _ (default dbsync_)",
                    inc.object_prefix
                ),
            );
        }
        match self.start_point() {
            StartPoint::L0 if !self.sync.full => push(
                e,
                "incremental.start",
                "l0 is the position recorded before the full-sync snapshot, so it needs sync.full: use now, lsn or time",
            ),
            StartPoint::Lsn => match &inc.start_lsn {
                Some(l) if dbsync_core::Lsn::parse_hex(l).is_some() => {}
                _ => push(e, "incremental.start_lsn", "with start: lsn, give the LSN as 0x followed by 20 hex digits"),
            },
            StartPoint::Time => match &inc.start_time {
                Some(t) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => {}
                _ => push(e, "incremental.start_time", "with start: time, give an RFC 3339 time, e.g. 2026-11-25T10:00:00Z"),
            },
            _ => {}
        }
        if self.sync.full
            && self.sync.incremental
            && matches!(
                self.start_point(),
                StartPoint::Lsn | StartPoint::Time | StartPoint::Now
            )
        {
            push(
                e,
                "incremental.start",
                "with sync.full, incremental sync must start at l0 (the position before the snapshot) or changes during the snapshot could be lost",
            );
        }
    }

    fn validate_objects(&self, e: &mut Vec<FieldError>) {
        let o = &self.objects;
        if o.databases.is_empty() || o.databases.len() > MAX_DATABASES {
            push(
                e,
                "objects.databases",
                format!(
                    "{} databases given: allowed 1 to {MAX_DATABASES}",
                    o.databases.len()
                ),
            );
        }
        for (i, db) in o.databases.iter().enumerate() {
            if db.trim().is_empty() {
                push(e, format!("objects.databases[{i}]"), "must not be empty");
            }
        }
        for (list, name) in [
            (&o.include, "objects.include"),
            (&o.exclude, "objects.exclude"),
        ] {
            for (i, p) in list.iter().enumerate() {
                if p.split('.').count() != 3 || p.split('.').any(str::is_empty) {
                    push(
                        e,
                        format!("{name}[{i}]"),
                        format!("'{p}' must be a db.schema.table pattern (* and ? allowed)"),
                    );
                }
            }
        }
        for (key, target) in &o.schemas {
            if key.split('.').count() != 2 {
                push(e, format!("objects.schemas.{key}"), "key must be db.schema");
            }
            if target.is_empty() {
                push(
                    e,
                    format!("objects.schemas.{key}"),
                    "target schema name must not be empty",
                );
            }
        }
        for (key, table) in &o.tables {
            let field = format!("objects.tables.{key}");
            if let Err(msg) = self.qualify_table(key) {
                push(e, &field, msg);
            }
            if matches!(&table.rename, Some(r) if r.is_empty()) {
                push(e, format!("{field}.rename"), "must not be empty");
            }
            if let Some(w) = &table.where_filter {
                if let Err(msg) = parse_tsql_predicate(w) {
                    push(e, format!("{field}.where"), msg);
                }
            }
            if let Some(ops) = &table.operations {
                if ops.is_empty() {
                    push(
                        e,
                        format!("{field}.operations"),
                        "list at least one of insert, update, delete (or remove the table)",
                    );
                }
            }
            for (col, c) in &table.columns {
                let cf = format!("{field}.columns.{col}");
                if c.skip && (c.rename.is_some() || c.expression.is_some()) {
                    push(e, &cf, "skip cannot be combined with rename or expression");
                }
                if matches!(&c.rename, Some(r) if r.is_empty()) {
                    push(e, format!("{cf}.rename"), "must not be empty");
                }
                if matches!(&c.expression, Some(x) if x.trim().is_empty()) {
                    push(e, format!("{cf}.expression"), "must not be empty");
                }
            }
        }
    }

    /// Where incremental sync starts, with its default applied.
    pub fn start_point(&self) -> StartPoint {
        self.incremental.start.unwrap_or(if self.sync.full {
            StartPoint::L0
        } else {
            StartPoint::Now
        })
    }

    /// `schema.table` → `db.schema.table` when the task has one database.
    pub fn qualify_table(&self, name: &str) -> Result<String, String> {
        let parts: Vec<&str> = name.split('.').collect();
        match parts.len() {
            3 if parts.iter().all(|p| !p.is_empty()) => Ok(name.to_string()),
            2 if self.objects.databases.len() == 1 => {
                Ok(format!("{}.{name}", self.objects.databases[0]))
            }
            2 => Err(format!(
                "'{name}' is ambiguous with several databases: write db.schema.table"
            )),
            _ => Err(format!("'{name}' must be db.schema.table")),
        }
    }

    /// Per-table options for a source table, looked up case-insensitively.
    pub fn table_options(&self, database: &str, schema: &str, table: &str) -> Option<&TableSpec> {
        let full = format!("{database}.{schema}.{table}");
        self.objects.tables.iter().find_map(|(k, v)| {
            self.qualify_table(k)
                .ok()
                .filter(|q| q.eq_ignore_ascii_case(&full))
                .map(|_| v)
        })
    }

    /// A copy with every inline password replaced by `***`.
    pub fn redacted(&self) -> TaskSpec {
        let mut copy = self.clone();
        copy.source.password.redact();
        copy.target.password.redact();
        copy
    }

    /// YAML of the redacted definition (what users see).
    pub fn to_redacted_yaml(&self) -> String {
        serde_yaml::to_string(&self.redacted()).unwrap_or_default()
    }

    /// JSON including secrets, for the coordinator's own store only.
    pub fn to_store_json(&self) -> String {
        serde_json::to_string(self).expect("task spec serializes")
    }

    pub fn from_store_json(text: &str) -> Result<TaskSpec, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError::one("stored spec", e.to_string()))
    }

    /// The source connection with its password resolved now.
    pub fn source_connection(
        &self,
        database: &str,
    ) -> Result<dbsync_proto::v1::SourceConnection, SpecError> {
        Ok(dbsync_proto::v1::SourceConnection {
            host: self.source.host.clone(),
            port: u32::from(self.source.port),
            user: self.source.user.clone(),
            password: self
                .source
                .password
                .resolve("source.password")?
                .expose()
                .to_string(),
            database: database.to_string(),
            encrypt: self.source.encrypt,
            trust_server_certificate: self.source.trust_server_certificate,
            application_name: format!("dbsync-{}", self.name),
        })
    }

    /// The target connection with its password resolved now.
    pub fn target_connection(&self) -> Result<dbsync_proto::v1::TargetConnection, SpecError> {
        Ok(dbsync_proto::v1::TargetConnection {
            host: self.target.host.clone(),
            port: u32::from(self.target.port),
            user: self.target.user.clone(),
            password: self
                .target
                .password
                .resolve("target.password")?
                .expose()
                .to_string(),
            database: self.target.database.clone(),
            sslmode: self.target.sslmode.as_str().to_string(),
        })
    }
}

impl AlertSpec {
    fn validate(&self, e: &mut Vec<FieldError>) {
        if let Some(lag) = self.lag_seconds {
            check_range(e, "alerts.lag_seconds", lag, 1, 604_800);
        }
        if let Some(url) = &self.webhook_url {
            if crate::alert::parse_http_url(url).is_none() {
                push(
                    e,
                    "alerts.webhook_url",
                    "must be an http://host[:port]/path URL (https is not supported: point it at a local relay)",
                );
            }
        }
    }
}

/// Parses a T-SQL boolean expression (a WHERE filter) so bad filters fail at create time.
pub fn parse_tsql_predicate(text: &str) -> Result<(), String> {
    use sqlparser::dialect::MsSqlDialect;
    use sqlparser::parser::Parser;
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let mut parser = Parser::new(&MsSqlDialect {})
        .try_with_sql(text)
        .map_err(|e| format!("does not parse as a T-SQL predicate: {e}"))?;
    parser
        .parse_expr()
        .map_err(|e| format!("does not parse as a T-SQL predicate: {e}"))?;
    match parser.peek_token().token {
        sqlparser::tokenizer::Token::EOF => Ok(()),
        t => Err(format!(
            "does not parse as a T-SQL predicate: unexpected '{t}' after the expression"
        )),
    }
}

/// serde_yaml errors quote the offending scalar; a misplaced password must not be echoed.
fn strip_secret_echo(message: &str) -> String {
    if message.contains("password") {
        message
            .split(": ")
            .next()
            .unwrap_or("malformed task definition")
            .to_string()
    } else {
        message.to_string()
    }
}

pub use dbsync_core::pattern::glob_match;

/// Tables dbsync installs in schema `dbo` of each source database, named
/// `incremental.object_prefix` + these (capture's `HybridObjects`).
const DBSYNC_TABLES: [&str; 2] = ["ddl_history", "heartbeat"];

impl TaskSpec {
    /// Whether `schema.table` is one of dbsync's own source tables (hybrid mode's DDL history
    /// and heartbeat). They are never synced, whatever `objects.include` says.
    pub fn is_dbsync_table(&self, schema: &str, table: &str) -> bool {
        let prefix = &self.incremental.object_prefix;
        schema.eq_ignore_ascii_case("dbo")
            && table.len() > prefix.len()
            && table.is_char_boundary(prefix.len())
            && table[..prefix.len()].eq_ignore_ascii_case(prefix)
            && DBSYNC_TABLES
                .iter()
                .any(|t| table[prefix.len()..].eq_ignore_ascii_case(t))
    }
}

impl ObjectsSpec {
    /// Whether `db.schema.table` is selected by the databases, include and exclude lists.
    pub fn selects(&self, database: &str, schema: &str, table: &str) -> bool {
        let full = format!("{database}.{schema}.{table}");
        self.databases
            .iter()
            .any(|d| d.eq_ignore_ascii_case(database))
            && (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, &full)))
            && !self.exclude.iter().any(|p| glob_match(p, &full))
    }
}

#[cfg(test)]
mod tests;
