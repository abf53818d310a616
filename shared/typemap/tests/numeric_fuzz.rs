//! The binary numeric encoder against PostgreSQL's own parser: random numeric(p,s) with
//! p ≤ 38 (including s = p, negative values and powers of ten), encoded by us, compared with
//! `'<text>'::numeric(p,s)` computed by PostgreSQL from independently formatted text.

mod support;

use bytes::BytesMut;
use dbsync_proto::v1::value::Kind;
use dbsync_typemap::*;
use futures::SinkExt;
use rand::{Rng, SeedableRng};
use support::*;

/// Decimal text built by string slicing (independent of the crate's formatter).
fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let padded = format!(
        "{}{}",
        "0".repeat((scale as usize + 1).saturating_sub(digits.len())),
        digits
    );
    let (int, frac) = padded.split_at(padded.len() - scale as usize);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[tokio::test]
async fn numeric_encoder_agrees_with_postgres() {
    let seed: u64 = std::env::var("NUMERIC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("NUMERIC_FUZZ_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let client = client().await;
    let mut checked = 0;
    for round in 0..60 {
        let precision: u32 = if round < 3 {
            38
        } else {
            rng.random_range(1..=38)
        };
        let scale: u32 = match round {
            0 => 38,
            1 => 0,
            _ => rng.random_range(0..=precision),
        };
        let limit = 10i128.pow(precision);
        let mut values: Vec<i128> = vec![0, 1, -1, limit - 1, -(limit - 1)];
        for k in 0..precision {
            values.push(10i128.pow(k));
            values.push(-(10i128.pow(k)));
        }
        for _ in 0..60 {
            // Random magnitude: pick a digit count first so small and large values both occur.
            let digits = rng.random_range(1..=precision);
            let value = rng.random_range(0..10i128.pow(digits));
            values.push(if rng.random_bool(0.5) { -value } else { value });
        }
        let ty = map_column(
            &column("decimal", 17, precision as i32, scale as i32),
            &MappingOptions::default(),
        )
        .unwrap();
        let text_type = PgColumnType::new("expected", PgKind::Text);
        let id_type = PgColumnType::new("id", PgKind::Integer);
        let table = format!("fuzz_{round}");
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, v {}, expected text)",
                ty.ddl()
            ))
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        copy_header(&mut buf);
        for (i, value) in values.iter().enumerate() {
            begin_row(&mut buf, 3);
            encode_value(&v(Kind::Int(i as i64)), &id_type, &mut buf).unwrap();
            encode_value(
                &v(Kind::Decimal(decimal_from_parts(*value, scale))),
                &ty,
                &mut buf,
            )
            .unwrap();
            encode_value(
                &v(Kind::Text(decimal_text(*value, scale))),
                &text_type,
                &mut buf,
            )
            .unwrap();
        }
        copy_trailer(&mut buf);
        let sink = client
            .copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
            .await
            .unwrap();
        futures::pin_mut!(sink);
        sink.send(buf.freeze()).await.unwrap();
        sink.as_mut().finish().await.unwrap();
        let mismatches = client
            .query(
                &format!("SELECT expected, v::text, expected::numeric({precision},{scale})::text FROM {table} WHERE v::text IS DISTINCT FROM expected::numeric({precision},{scale})::text OR v <> expected::numeric"),
                &[],
            )
            .await
            .unwrap();
        let shown: Vec<(String, String, String)> = mismatches
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert!(
            shown.is_empty(),
            "numeric({precision},{scale}) seed {seed}: (expected, ours, postgres) {shown:?}"
        );
        // Our own text formatter agrees with PostgreSQL's output too.
        for value in &values {
            let mut ours = String::new();
            dbsync_typemap::numeric::write_decimal_text(&mut ours, *value, scale).unwrap();
            assert_eq!(ours, decimal_text(*value, scale));
        }
        checked += values.len();
    }
    eprintln!("checked {checked} numeric values");
}
