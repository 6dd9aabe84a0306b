//! Process-wide counters rendered in the Prometheus text format at `/metrics`.
//!
//! Metric names and label values are `&'static str` chosen by the code, never taken from
//! requests, so the number of series is bounded and no user data reaches the metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

type SeriesKey = (&'static str, Vec<(&'static str, &'static str)>);

/// Counters by metric name and labels.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<SeriesKey, u64>>,
}

impl Metrics {
    /// Adds one to the counter `name` with `labels`.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &'static str)]) {
        let mut counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counters.entry((name, labels.to_vec())).or_insert(0) += 1;
    }

    /// Current value of one counter (0 when never incremented).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.get(&(name, labels.to_vec())).copied().unwrap_or(0)
    }

    /// Renders every counter in the Prometheus text exposition format.
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
