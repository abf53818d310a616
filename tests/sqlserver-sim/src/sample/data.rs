//! Deterministic seed data for the sample database.

use std::fmt::Write;

use super::WAREHOUSE_CODES;

/// Rows per INSERT statement (SQL Server accepts at most 1000 row value expressions).
const ROWS_PER_INSERT: usize = 500;

/// A small, seeded, reproducible generator (SplitMix64). Used by the seed data and the
/// workload so that equal seeds give equal databases and equal transaction streams.
#[derive(Debug, Clone)]
pub struct SampleRng(u64);

impl SampleRng {
    pub fn new(seed: u64) -> Self {
        SampleRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A uniqueidentifier literal body (no quotes).
    pub fn guid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        )
    }

    pub fn hex_bytes(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(2 + len * 2);
        out.push_str("0x");
        for _ in 0..len {
            let _ = write!(out, "{:02X}", self.below(256));
        }
        out
    }
}

/// A T-SQL string literal: `'…'` or `N'…'`, quotes doubled.
pub(crate) fn quote(s: &str, unicode: bool) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if unicode {
        out.push('N');
    }
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Zoë",
    "Björn",
    "Ségolène",
    "Łukasz",
    "Håkon",
    "Mía",
    "O'Brien",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Torvalds", "Müller", "Åström", "García", "Nguyễn", "Smith", "D'Arcy",
    "Ōta",
];
const COUNTRIES: &[&str] = &["US", "DE", "FR", "NL", "SE", "JP", "BR", "AU"];
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
];
pub(crate) const ORDER_STATUSES: &[&str] = &["new", "paid", "shipped", "closed", "cancelled"];
const METHODS: &[&str] = &["card", "sepa", "paypal", "invoice"];

/// Collects rows into INSERT statements of bounded size.
struct InsertWriter<'a> {
    out: &'a mut Vec<String>,
    head: String,
    current: String,
    rows: usize,
}

impl<'a> InsertWriter<'a> {
    fn new(out: &'a mut Vec<String>, table: &str, columns: &str) -> Self {
        InsertWriter {
            out,
            head: format!("INSERT INTO {table} ({columns}) VALUES\n"),
            current: String::new(),
            rows: 0,
        }
    }

    fn row(&mut self, values: &str) {
        if self.rows == ROWS_PER_INSERT {
            self.flush();
        }
        if self.rows == 0 {
            self.current.push_str(&self.head);
        } else {
            self.current.push_str(",\n");
        }
        self.current.push('(');
        self.current.push_str(values);
        self.current.push(')');
        self.rows += 1;
    }

    fn flush(&mut self) {
        if self.rows > 0 {
            self.current.push(';');
            self.out.push(std::mem::take(&mut self.current));
            self.rows = 0;
        }
    }
}

impl Drop for InsertWriter<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A `datetime2`-style literal for a day offset from 2020-01-01 plus seconds.
fn timestamp(rng: &mut SampleRng, fraction_digits: usize) -> String {
    let day = rng.below(1500) as i64;
    let (y, m, d) = civil_from_days(days_from_civil(2020, 1, 1) + day);
    let secs = rng.below(86_400);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if fraction_digits > 0 {
        let frac = rng.below(10u64.pow(fraction_digits as u32));
        let _ = write!(s, ".{frac:0width$}", width = fraction_digits);
    }
    s
}

