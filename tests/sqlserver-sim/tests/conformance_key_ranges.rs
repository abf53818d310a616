//! Conformance over TDS (tiberius) of key-range predicates: the chunk queries capture sends
//! (`WHERE [id] > CAST(@P1 AS int) AND [id] <= CAST(@P2 AS int) ORDER BY [id]`, the first chunk
//! without lower bound, the last without upper bound, composite keys as OR-chains) and their
//! neighbours (inclusive bounds, flipped operands, equality, duplicated bounds, parameters of
//! another type than the key, NULL parameters, NULL keys, DESC, TOP, an open transaction).
//! The stand-in answers these from a clustered-key range without evaluating the conjuncts
//! the range states; every result here is compared with the rows computed independently in
//! Rust with SQL's three-valued logic over the data the test inserted.
//!
//! With `MSSQL_TEST_URL` (see `conformance_features.rs`) the same checks run against a real
//! SQL Server (default collation SQL_Latin1_General_CP1_CI_AS).

mod wire_support;

use tiberius::numeric::Numeric;
use tiberius::{Row, ToSql};
use wire_support::*;

async fn query(client: &mut TestClient, sql: &str, params: &[&dyn ToSql]) -> Vec<Row> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_first_result()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `x op p` in SQL: unknown when the parameter is NULL.
fn cmp3<T: Ord + ?Sized>(x: &T, op: &str, p: Option<&T>) -> Option<bool> {
    let p = p?;
    Some(match op {
        "<" => x < p,
        "<=" => x <= p,
        ">" => x > p,
        ">=" => x >= p,
        "=" => x == p,
        _ => panic!("operator {op}"),
    })
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// Inserts `values` (already formatted rows) in batches of 500.
async fn insert(client: &mut TestClient, table: &str, values: &[String]) {
    for batch in values.chunks(500) {
        exec(
            client,
            &format!("INSERT INTO dbo.{table} VALUES {}", batch.join(", ")),
        )
        .await;
    }
}

type IntModel = fn(i64, i64, Option<i64>, Option<i64>) -> Option<bool>;

/// Single int key: each query shape with its meaning, over bounds on, between, below and
/// above the stored keys, NULL, and empty ranges (lower above upper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int_key_ranges_return_exactly_the_matching_rows() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_int",
        "CREATE TABLE dbo.kr_int (id int NOT NULL PRIMARY KEY, v int NOT NULL)",
    )
    .await;
    let data: Vec<(i64, i64)> = (0..200)
        .map(|i| (i * 5 - 300, (i * 5 - 300i64).rem_euclid(7)))
        .collect();
    insert(
        &mut c,
        "kr_int",
        &data
            .iter()
            .map(|(id, v)| format!("({id}, {v})"))
            .collect::<Vec<_>>(),
    )
    .await;

    let bounds: Vec<Option<i64>> = [-400, -300, -299, -1, 0, 3, 5, 102, 695, 696, 800]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    let select = "SELECT [id], [v] FROM [dbo].[kr_int] WITH (NOLOCK)";
    // (WHERE … ORDER BY text, meaning for (id, v, @P1, @P2))
    let shapes: Vec<(&str, IntModel)> = vec![
        (
            "WHERE [id] > CAST(@P1 AS int) AND [id] <= CAST(@P2 AS int) ORDER BY [id]",
            |id, _, lo, hi| and3(cmp3(&id, ">", lo.as_ref()), cmp3(&id, "<=", hi.as_ref())),
        ),
        (
            "WHERE [id] <= CAST(@P2 AS int) ORDER BY [id]",
            |id, _, _, hi| cmp3(&id, "<=", hi.as_ref()),
        ),
        (
            "WHERE [id] > CAST(@P1 AS int) ORDER BY [id]",
            |id, _, lo, _| cmp3(&id, ">", lo.as_ref()),
        ),
        (
            "WHERE [id] >= @P1 AND [id] < @P2 ORDER BY [id]",
            |id, _, lo, hi| and3(cmp3(&id, ">=", lo.as_ref()), cmp3(&id, "<", hi.as_ref())),
        ),
        (
            "WHERE @P1 < [id] AND @P2 >= [id] ORDER BY [id]",
            |id, _, lo, hi| and3(cmp3(&id, ">", lo.as_ref()), cmp3(&id, "<=", hi.as_ref())),
        ),
        (
            "WHERE [id] = @P1 AND [id] <= @P2 ORDER BY [id]",
            |id, _, lo, hi| and3(cmp3(&id, "=", lo.as_ref()), cmp3(&id, "<=", hi.as_ref())),
        ),
        (
            "WHERE [id] > @P1 AND [v] <> 3 AND [id] <= @P2 ORDER BY [id]",
            |id, v, lo, hi| {
                and3(
                    and3(cmp3(&id, ">", lo.as_ref()), Some(v != 3)),
                    cmp3(&id, "<=", hi.as_ref()),
                )
            },
        ),
        (
            "WHERE [id] > @P1 AND [id] > @P2 ORDER BY [id]",
            |id, _, lo, hi| and3(cmp3(&id, ">", lo.as_ref()), cmp3(&id, ">", hi.as_ref())),
        ),
        (
            "WHERE [id] < @P1 OR [id] > @P2 ORDER BY [id]",
            |id, _, lo, hi| or3(cmp3(&id, "<", lo.as_ref()), cmp3(&id, ">", hi.as_ref())),
        ),
        (
            "WHERE [id] >= @P1 AND [id] <= @P2 ORDER BY [id] DESC",
            |id, _, lo, hi| and3(cmp3(&id, ">=", lo.as_ref()), cmp3(&id, "<=", hi.as_ref())),
        ),
    ];
    let mut checked = 0;
    for (shape, model) in &shapes {
        let sql = format!("{select} {shape}");
        for lo in &bounds {
            for hi in &bounds {
                let rows = query(&mut c, &sql, &[lo, hi]).await;
                let got: Vec<i64> = rows
                    .iter()
                    .map(|r| r.get::<i32, _>(0).unwrap() as i64)
                    .collect();
                let mut want: Vec<i64> = data
                    .iter()
                    .filter(|(id, v)| model(*id, *v, *lo, *hi) == Some(true))
                    .map(|(id, _)| *id)
                    .collect();
                if shape.ends_with("DESC") {
                    want.reverse();
                }
                assert_eq!(got, want, "{sql} with @P1 = {lo:?}, @P2 = {hi:?}");
                checked += 1;
            }
        }
    }
    // TOP stops the range scan early; int parameters against the int key.
    for lo in [-301, -300, 0, 690, 695] {
        let rows = query(
            &mut c,
            "SELECT TOP (7) [id] FROM [dbo].[kr_int] WHERE [id] > @P1 ORDER BY [id]",
            &[&lo],
        )
        .await;
        let got: Vec<i64> = rows
            .iter()
            .map(|r| r.get::<i32, _>(0).unwrap() as i64)
            .collect();
        let want: Vec<i64> = data
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id > lo as i64)
            .take(7)
            .collect();
        assert_eq!(got, want, "TOP (7) after {lo}");
    }
    assert_eq!(checked, shapes.len() * bounds.len() * bounds.len());
}

