//! Reads back the OpenMetrics text that [`super::metrics::Metrics::render`] writes, so the
//! monitors (recommendations, alerts, trends) see exactly what `/metrics` shows, histogram
//! buckets included, without a second set of counters on the request path.

use std::borrow::Cow;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample<'a> {
    /// The sample's name, with its suffix (`_total`, `_bucket`, ...).
    pub(super) name: &'a str,
    /// The name and the label set as written: which series this sample belongs to.
    pub(super) series: &'a str,
    /// What is between the braces, unparsed (read with [`Sample::label`]).
    labels: &'a str,
    /// The value.
    pub(super) value: f64,
}

impl<'a> Sample<'a> {
    /// Every label, unescaped, in the order written.
    pub(super) fn labels(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> {
        Labels(self.labels)
    }

    /// The value of label `key`, unescaped.
    pub(super) fn label(&self, key: &str) -> Option<Cow<'a, str>> {
        Labels(self.labels)
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }
}

/// The samples of `text`; lines that are not samples (comments, `# EOF`) or that do not parse
/// are skipped.
pub(super) fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(sample)
}

/// The sample on `line`, if it is one.
pub(super) fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, labels, end) = match line.find(['{', ' ']) {
        Some(open) if line.as_bytes()[open] == b'{' => {
            let close = closing_brace(line, open)?;
            (&line[..open], &line[open + 1..close], close + 1)
        }
        Some(space) => (&line[..space], "", space),
        None => return None,
    };
    let (series, rest) = line.split_at(end);
    // A timestamp or an exemplar may follow the value.
    let value = rest.split_ascii_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        series,
        labels,
        value,
    })
}

/// The `}` that closes the label set opened at `open`, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, byte) in line.bytes().enumerate().skip(open + 1) {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(index),
            _ => {}
        }
    }
    None
}

/// The `name="value"` pairs of a label set.
struct Labels<'a>(&'a str);

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0.trim_start_matches([',', ' ']);
        let (name, rest) = rest.split_once("=\"")?;
        let mut escaped = false;
        let end = rest.bytes().position(|byte| {
            let closes = byte == b'"' && !escaped;
            escaped = byte == b'\\' && !escaped;
            closes
        })?;
        let raw = &rest[..end];
        self.0 = &rest[end + 1..];
        let value = if raw.contains('\\') {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        Some((name, value))
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP x_total X.\n# TYPE x counter\nx_total 3\n\
            h_bucket{route=\"a\",le=\"+Inf\"} 7\nh_sum{route=\"a\"} 1.5e-3\n# EOF\n";
        let all: Vec<_> = samples(text).collect();
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].name, all[0].value), ("x_total", 3.0));
        assert_eq!(all[1].label("route").as_deref(), Some("a"));
        assert_eq!(all[1].label("le").as_deref(), Some("+Inf"));
        assert_eq!(all[1].series, "h_bucket{route=\"a\",le=\"+Inf\"}");
        assert_eq!(all[0].series, "x_total");
        assert_eq!(all[2].value, 0.0015);
        assert_eq!(all[0].label("route"), None);
    }

    #[test]
    fn quoted_values_may_hold_braces_commas_and_escapes() {
        let text = r#"r_total{route="a}b,c=\"d\"\\",method="GET"} 2 1700000000"#;
        let sample = samples(text).next().expect("one sample");
        assert_eq!(sample.label("route").as_deref(), Some(r#"a}b,c="d"\"#));
        assert_eq!(sample.label("method").as_deref(), Some("GET"));
        assert_eq!(sample.value, 2.0);
    }

    #[test]
    fn broken_lines_are_skipped() {
        let text = "a{route=\"x\" 1\nb notanumber\nc\nd 4\n";
        let all: Vec<_> = samples(text).map(|s| s.name).collect();
        assert_eq!(all, ["d"]);
    }
}
