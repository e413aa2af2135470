//! Hot paths of the edge, per request: route lookup, server pick, request id, metrics.
//! `cargo bench -p gatehouse --bench edge`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::config::{Balance, RouteConfig, ServerConfig, UpstreamConfig};
use gatehouse::edge::request_id::RequestIds;
use gatehouse::edge::router::Router;
use gatehouse::monitor::metrics::{Answered, Metrics};
use gatehouse::policy::Plugins;
use gatehouse::upstream::{PickContext, build_groups};

fn upstream(balance: Balance, servers: usize) -> UpstreamConfig {
    UpstreamConfig {
        servers: (0..servers)
            .map(|i| ServerConfig::Addr(format!("10.0.0.{i}:8080")))
            .collect(),
        balance,
        hash_key: "header:x-user".into(),
        ..UpstreamConfig::default()
    }
}

fn routing(c: &mut Criterion) {
    let groups = build_groups(
        &BTreeMap::from([("app".to_string(), upstream(Balance::RoundRobin, 2))]),
        &BTreeMap::new(),
    )
    .0;
    // A site with 20 routes: hosts, wildcards and nested prefixes.
    let routes: Vec<RouteConfig> = (0..20)
        .map(|i| RouteConfig {
            name: Some(format!("r{i}")),
            hosts: match i % 3 {
                0 => vec![],
                1 => vec![format!("site{i}.example.com")],
                _ => vec![format!("*.tenant{i}.example.com")],
            },
            path: format!("/section{}/page{i}/", i % 4),
            upstream: "app".into(),
            ..RouteConfig::default()
        })
        .collect();
    let config = gatehouse::config::Config {
        routes,
        ..gatehouse::config::Config::default()
    };
    let router = Router::new(&config, &groups, &Plugins::default());
    c.bench_function("router/find among 20 routes", |b| {
        b.iter(|| {
            router.find(
                black_box("www.tenant5.example.com"),
                black_box("/section1/page13/index.html"),
            )
        })
    });
}

fn picking(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-user"),
        HeaderValue::from_static("user-42"),
    );
    let ctx = PickContext {
        client_ip: Some(IpAddr::from([203, 0, 113, 9])),
        headers: &headers,
    };
    for (name, balance) in [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
        ("hash", Balance::Hash),
    ] {
        let groups = build_groups(
            &BTreeMap::from([("app".to_string(), upstream(balance, 8))]),
            &BTreeMap::new(),
        )
        .0;
        let group = &groups["app"];
        c.bench_function(&format!("balance/{name} over 8 servers"), |b| {
            b.iter(|| group.select(black_box(&ctx), &[]))
        });
    }
}

fn request_ids(c: &mut Criterion) {
    let ids = RequestIds::new(0x1234_5678_9abc_def0);
    let headers = HeaderMap::new();
    c.bench_function("request_id/generate", |b| {
        b.iter(|| ids.for_request(black_box(&headers)))
    });
}

/// What the finish phase adds to every request: one answered request into the metrics.
fn metrics(c: &mut Criterion) {
    let metrics = Metrics::default();
    let route: std::sync::Arc<str> = std::sync::Arc::from("api");
    let answered = Answered {
        route: Some(&route),
        method: &Method::GET,
        status: StatusCode::OK,
        duration: Duration::from_micros(850),
        bytes: 524,
        upstream_header_time: Some(Duration::from_micros(400)),
        cache: Some("miss"),
        coding: Some("gzip"),
    };
    c.bench_function("metrics/one answered request", |b| {
        b.iter(|| metrics.answered(black_box(&answered)));
    });
}

criterion_group!(benches, routing, picking, request_ids, metrics);
criterion_main!(benches);