/// Decimal parameters against an int key (the key converts to decimal): not a plain range
/// bound, the rows must still be exactly those the comparison selects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int_key_against_decimal_and_bigint_parameters() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_mixed",
        "CREATE TABLE dbo.kr_mixed (id int NOT NULL PRIMARY KEY)",
    )
    .await;
    let ids: Vec<i64> = (-50..50).map(|i| i * 3).collect();
    insert(
        &mut c,
        "kr_mixed",
        &ids.iter().map(|id| format!("({id})")).collect::<Vec<_>>(),
    )
    .await;
    // Tenths: -151.5 … 151.5 around and on the keys.
    let tenths: Vec<i64> = vec![-1600, -1505, -1500, -15, 0, 5, 30, 35, 1470, 1475, 1500];
    for lo in &tenths {
        for hi in &tenths {
            let (plo, phi) = (
                Numeric::new_with_scale(*lo as i128, 1),
                Numeric::new_with_scale(*hi as i128, 1),
            );
            let sql =
                "SELECT [id] FROM [dbo].[kr_mixed] WHERE [id] > @P1 AND [id] <= @P2 ORDER BY [id]";
            let got: Vec<i64> = query(&mut c, sql, &[&plo, &phi])
                .await
                .iter()
                .map(|r| r.get::<i32, _>(0).unwrap() as i64)
                .collect();
            let want: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| id * 10 > *lo && id * 10 <= *hi)
                .collect();
            assert_eq!(got, want, "{sql} with {plo} and {phi}");
        }
    }
    // bigint parameters beyond the int range: no overflow, no error.
    for (lo, hi) in [
        (i64::MIN, 0),
        (-3, i64::MAX),
        (i32::MAX as i64 + 1, i64::MAX),
        (i64::MIN, i32::MIN as i64 - 1),
    ] {
        let sql =
            "SELECT [id] FROM [dbo].[kr_mixed] WHERE [id] > @P1 AND [id] <= @P2 ORDER BY [id]";
        let got: Vec<i64> = query(&mut c, sql, &[&lo, &hi])
            .await
            .iter()
            .map(|r| r.get::<i32, _>(0).unwrap() as i64)
            .collect();
        let want: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| *id > lo && *id <= hi)
            .collect();
        assert_eq!(got, want, "{sql} with {lo} and {hi}");
    }
}