fn date(rng: &mut SampleRng) -> String {
    let (y, m, d) = civil_from_days(days_from_civil(2015, 1, 1) + rng.below(4000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 (proleptic Gregorian), after H. Hinnant.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn offset(rng: &mut SampleRng) -> &'static str {
    rng.pick(&[
        "+00:00", "+01:00", "-05:00", "+05:45", "+14:00", "-12:00", "+09:30",
    ])
}

fn sentence(rng: &mut SampleRng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s
}

/// A large text of roughly `len` characters, mixing ASCII, accents and non-BMP characters.
pub(crate) fn large_text(rng: &mut SampleRng, len: usize, unicode: bool) -> String {
    let mut s = String::with_capacity(len + 16);
    let mut chars = 0;
    while chars < len {
        let word = rng.pick(WORDS);
        s.push_str(word);
        s.push(' ');
        chars += word.len() + 1;
        if unicode && rng.chance(10) {
            s.push_str("é😀𝄞 ");
            chars += 4;
        }
    }
    s
}

/// Batches of INSERT statements for every table.
pub(super) fn seed_batches(rows: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rng = SampleRng::new(0x05EE_D0F5_A0B0);
    let rows = rows.max(1);

    {
        let mut w = InsertWriter::new(
            &mut out,
            "inventory.warehouses",
            "warehouse_code, name, city, opened_on, capacity_m3",
        );
        for (i, code) in WAREHOUSE_CODES.iter().enumerate() {
            let city = [
                "Amsterdam",
                "Berlin",
                "Chicago",
                "New York",
                "Singapore",
                "Sydney",
            ][i];
            w.row(&format!(
                "'{code}', N'Warehouse {code}', N'{city}', '{}', {}.{:03}",
                date(&mut rng),
                1000 + i * 250,
                i * 7
            ));
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "inventory.products",
            "sku, name, description, price, weight_kg, created_at, discontinued",
        );
        for i in 1..=rows {
            let description = if i % 7 == 0 {
                "NULL".to_string()
            } else {
                quote(&sentence(&mut rng, 12), true)
            };
            w.row(&format!(
                "'SKU-{i:06}', {}, {description}, {}.{:02}, {}, '{}', {}",
                quote(&format!("{} {}", rng.pick(WORDS), rng.pick(WORDS)), true),
                rng.below(5000),
                rng.below(100),
                if i % 11 == 0 {
                    "NULL".to_string()
                } else {
                    format!("{}.{}", rng.below(100), rng.below(1000))
                },
                timestamp(&mut rng, 3),
                u8::from(i % 13 == 0)
            ));
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "inventory.stock",
            "warehouse_code, product_id, quantity, reserved, updated_at",
        );
        for product in 1..=rows {
            // Each product is stocked in two consecutive warehouses: a composite key.
            let first = product % WAREHOUSE_CODES.len();
            for code in [
                WAREHOUSE_CODES[first],
                WAREHOUSE_CODES[(first + 1) % WAREHOUSE_CODES.len()],
            ] {
                w.row(&format!(
                    "'{code}', {product}, {}, {}, '{}'",
                    rng.below(10_000),
                    rng.below(50),
                    timestamp(&mut rng, 7)
                ));
            }
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "inventory.supplier_contacts",
            "supplier_code, contact_email, contact_name, phone, is_primary",
        );
        for i in 0..rows.div_ceil(2) {
            let supplier = format!("SUP-{:04}", i / 3);
            let phone = if i % 5 == 0 {
                "''".to_string()
            } else {
                format!("'+1-555-{:04}'", rng.below(10_000))
            };
            let primary = ["NULL", "0", "1"][i % 3];
            w.row(&format!(
                "'{supplier}', N'contact{i}@supplier{}.example', {}, {phone}, {primary}",
                i / 3,
                quote(rng.pick(FIRST_NAMES), true)
            ));
        }
    }
    // hierarchyid values in their binary form: 0x is '/', 0x58 is '/1/'.
    out.push(
        "INSERT INTO inventory.legacy_items (item_id, label, attributes, tree_node) VALUES \
         (1, N'root', CAST(42 AS sql_variant), CAST(0x AS hierarchyid)), \
         (2, N'child', CAST(N'text variant' AS sql_variant), CAST(0x58 AS hierarchyid)), \
         (3, N'no values', NULL, NULL);"
            .to_string(),
    );
    {
        let mut w = InsertWriter::new(
            &mut out,
            "sales.customers",
            "email, full_name, country_code, created_at, is_active, credit_limit, loyalty_points",
        );
        for i in 1..=rows {
            let name = format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
            let country = if i % 17 == 0 {
                "NULL".to_string()
            } else {
                format!("'{}'", rng.pick(COUNTRIES))
            };
            let credit = if i % 9 == 0 {
                "NULL".to_string()
            } else {
                format!("{}.{:04}", rng.below(100_000), rng.below(10_000))
            };
            w.row(&format!(
                "N'customer{i}@example.com', {}, {country}, '{}', {}, {credit}, {}",
                quote(&name, true),
                timestamp(&mut rng, 7),
                u8::from(i % 10 != 0),
                rng.below(1_000_000)
            ));
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "sales.orders",
            "customer_id, order_date, ordered_at, status, total, discount, shipping_weight",
        );
        for _ in 0..rows {
            let discount = if rng.chance(30) {
                format!("{}.{:04}", rng.below(100), rng.below(10_000))
            } else {
                "NULL".to_string()
            };
            w.row(&format!(
                "{}, '{}', '{} {}', '{}', {}.{:04}, {discount}, {}",
                rng.range(1, rows as i64),
                date(&mut rng),
                timestamp(&mut rng, 7),
                offset(&mut rng),
                rng.pick(ORDER_STATUSES),
                rng.below(100_000),
                rng.below(10_000),
                if rng.chance(20) {
                    "NULL".to_string()
                } else {
                    format!("{}.{}E0", rng.below(1000), rng.below(1_000_000))
                }
            ));
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "sales.order_lines",
            "order_id, line_no, product_id, quantity, unit_price",
        );
        for order in 0..rows as i64 {
            for line in 1..=(1 + order % 3) {
                w.row(&format!(
                    "{}, {line}, {}, {}, {}.{:02}",
                    1000 + order,
                    rng.range(1, rows as i64),
                    rng.range(1, 20),
                    rng.below(500),
                    rng.below(100)
                ));
            }
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "sales.payments",
            "payment_id, order_id, amount, paid_at, method, reference",
        );
        for i in 0..rows.div_ceil(2) {
            let reference = if i % 4 == 0 {
                "NULL".to_string()
            } else {
                rng.hex_bytes(16)
            };
            w.row(&format!(
                "'{}', {}, {}.{:04}, '{}', N'{}', {reference}",
                rng.guid(),
                1000 + (i as u64 % rows as u64),
                rng.below(10_000),
                rng.below(10_000),
                timestamp(&mut rng, 3),
                rng.pick(METHODS)
            ));
        }
    }
    {
        let mut w = InsertWriter::new(
            &mut out,
            "sales.customer_notes",
            "customer_id, title, body, attachment, legacy_text, legacy_ntext, legacy_image, metadata",
        );
        for i in 0..rows.div_ceil(4) {
            // Every 50th note carries large LOBs (beyond the 8000-byte in-row limit).
            let big = i % 50 == 0;
            let body = if big {
                large_text(&mut rng, 20_000, true)
            } else {
                sentence(&mut rng, 20)
            };
            let attachment = if i % 3 == 0 {
                "NULL".to_string()
            } else {
                rng.hex_bytes(if big { 12_000 } else { 32 })
            };
            w.row(&format!(
                "{}, {}, {}, {attachment}, {}, {}, {}, {}",
                1 + i % rows,
                quote(&format!("Note {i}"), true),
                quote(&body, true),
                quote(&sentence(&mut rng, 6), false),
                quote(&sentence(&mut rng, 6), true),
                if i % 2 == 0 {
                    "NULL".to_string()
                } else {
                    rng.hex_bytes(24)
                },
                quote(
                    &format!("<note id=\"{i}\"><tag>{}</tag></note>", rng.pick(WORDS)),
                    true
                )
            ));
        }
    }
    {
        let mut w = InsertWriter::new(&mut out, "sales.audit_log", "logged_at, event_name, detail");
        for i in 0..rows {
            // A heap: duplicates are allowed and present.
            let minute = i / 2;
            let detail = if i % 6 == 0 {
                "NULL".to_string()
            } else {
                quote(&sentence(&mut rng, 8), false)
            };
            w.row(&format!(
                "DATEADD(MINUTE, {minute}, '2024-01-01T00:00:00'), 'event.{}', {detail}",
                rng.pick(WORDS)
            ));
        }
    }
    out.push(NUMERIC_EXTREMES.to_string());
    out.push(TEMPORAL_EXTREMES.to_string());
    out.push(text_samples(&mut rng));
    out
}

const NUMERIC_EXTREMES: &str = "INSERT INTO sales.numeric_extremes \
(id, label, v_bit, v_tinyint, v_smallint, v_int, v_bigint, v_decimal_38_0, v_decimal_38_38, v_numeric_18_6, v_money, v_smallmoney, v_real, v_float) VALUES
(1, 'minimum', 0, 0, -32768, -2147483648, -9223372036854775808, -99999999999999999999999999999999999999, CAST('-0.99999999999999999999999999999999999999' AS decimal(38, 38)), -999999999999.999999, -922337203685477.5808, -214748.3648, -3.40E+38, -1.79E+308),
(2, 'maximum', 1, 255, 32767, 2147483647, 9223372036854775807, 99999999999999999999999999999999999999, 0.99999999999999999999999999999999999999, 999999999999.999999, 922337203685477.5807, 214748.3647, 3.40E+38, 1.79E+308),
(3, 'zero', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
(4, 'smallest magnitude', 1, 1, -1, -1, -1, 1, 0.00000000000000000000000000000000000001, 0.000001, 0.0001, -0.0001, 1.18E-38, 2.23E-308),
(5, 'all null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);";

const TEMPORAL_EXTREMES: &str = "INSERT INTO sales.temporal_extremes \
(id, label, v_date, v_time0, v_time7, v_datetime, v_smalldatetime, v_datetime2_0, v_datetime2_7, v_datetimeoffset0, v_datetimeoffset7) VALUES
(1, 'minimum', '0001-01-01', '00:00:00', '00:00:00.0000000', '1753-01-01T00:00:00.000', '1900-01-01T00:00:00', '0001-01-01T00:00:00', '0001-01-01T00:00:00.0000000', '0001-01-01T14:00:00+14:00', '0001-01-01T00:00:00.0000000+00:00'),
(2, 'maximum', '9999-12-31', '23:59:59', '23:59:59.9999999', '9999-12-31T23:59:59.997', '2079-06-06T23:59:00', '9999-12-31T23:59:59', '9999-12-31T23:59:59.9999999', '9999-12-31T09:59:59-14:00', '9999-12-31T23:59:59.9999999+00:00'),
(3, 'before 1900', '1899-12-31', '12:00:00', '12:34:56.1234567', '1899-12-31T23:59:59.997', NULL, '1582-10-15T00:00:00', '1752-09-13T01:02:03.4567891', '1899-12-31T23:00:00-01:00', '1066-10-14T09:00:00.1234567+01:00'),
(4, 'datetime ticks', '2024-02-29', '01:02:03', '01:02:03.0000001', '2024-02-29T12:00:00.003', '2024-02-29T12:01:00', '2024-02-29T12:00:00', '2024-02-29T12:00:00.0000001', '2024-03-10T02:30:00+05:45', '2024-03-10T02:30:00.1234567-09:30'),
(5, 'all null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);";

fn text_samples(rng: &mut SampleRng) -> String {
    let big_ascii = large_text(rng, 100_000, false);
    let big_unicode = large_text(rng, 70_000, true);
    let big_binary = rng.hex_bytes(100_000);
    let cols = "id, label, v_char, v_varchar, v_nchar, v_nvarchar, v_varchar_max, v_nvarchar_max, v_binary, v_varbinary, v_varbinary_max, v_guid, v_xml";
    let rows = [
        "1, 'empty strings', '', '', N'', N'', '', N'', 0x, 0x, 0x, '00000000-0000-0000-0000-000000000000', N''".to_string(),
        "2, 'all null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL".to_string(),
        "3, 'trailing spaces', 'ab   ', 'ab   ', N'ab   ', N'ab   ', 'ab   ', N'ab   ', 0x0102, 0x010200, 0x00, 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', N'<a> b </a>'"
            .to_string(),
        "4, 'non-BMP and accents', 'caf\u{e9}', 'Cr\u{e8}me br\u{fb}l\u{e9}e', N'\u{1F600}\u{1D11E}', N'Z\u{fc}rich \u{1F30D} \u{4E2D}\u{6587}', 'na\u{ef}ve', N'\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} family', 0xFFFFFFFFFFFFFFFF, 0xDEADBEEF, 0xCAFEBABE, '01234567-89AB-CDEF-0123-456789ABCDEF', N'<r xmlns=\"urn:x\"><c a=\"1\">text &amp; more</c></r>'"
            .to_string(),
        "5, 'quotes', 'it''s', 'say \"hi\"', N'it''s', N'\u{2018}curly\u{2019}', 'back\\slash', N'tab\there', 0x27, 0x22, 0x5C, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', N'<q>&quot;&apos;</q>'"
            .to_string(),
        format!(
            "6, 'large LOBs', 'large', 'large', N'large', N'large', {}, {}, 0x0000000000000001, 0x01, {big_binary}, '6F9619FF-8B86-D011-B42D-00C04FC964FF', N'<big/>'",
            quote(&big_ascii, false),
            quote(&big_unicode, true)
        ),
    ];
    let mut sql = format!("INSERT INTO sales.text_samples ({cols}) VALUES\n");
    sql.push_str(
        &rows
            .iter()
            .map(|r| format!("({r})"))
            .collect::<Vec<_>>()
            .join(",\n"),
    );
    sql.push(';');
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_162, -1, 0, 18_262, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn rng_is_reproducible() {
        let mut a = SampleRng::new(7);
        let mut b = SampleRng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn inserts_are_bounded_and_quoted() {
        let batches = seed_batches(1200);
        assert!(batches
            .iter()
            .all(|b| b.matches("),\n(").count() < ROWS_PER_INSERT));
        assert_eq!(quote("it's", true), "N'it''s'");
    }
}
