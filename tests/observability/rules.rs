//! The alerting rules: promtool checks them and runs their unit tests.

use super::*;

#[test]
fn alert_rules_pass_promtool_and_every_alert_has_a_firing_test() {
    for rule in alert_rules() {
        let name = rule["alert"].as_str().expect("alert name");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty(), "{name}: no summary");
        let description = rule["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.contains("{{ $labels.instance }}"),
            "{name}: the description names no instance"
        );
    }
    // promtool compares the whole list of alerts at each evaluation, so a firing case also
    // proves the series beside it that must not fire.
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let firing: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().expect("cases").iter())
        .filter(|case| {
            case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
        })
        .map(|case| case["alertname"].as_str().expect("alertname").to_owned())
        .collect();
    let untested: Vec<_> = alert_names().difference(&firing).cloned().collect();
    assert!(untested.is_empty(), "no firing test for {untested:?}");

    if !tool("promtool") {
        return;
    }
    let checked = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], "");
    assert!(checked.contains("SUCCESS"), "{checked}");
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"], "");
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"], "");
}