/// A bigint key read with int parameters (widened exactly), keys beyond the int range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigint_key_with_int_parameters() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_big",
        "CREATE TABLE dbo.kr_big (id bigint NOT NULL PRIMARY KEY)",
    )
    .await;
    let ids: Vec<i64> = vec![
        i64::MIN + 1,
        -5_000_000_000,
        i32::MIN as i64 - 1,
        i32::MIN as i64,
        -1,
        0,
        1,
        i32::MAX as i64,
        i32::MAX as i64 + 1,
        5_000_000_000,
        i64::MAX,
    ];
    insert(
        &mut c,
        "kr_big",
        &ids.iter().map(|id| format!("({id})")).collect::<Vec<_>>(),
    )
    .await;
    let bounds: Vec<Option<i32>> = [i32::MIN, -1, 0, 1, i32::MAX]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    for sql in [
        "SELECT [id] FROM [dbo].[kr_big] WHERE [id] > @P1 AND [id] <= @P2 ORDER BY [id]",
        "SELECT [id] FROM [dbo].[kr_big] WHERE [id] >= @P1 AND [id] < @P2 ORDER BY [id]",
    ] {
        let inclusive_lower = sql.contains(">=");
        for lo in &bounds {
            for hi in &bounds {
                let got: Vec<i64> = query(&mut c, sql, &[lo, hi])
                    .await
                    .iter()
                    .map(|r| r.get::<i64, _>(0).unwrap())
                    .collect();
                let (lo64, hi64) = (lo.map(i64::from), hi.map(i64::from));
                let want: Vec<i64> = ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        let lower =
                            cmp3(id, if inclusive_lower { ">=" } else { ">" }, lo64.as_ref());
                        let upper =
                            cmp3(id, if inclusive_lower { "<" } else { "<=" }, hi64.as_ref());
                        and3(lower, upper) == Some(true)
                    })
                    .collect();
                assert_eq!(got, want, "{sql} with @P1 = {lo:?}, @P2 = {hi:?}");
            }
        }
    }
}

/// A unique clustered index on a nullable column: the NULL key sorts first but never
/// satisfies a comparison, also when only an upper bound is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_keys_never_satisfy_a_key_range() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_nullable",
        "CREATE TABLE dbo.kr_nullable (k int NULL, v int NOT NULL)",
    )
    .await;
    exec(
        &mut c,
        "CREATE UNIQUE CLUSTERED INDEX kr_nullable_k ON dbo.kr_nullable (k)",
    )
    .await;
    let keys: Vec<Option<i64>> = (0..30).map(|i| Some(i * 2)).chain([None]).collect();
    insert(
        &mut c,
        "kr_nullable",
        &keys
            .iter()
            .map(|k| format!("({}, 1)", k.map_or("NULL".to_string(), |k| k.to_string())))
            .collect::<Vec<_>>(),
    )
    .await;
    let bounds: Vec<Option<i64>> = [-1, 0, 1, 30, 58, 59]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    let shapes: Vec<(&str, IntModel)> = vec![
        ("WHERE [k] <= CAST(@P1 AS int)", |k, _, p, _| {
            cmp3(&k, "<=", p.as_ref())
        }),
        ("WHERE [k] < @P1", |k, _, p, _| cmp3(&k, "<", p.as_ref())),
        ("WHERE [k] >= @P1", |k, _, p, _| cmp3(&k, ">=", p.as_ref())),
        ("WHERE [k] > @P1 AND [k] <= @P2", |k, _, lo, hi| {
            and3(cmp3(&k, ">", lo.as_ref()), cmp3(&k, "<=", hi.as_ref()))
        }),
        ("WHERE [k] = @P1", |k, _, p, _| cmp3(&k, "=", p.as_ref())),
    ];
    for (shape, model) in &shapes {
        let sql = format!("SELECT [k] FROM [dbo].[kr_nullable] {shape} ORDER BY [k]");
        for lo in &bounds {
            for hi in &bounds {
                let got: Vec<Option<i64>> = query(&mut c, &sql, &[lo, hi])
                    .await
                    .iter()
                    .map(|r| r.get::<i32, _>(0).map(i64::from))
                    .collect();
                let want: Vec<Option<i64>> = keys
                    .iter()
                    .filter(|k| k.is_some_and(|k| model(k, 0, *lo, *hi) == Some(true)))
                    .copied()
                    .collect();
                assert_eq!(got, want, "{sql} with @P1 = {lo:?}, @P2 = {hi:?}");
            }
        }
    }
    // An OR with IS NULL is not a range: the NULL key row is selected.
    let got: Vec<Option<i32>> = query(
        &mut c,
        "SELECT [k] FROM [dbo].[kr_nullable] WHERE [k] <= @P1 OR [k] IS NULL ORDER BY [k]",
        &[&3i32],
    )
    .await
    .iter()
    .map(|r| r.get::<i32, _>(0))
    .collect();
    assert_eq!(got, vec![None, Some(0), Some(2)]);
}

