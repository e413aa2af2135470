//! One rate-limit decision through a warm plugin instance, including the host's GCRA count:
//! the work the rate-limit phase adds to a request. Goal: p50 ≤ 1.5 µs.
//! `cargo bench -p gatehouse --bench policy`

// A bench reports on stdout.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

// The allocator the gatehouse binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use gatehouse::edge::ratelimit::gcra::{Gcra, Quota};
use gatehouse::policy::rate_limit_types::Decision;
use gatehouse::policy::{Grant, Limits, PluginKind, PluginSpec, PolicyEngine, Request, builtin};

fn decision(c: &mut Criterion) {
    let engine = PolicyEngine::new(None).expect("engine");
    let spec = PluginSpec {
        name: "bench".into(),
        kind: PluginKind::RateLimit,
        config: r#"{"default": {"limit": 1000000000, "window": 1}}"#.into(),
        grants: BTreeSet::from([Grant::Config]),
        limits: Limits {
            deadline: Duration::from_millis(10),
            memory_bytes: 16 << 20,
            kv_bytes: 1 << 20,
        },
    };
    let plugin = engine
        .load(spec, builtin::find("rate-limit").expect("built in").wasm)
        .expect("loads");
    let gcra = Gcra::new(262_144);
    let request = Request {
        method: "GET".into(),
        path: "/api/orders".into(),
        query: "page=2".into(),
        host: "shop.example".into(),
        route: "api".into(),
        client_ip: "203.0.113.7".into(),
    };
    let started = Instant::now();
    let mut decide = || {
        let Decision::Limit(limit) = plugin.decide(black_box(&request), None).expect("decides")
        else {
            panic!("the built-in counts every request")
        };
        let q = limit.quota;
        let quota = Quota {
            limit: q.limit,
            window: Duration::from_millis(u64::from(q.window_ms)),
            burst: q.burst,
            cost: q.cost,
        };
        gcra.spend(
            &limit.policy,
            &limit.key,
            quota,
            started.elapsed().as_nanos() as u64,
        )
    };

    c.bench_function("policy/rate-limit decision, warm instance + GCRA", |b| {
        b.iter(&mut decide)
    });

    // Criterion reports means; the goal is a median, so time single calls too.
    let mut samples: Vec<u128> = (0..200_000)
        .map(|_| {
            let t = Instant::now();
            black_box(decide());
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "policy/rate-limit decision, single calls: p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns ({} calls)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        samples.len()
    );
}

criterion_group!(benches, decision);
criterion_main!(benches);
