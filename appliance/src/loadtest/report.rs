//! The summary table, as the reference deployment printed it.

use std::fmt::Write;

use super::LoadReport;

/// `report` as a table: one line per concurrency level.
pub fn table(report: &LoadReport) -> String {
    let mut out = format!(
        "Load test of {} ({} s per level, started {})\n\n",
        report.url, report.seconds_per_level, report.started_at
    );
    let header = [
        "Concurrent users",
        "Requests/second",
        "Avg response",
        "p99 response",
        "Requests",
        "Failed requests",
    ];
    let _ = writeln!(out, "{}", header.join(" | "));
    let _ = writeln!(
        out,
        "{}",
        header
            .iter()
            .map(|h| "-".repeat(h.len()))
            .collect::<Vec<_>>()
            .join("-|-")
    );
    for level in &report.levels {
        let cells = [
            level.concurrency.to_string(),
            format!("{:.2} req/s", level.requests_per_second),
            format!("{:.1} ms", level.latency_avg_ms),
            format!("{:.1} ms", level.latency_p99_ms),
            level.requests.to_string(),
            level.failures.to_string(),
        ];
        let line: Vec<String> = cells
            .iter()
            .zip(header)
            .map(|(cell, head)| format!("{cell:>width$}", width = head.len()))
            .collect();
        let _ = writeln!(out, "{}", line.join(" | "));
    }
    for level in report.levels.iter().filter(|l| l.failures > 0) {
        let statuses: Vec<String> = level
            .statuses
            .iter()
            .filter(|(status, _)| **status >= 400)
            .map(|(status, n)| format!("{n} × {status}"))
            .chain(level.errors.iter().map(|(why, n)| format!("{n} × {why}")))
            .collect();
        let _ = writeln!(
            out,
            "\nat {} users, failed: {}",
            level.concurrency,
            statuses.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{LevelResult, LoadReport};
    use super::*;

    #[test]
    fn one_aligned_line_per_level_and_the_failures_spelled_out() {
        let level = |concurrency, failures| LevelResult {
            concurrency,
            requests: 5308,
            failures,
            requests_per_second: 530.8,
            latency_avg_ms: 9.4,
            latency_p50_ms: 8.0,
            latency_p99_ms: 20.12,
            latency_max_ms: 31.0,
            statuses: BTreeMap::from([(200, 5300), (503, failures)]),
            errors: BTreeMap::new(),
        };
        let report = LoadReport {
            url: "http://127.0.0.1:8080/".into(),
            started_at: "2026-11-23T06:00:00Z".into(),
            seconds_per_level: 10.0,
            levels: vec![level(5, 0), level(50, 8)],
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Load test of http://127.0.0.1:8080/"));
        assert!(lines[2].starts_with("Concurrent users | Requests/second"));
        assert_eq!(lines[3].len(), lines[2].len());
        assert_eq!(lines[4].len(), lines[2].len());
        assert!(lines[4].contains("530.80 req/s") && lines[4].contains("20.1 ms"));
        assert!(text.contains("at 50 users, failed: 8 × 503"), "{text}");
    }
}