/// varchar keys under the case-insensitive default collation: bounds that differ from a key
/// only in case or trailing spaces equal it; varchar-typed (CAST) and nvarchar parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_key_ranges_follow_the_collation() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_str",
        "CREATE TABLE dbo.kr_str (code varchar(20) NOT NULL PRIMARY KEY)",
    )
    .await;
    let codes: Vec<String> = (0..100).map(|i| format!("k{:03}", i * 3)).collect();
    insert(
        &mut c,
        "kr_str",
        &codes.iter().map(|k| format!("('{k}')")).collect::<Vec<_>>(),
    )
    .await;
    // SQL's equality under a _CI_ collation with trailing spaces ignored, for ASCII letters
    // and digits (whose order there is the byte order of the lowercase form).
    let norm = |s: &str| s.trim_end_matches(' ').to_ascii_lowercase();
    let bounds: Vec<Option<&str>> = [
        Some("k000"),
        Some("K030"),
        Some("k030 "),
        Some("k031"),
        Some("k"),
        Some("l"),
        Some("a"),
        Some(""),
        None,
    ]
    .to_vec();
    for shape in [
        "WHERE [code] > CAST(@P1 AS varchar(20)) AND [code] <= CAST(@P2 AS varchar(20))",
        "WHERE [code] > @P1 AND [code] <= @P2",
        "WHERE [code] >= CAST(@P1 AS varchar(20)) AND [code] < CAST(@P2 AS varchar(20))",
    ] {
        let sql = format!("SELECT [code] FROM [dbo].[kr_str] {shape} ORDER BY [code]");
        let inclusive_lower = shape.contains(">=");
        for lo in &bounds {
            for hi in &bounds {
                let got: Vec<String> = query(&mut c, &sql, &[lo, hi])
                    .await
                    .iter()
                    .map(|r| r.get::<&str, _>(0).unwrap().to_string())
                    .collect();
                let (nlo, nhi) = (lo.map(norm), hi.map(norm));
                let want: Vec<String> = codes
                    .iter()
                    .filter(|k| {
                        let k = norm(k);
                        let lower =
                            cmp3(&k, if inclusive_lower { ">=" } else { ">" }, nlo.as_ref());
                        let upper =
                            cmp3(&k, if inclusive_lower { "<" } else { "<=" }, nhi.as_ref());
                        and3(lower, upper) == Some(true)
                    })
                    .cloned()
                    .collect();
                assert_eq!(got, want, "{sql} with @P1 = {lo:?}, @P2 = {hi:?}");
            }
        }
    }
}

