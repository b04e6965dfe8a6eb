//! The Grafana dashboard: its templating, and every query run on a real Prometheus.

use super::*;
use crate::prometheus::{encode, eventually, scraped_edge};

#[test]
fn dashboard_is_templated_on_its_datasource_instance_and_host() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/tlsedge.json")).unwrap();
    assert_eq!(dashboard["schemaVersion"], 39);
    assert_eq!(dashboard["uid"], "tlsedge");
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let host_query = var("host")["query"]["query"].as_str().expect("host query");
    assert!(host_query.starts_with("label_values(tlsedge_handshakes_total"));
    assert!(host_query.ends_with(", host)"), "{host_query}");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "{title}: id");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().expect("expr");
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
        }
    }
}

/// Every `expr` in a panel (`in_panels`) or elsewhere (annotations) of the dashboard.
fn exprs(value: &Value, in_panels: bool, out: &mut Vec<(String, bool)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => out.push((expr.clone(), in_panels)),
                    ("panels", _) => exprs(inner, true, out),
                    _ => exprs(inner, in_panels, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, in_panels, out)),
        _ => {}
    }
}

/// `expr` with Grafana's variables replaced as [`VARIABLES`] says.
fn substitute(expr: &str) -> String {
    let mut promql = expr.to_owned();
    for (var, value) in VARIABLES {
        let braced = format!("${{{}}}", &var[1..]);
        promql = promql.replace(&braced, value).replace(var, value);
    }
    assert!(!promql.contains('$'), "unknown variable in {expr}");
    promql
}

/// The selector of the dashboard's `$host` variable, `label_values(SELECTOR, host)`.
fn host_variable(dashboard: &Value) -> String {
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let host = vars.iter().find(|v| v["name"] == "host").expect("$host");
    let query = host["query"]["query"].as_str().expect("query");
    let selector = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(", host)"))
        .unwrap_or_else(|| panic!("$host: {query}"));
    substitute(selector)
}

#[tokio::test]
async fn every_dashboard_query_runs_on_prometheus() {
    let Some((edge, prom)) = scraped_edge().await else {
        return;
    };
    let page = edge.traffic().await;
    let scraped = page_names(&page);
    // Two samples of every series at least, so that rate() has something to work on.
    let samples = "min(count_over_time(tlsedge_handshakes_total[1m]))";
    prom.wait_value(samples, |n| n >= 2.0).await;

    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/tlsedge.json")).unwrap();
    let selector = encode(&host_variable(&dashboard));
    let hosts = prom
        .api(&format!("/api/v1/label/host/values?match[]={selector}"))
        .await
        .expect("host label values");
    let want = serde_json::json!(["app.test", "shop.test"]);
    assert_eq!(hosts, want, "the $host variable");

    let mut all = Vec::new();
    exprs(&dashboard, false, &mut all);
    assert!(all.len() >= 40, "{} queries", all.len());
    let prom = &prom;
    for (expr, in_panel) in all {
        let promql = &substitute(&expr);
        let result = prom.query(promql).await;
        let result = result.unwrap_or_else(|e| panic!("{expr}: {e}"));
        // A panel over metrics this tlsedge has must show something (a stat says 0 rather
        // than "No data"); ACME and error metrics are absent here.
        let has_data = metric_words(&expr).iter().all(|m| scraped.contains(m));
        if in_panel && has_data && result.is_empty() {
            eventually(&format!("data for {expr}"), || async move {
                match prom.query(promql).await? {
                    r if r.is_empty() => Err("empty".to_owned()),
                    _ => Ok(()),
                }
            })
            .await;
        }
    }
}
