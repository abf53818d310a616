use dbsync_typemap::{pg_identifier, quote_ident, shorten_identifier, Capitalization};

#[test]
fn capitalization_policies() {
    assert_eq!(
        pg_identifier("OrderLines", Capitalization::Lower),
        "orderlines"
    );
    assert_eq!(
        pg_identifier("OrderLines", Capitalization::Source),
        "OrderLines"
    );
    assert_eq!(
        pg_identifier("OrderLines", Capitalization::Upper),
        "ORDERLINES"
    );
    assert_eq!(pg_identifier("ÄÖÜ", Capitalization::Lower), "äöü");
}

#[test]
fn short_names_are_unchanged_and_long_names_fit_in_63_bytes() {
    let exact = "a".repeat(63);
    assert_eq!(shorten_identifier(&exact), exact);
    let long = "a".repeat(64);
    let short = shorten_identifier(&long);
    assert_eq!(short.len(), 63);
    assert!(short.starts_with(&"a".repeat(54)));
    assert_eq!(short, shorten_identifier(&long), "deterministic");
    // Same 54-byte prefix, different tails: different names.
    let other = format!("{}b", "a".repeat(63));
    assert_ne!(shorten_identifier(&other), short);
}

#[test]
fn shortening_respects_character_boundaries() {
    for filler in 0..4 {
        let name = format!("{}{}", "x".repeat(filler), "é日😀".repeat(20));
        let short = shorten_identifier(&name);
        assert!(short.len() <= 63, "{} bytes", short.len());
        assert!(name.starts_with(&short[..short.len() - 9]));
        assert_eq!(short.as_bytes()[short.len() - 9], b'_');
        assert!(short[short.len() - 8..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
    }
}

#[test]
fn quoting() {
    assert_eq!(quote_ident("orders"), "orders");
    assert_eq!(quote_ident("order_2$x"), "order_2$x");
    assert_eq!(quote_ident("order"), "\"order\"");
    assert_eq!(quote_ident("user"), "\"user\"");
    assert_eq!(quote_ident("Orders"), "\"Orders\"");
    assert_eq!(quote_ident("1st"), "\"1st\"");
    assert_eq!(quote_ident("my col"), "\"my col\"");
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_ident(""), "\"\"");
    assert_eq!(quote_ident("é"), "\"é\"");
}

#[tokio::test]
async fn postgres_accepts_the_names_unchanged() {
    let client = dbsync_pgtest::PgCluster::shared()
        .connect("postgres")
        .await
        .unwrap();
    let long = format!("Très_Long_{}", "Nom_日本語_".repeat(10));
    for name in ["order", "Orders", "my col", "a\"b", "user", long.as_str()] {
        let target = pg_identifier(name, Capitalization::Source);
        let quoted = quote_ident(&target);
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {quoted}; CREATE TABLE {quoted} ({quoted} int)"
            ))
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT relname::text FROM pg_class WHERE relname = $1",
                &[&target],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            target,
            "PostgreSQL kept the name as given"
        );
    }
}
