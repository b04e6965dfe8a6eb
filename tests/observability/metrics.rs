//! tlsedge's `/metrics` page: promtool's lint, and every metric the rules and the dashboard name exists.

use super::*;

#[tokio::test]
async fn metrics_page_passes_promtool_check_metrics() {
    let edge = Edge::start().await;
    let page = edge.traffic().await;
    // Rendered as histograms (buckets), which the dashboard's histogram_quantile needs.
    for histogram in [
        "tlsedge_handshake_duration_seconds",
        "tlsedge_http_request_duration_seconds",
    ] {
        assert!(
            page.contains(&format!("# TYPE {histogram} histogram")),
            "{}",
            page.0
        );
        let buckets = page.samples(&format!("{histogram}_bucket"), &[]);
        assert!(buckets.len() >= 10, "{}", page.0);
    }
    if !tool("promtool") {
        return;
    }
    let lint = promtool(&["check", "metrics"], &page.0);
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_rules_name_exists() {
    let edge = Edge::start().await;
    let page = edge.traffic().await;
    let scraped = page_names(&page);
    let declared = metric_words(&read("src/metrics/names.rs"));
    let known = |name: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        scraped.contains(name) || declared.contains(name) || declared.contains(base)
    };
    let dashboard = read("deploy/grafana/tlsedge.json");
    for (file, text) in [
        ("alerts.yml", read("deploy/prometheus/alerts.yml")),
        ("tlsedge.json", dashboard.clone()),
    ] {
        let words = metric_words(&text);
        assert!(words.len() >= 10, "{file} names only {words:?}");
        let unknown: Vec<_> = words.iter().filter(|w| !known(w)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses unknown metrics {unknown:?}"
        );
    }
    // The other way round: a new metric gets a panel.
    let shown = metric_words(&dashboard);
    let missing: Vec<_> = declared
        .iter()
        .filter(|name| {
            !["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| shown.contains(&format!("{name}{s}")))
                && !shown.contains(*name)
        })
        .collect();
    assert!(missing.is_empty(), "no dashboard panel shows {missing:?}");
}
