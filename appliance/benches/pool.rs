//! Hot paths of the pooler, per query: reading the SQL for its session effects and shape.
//! `cargo bench -p gatehouse --bench pool`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::pool::read_query;

/// The statements of pgbench's tpcb-like transaction, as its simple protocol sends them.
const TPCB_LIKE: [&str; 7] = [
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + -4035 WHERE aid = 771243;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 771243;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + -4035 WHERE tid = 42;",
    "UPDATE pgbench_branches SET bbalance = bbalance + -4035 WHERE bid = 7;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (42, 7, 771243, -4035, CURRENT_TIMESTAMP);",
    "END;",
];

/// An ORM's query: long, quoted identifiers, many parameters.
const ORM_QUERY: &str = r#"SELECT "orders"."id", "orders"."customer_id", "orders"."status", "orders"."total_cents", "orders"."created_at", "orders"."updated_at" FROM "orders" INNER JOIN "customers" ON "customers"."id" = "orders"."customer_id" WHERE "customers"."email" = 'someone@example.com' AND "orders"."status" IN ('paid', 'shipped', 'delivered') AND "orders"."created_at" > '2026-01-01 00:00:00' ORDER BY "orders"."created_at" DESC LIMIT 50 OFFSET 100"#;

fn reading(c: &mut Criterion) {
    c.bench_function(
        "pool/read the 7 statements of a tpcb-like transaction",
        |b| {
            b.iter(|| {
                for sql in TPCB_LIKE {
                    black_box(read_query(black_box(sql)));
                }
            })
        },
    );
    c.bench_function("pool/read a 429-byte ORM query", |b| {
        b.iter(|| black_box(read_query(black_box(ORM_QUERY))))
    });
}

criterion_group!(benches, reading);
criterion_main!(benches);
