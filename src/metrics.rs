//! Process-wide counters rendered in the Prometheus text format at `/metrics`.
//!
//! Metric names and label values are `&'static str` chosen by the code, never taken from
//! requests, so the number of series is bounded and no user data reaches the metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type SeriesKey = (&'static str, Vec<(&'static str, &'static str)>);

/// Counters and durations by metric name and labels.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<SeriesKey, u64>>,
    durations: Mutex<BTreeMap<SeriesKey, (f64, u64)>>,
}

impl Metrics {
    /// Adds one to the counter `name` with `labels`.
    pub(crate) fn inc(&self, name: &'static str, labels: &[(&'static str, &'static str)]) {
        let mut counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counters.entry((name, labels.to_vec())).or_insert(0) += 1;
    }

    /// Current value of one counter (0 when never incremented).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.get(&(name, labels.to_vec())).copied().unwrap_or(0)
    }

    /// Records one duration (seconds) of `name` with `labels` (rendered as a summary: sum and count).
    pub(crate) fn observe(&self, name: &'static str, labels: &[(&'static str, &'static str)], seconds: f64) {
        let mut durations = self.durations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = durations.entry((name, labels.to_vec())).or_insert((0.0, 0));
        entry.0 += seconds;
        entry.1 += 1;
    }

    /// Renders every counter and summary in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        let mut last_name = "";
        for ((name, labels), value) in counters.iter() {
            if *name != last_name {
                let _ = writeln!(out, "# TYPE {name} counter");
                last_name = name;
            }
            let labels = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",");
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        drop(counters);
        let durations = self.durations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut last_name = "";
        for ((name, labels), (sum, count)) in durations.iter() {
            if *name != last_name {
                let _ = writeln!(out, "# TYPE {name} summary");
                last_name = name;
            }
            let labels = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum:.6}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_as_summaries() {
        let m = Metrics::default();
        m.observe("chatwarden_graph_call_duration_seconds", &[("operation", "batch")], 0.25);
        m.observe("chatwarden_graph_call_duration_seconds", &[("operation", "batch")], 0.5);
        assert_eq!(
            m.render(),
            "# TYPE chatwarden_graph_call_duration_seconds summary\n\
             chatwarden_graph_call_duration_seconds_sum{operation=\"batch\"} 0.750000\n\
             chatwarden_graph_call_duration_seconds_count{operation=\"batch\"} 2\n"
        );
    }

    #[test]
    fn counters_render_in_prometheus_text_format() {
        let m = Metrics::default();
        m.inc("chatwarden_auth_rejections_total", &[("reason", "expired")]);
        m.inc("chatwarden_auth_rejections_total", &[("reason", "expired")]);
        m.inc("chatwarden_activities_total", &[("type", "message"), ("result", "ok")]);
        assert_eq!(m.get("chatwarden_auth_rejections_total", &[("reason", "expired")]), 2);
        assert_eq!(
            m.render(),
            "# TYPE chatwarden_activities_total counter\n\
             chatwarden_activities_total{type=\"message\",result=\"ok\"} 1\n\
             # TYPE chatwarden_auth_rejections_total counter\n\
             chatwarden_auth_rejections_total{reason=\"expired\"} 2\n"
        );
    }
}