/// A two-column key read with capture's OR-chain tuple predicates: `(a, b) > (p1, p2)` and
/// `(a, b) <= (p3, p4)`, including bounds with a NULL in the second position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_key_tuple_ranges() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_pair",
        "CREATE TABLE dbo.kr_pair (a int NOT NULL, b varchar(10) NOT NULL, v int NOT NULL, PRIMARY KEY (a, b))",
    )
    .await;
    let rows: Vec<(i64, String)> = (0..20)
        .flat_map(|a| {
            ["b", "d", "f"]
                .into_iter()
                .map(move |b| (a as i64, b.to_string()))
        })
        .collect();
    insert(
        &mut c,
        "kr_pair",
        &rows
            .iter()
            .map(|(a, b)| format!("({a}, '{b}', {a})"))
            .collect::<Vec<_>>(),
    )
    .await;
    let tuples: Vec<(Option<i64>, Option<&str>)> = vec![
        (Some(-1), Some("z")),
        (Some(0), Some("a")),
        (Some(0), Some("b")),
        (Some(5), Some("c")),
        (Some(5), Some("D")),
        (Some(5), None),
        (Some(12), Some("f")),
        (Some(19), Some("g")),
        (Some(20), Some("a")),
        (None, Some("b")),
    ];
    let after =
        "([a] > CAST(@P1 AS int) OR ([a] = CAST(@P1 AS int) AND [b] > CAST(@P2 AS varchar(10))))";
    let at_most =
        "([a] < CAST(@P3 AS int) OR ([a] = CAST(@P3 AS int) AND [b] <= CAST(@P4 AS varchar(10))))";
    let norm = |s: &str| s.to_ascii_lowercase();
    // (a, b) op (pa, pb) as the OR-chain means it, three-valued.
    let tuple = |a: i64, b: &str, strict: &str, last: &str, pa: Option<i64>, pb: Option<&str>| {
        let (b, pb) = (norm(b), pb.map(norm));
        or3(
            cmp3(&a, strict, pa.as_ref()),
            and3(cmp3(&a, "=", pa.as_ref()), cmp3(&b, last, pb.as_ref())),
        )
    };
    for (which, sql) in [
        ("middle", format!("SELECT [a], [b] FROM [dbo].[kr_pair] WHERE {after} AND {at_most} ORDER BY [a], [b]")),
        ("first", format!("SELECT [a], [b] FROM [dbo].[kr_pair] WHERE {at_most} ORDER BY [a], [b]")),
        ("last", format!("SELECT [a], [b] FROM [dbo].[kr_pair] WHERE {after} ORDER BY [a], [b]")),
    ] {
        for (la, lb) in &tuples {
            for (ua, ub) in &tuples {
                // The first chunk binds only the upper tuple, the last only the lower one.
                let (la, lb) = if which == "first" { (None, None) } else { (*la, *lb) };
                let (ua, ub) = if which == "last" { (None, None) } else { (*ua, *ub) };
                let got: Vec<(i64, String)> = query(&mut c, &sql, &[&la, &lb, &ua, &ub])
                    .await
                    .iter()
                    .map(|r| (r.get::<i32, _>(0).unwrap() as i64, r.get::<&str, _>(1).unwrap().to_string()))
                    .collect();
                let want: Vec<(i64, String)> = rows
                    .iter()
                    .filter(|(a, b)| {
                        let lower = if which == "first" { Some(true) } else { tuple(*a, b, ">", ">", la, lb) };
                        let upper = if which == "last" { Some(true) } else { tuple(*a, b, "<", "<=", ua, ub) };
                        and3(lower, upper) == Some(true)
                    })
                    .cloned()
                    .collect();
                assert_eq!(got, want, "{which}: {sql} with ({la:?}, {lb:?}) and ({ua:?}, {ub:?})");
            }
        }
    }
}

/// decimal(9,2) keys: parameters of the key's exact type, of another scale and int.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_key_ranges() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_dec",
        "CREATE TABLE dbo.kr_dec (d decimal(9,2) NOT NULL PRIMARY KEY)",
    )
    .await;
    // Thousandths, so that every parameter below compares exactly in Rust.
    let keys: Vec<i64> = (-20..20).map(|i| i * 250).collect();
    insert(
        &mut c,
        "kr_dec",
        &keys
            .iter()
            .map(|k| format!("({})", Numeric::new_with_scale(*k as i128 / 10, 2)))
            .collect::<Vec<_>>(),
    )
    .await;
    let bounds: Vec<i64> = vec![-6000, -5000, -1250, -10, 0, 250, 255, 1000, 4750, 5000];
    for (shape, scale) in [
        (
            "WHERE [d] > CAST(@P1 AS decimal(9,2)) AND [d] <= CAST(@P2 AS decimal(9,2))",
            3u8,
        ),
        ("WHERE [d] > @P1 AND [d] <= @P2", 3),
        ("WHERE [d] >= @P1 AND [d] < @P2", 0),
    ] {
        let sql = format!("SELECT [d] FROM [dbo].[kr_dec] {shape} ORDER BY [d]");
        let inclusive_lower = shape.contains(">=");
        for lo in &bounds {
            for hi in &bounds {
                // The parameter as sent: thousandths with scale 3, or whole numbers (scale 0).
                let param = |t: i64| {
                    if scale == 3 {
                        (Numeric::new_with_scale(t as i128, 3), t)
                    } else {
                        (
                            Numeric::new_with_scale((t / 1000) as i128, 0),
                            t / 1000 * 1000,
                        )
                    }
                };
                let ((plo, tlo), (phi, thi)) = (param(*lo), param(*hi));
                // CAST to decimal(9,2) rounds half away from zero.
                let cast = |t: i64| {
                    if shape.contains("CAST") {
                        (t + t.signum() * 5) / 10 * 10
                    } else {
                        t
                    }
                };
                let (tlo, thi) = (cast(tlo), cast(thi));
                let got: Vec<String> = query(&mut c, &sql, &[&plo, &phi])
                    .await
                    .iter()
                    .map(|r| r.get::<Numeric, _>(0).unwrap().to_string())
                    .collect();
                let want: Vec<String> = keys
                    .iter()
                    .filter(|k| {
                        if inclusive_lower {
                            **k >= tlo && **k < thi
                        } else {
                            **k > tlo && **k <= thi
                        }
                    })
                    .map(|k| Numeric::new_with_scale(*k as i128 / 10, 2).to_string())
                    .collect();
                assert_eq!(got, want, "{sql} with {plo} and {phi}");
            }
        }
    }
}

/// Inside a transaction the range reads its own inserts and deletes (the overlay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ranges_see_the_transactions_own_writes() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_txn",
        "CREATE TABLE dbo.kr_txn (id int NOT NULL PRIMARY KEY)",
    )
    .await;
    let mut ids: Vec<i64> = (0..100).map(|i| i * 10).collect();
    insert(
        &mut c,
        "kr_txn",
        &ids.iter().map(|id| format!("({id})")).collect::<Vec<_>>(),
    )
    .await;
    exec(&mut c, "BEGIN TRANSACTION; INSERT INTO dbo.kr_txn VALUES (55), (101), (-5); DELETE FROM dbo.kr_txn WHERE id IN (50, 100, 0)").await;
    ids.extend([55, 101, -5]);
    ids.retain(|id| ![50, 100, 0].contains(id));
    ids.sort();
    let sql = "SELECT [id] FROM [dbo].[kr_txn] WHERE [id] > CAST(@P1 AS int) AND [id] <= CAST(@P2 AS int) ORDER BY [id]";
    for (lo, hi) in [
        (-10i64, 0i64),
        (-5, 55),
        (0, 100),
        (50, 101),
        (54, 56),
        (100, 1000),
    ] {
        let got: Vec<i64> = query(&mut c, sql, &[&lo, &hi])
            .await
            .iter()
            .map(|r| r.get::<i32, _>(0).unwrap() as i64)
            .collect();
        let want: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| *id > lo && *id <= hi)
            .collect();
        assert_eq!(got, want, "({lo}, {hi}] inside the transaction");
    }
    exec(&mut c, "ROLLBACK").await;
}

/// A clustered primary key declared DESC: the same rows for the same ranges, in the order
/// asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descending_clustered_key_ranges() {
    let target = Target::start().await;
    let mut c = target.client().await;
    fresh_table(
        &mut c,
        "kr_desc",
        "CREATE TABLE dbo.kr_desc (id int NOT NULL, CONSTRAINT kr_desc_pk PRIMARY KEY CLUSTERED (id DESC))",
    )
    .await;
    let ids: Vec<i64> = (0..60).map(|i| i * 4).collect();
    insert(
        &mut c,
        "kr_desc",
        &ids.iter().map(|id| format!("({id})")).collect::<Vec<_>>(),
    )
    .await;
    for (lo, hi) in [
        (-1i64, 3i64),
        (0, 4),
        (3, 101),
        (100, 236),
        (236, 300),
        (50, 10),
    ] {
        for order in ["ASC", "DESC"] {
            let sql = format!(
                "SELECT [id] FROM [dbo].[kr_desc] WHERE [id] > CAST(@P1 AS int) AND [id] <= CAST(@P2 AS int) ORDER BY [id] {order}"
            );
            let got: Vec<i64> = query(&mut c, &sql, &[&lo, &hi])
                .await
                .iter()
                .map(|r| r.get::<i32, _>(0).unwrap() as i64)
                .collect();
            let mut want: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| *id > lo && *id <= hi)
                .collect();
            if order == "DESC" {
                want.reverse();
            }
            assert_eq!(got, want, "{sql} with ({lo}, {hi}]");
        }
    }
}
