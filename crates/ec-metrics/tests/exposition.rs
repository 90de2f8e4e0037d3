//! The rendered exposition text against the catalog, the bounded domain
//! label, and the live-connection gauge, each in its own local recorder.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use common::{record_every_metric, Exposition, Sample};
use ec_metrics::catalog::{self, LabelValues, MetricDef, MetricKind};
use ec_metrics::{BindingLabels, DomainLabels, LocalRecorder};
use ec_types::{CloseOutcome, CloseReason, Domain, MessageFate};

fn domain(name: &str) -> Domain {
    Domain::new(name).expect("test domain names are valid")
}

/// Returns the samples that belong to `def`, which for a histogram are its
/// `_bucket`, `_sum` and `_count` series.
fn samples_of<'a>(exposition: &'a Exposition, def: &'a MetricDef) -> Vec<&'a Sample> {
    let names: Vec<String> = match def.kind {
        MetricKind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{}{suffix}", def.name))
            .collect(),
        _ => vec![def.name.to_owned()],
    };
    exposition
        .samples
        .iter()
        .filter(|sample| names.contains(&sample.name))
        .collect()
}

#[test]
fn exposition_matches_catalog() {
    let recorder = LocalRecorder::new();
    let bindings = BindingLabels::new(["default"]);
    let binding = bindings.get("default").expect("configured");
    let domain_label = DomainLabels::new([domain("example.com")], 0).label(&domain("example.com"));
    recorder.scope(|| record_every_metric(&binding, &domain_label));

    let exposition = Exposition::parse(&recorder.render());

    for def in catalog::ALL {
        assert_eq!(
            exposition.help.get(def.name).map(String::as_str),
            Some(def.help),
            "HELP of {}",
            def.name
        );
        assert_eq!(
            exposition.types.get(def.name).map(String::as_str),
            Some(def.kind.as_str()),
            "TYPE of {}",
            def.name
        );

        let samples = samples_of(&exposition, def);
        assert!(!samples.is_empty(), "no samples of {}", def.name);

        let expected_names: BTreeSet<&str> = def.labels.iter().map(|label| label.name).collect();
        for sample in &samples {
            let mut names: BTreeSet<&str> = sample.labels.keys().map(String::as_str).collect();
            if sample.name.ends_with("_bucket") {
                assert!(names.remove("le"), "bucket without le: {sample:?}");
            }
            assert_eq!(names, expected_names, "label names of {sample:?}");
        }

        for label in def.labels {
            let seen: HashSet<&str> = samples
                .iter()
                .map(|sample| sample.labels[label.name].as_str())
                .collect();
            match label.values {
                LabelValues::Fixed(values) => {
                    let declared: HashSet<&str> = values().into_iter().collect();
                    assert_eq!(seen, declared, "values of {} on {}", label.name, def.name);
                }
                LabelValues::Binding => assert_eq!(seen, HashSet::from(["default"])),
                LabelValues::Domain => assert_eq!(seen, HashSet::from(["example.com"])),
                _ => panic!("label kind without a check: {:?}", label.values),
            }
        }
    }

    let cataloged: HashSet<&str> = catalog::ALL.iter().map(|def| def.name).collect();
    for name in exposition.types.keys() {
        assert!(
            cataloged.contains(name.as_str()),
            "{name} is not in the catalog"
        );
    }
}

#[test]
fn histograms_use_catalog_buckets() {
    let recorder = LocalRecorder::new();
    let binding = BindingLabels::new(["default"])
        .get("default")
        .expect("configured");
    let domain_label = DomainLabels::new([], 1).label(&domain("example.com"));
    recorder.scope(|| {
        ec_metrics::scheduler_loop_lag(Duration::from_micros(3));
        ec_metrics::connection_opened(&binding, &domain_label);
        ec_metrics::connection_closed(
            &binding,
            &domain_label,
            CloseReason::MaxAge,
            CloseOutcome::Clean,
            Duration::from_secs(5400),
        );
    });

    let exposition = Exposition::parse(&recorder.render());

    for def in [&catalog::SCHEDULER_LOOP_LAG, &catalog::CONNECTION_DURATION] {
        let bucket_name = format!("{}_bucket", def.name);
        let bounds: Vec<f64> = exposition
            .named(&bucket_name)
            .map(|sample| sample.labels["le"].parse::<f64>().expect("numeric le"))
            .filter(|bound| bound.is_finite())
            .collect();
        let mut sorted = bounds.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sorted, def.buckets, "buckets of {}", def.name);
    }

    // 3 µs lies between the 1 µs and 10 µs bounds.
    assert_eq!(
        exposition.value(
            "ec_scheduler_loop_lag_seconds_bucket",
            &[("le", "0.000001")]
        ),
        0.0
    );
    assert_eq!(
        exposition.value("ec_scheduler_loop_lag_seconds_bucket", &[("le", "0.00001")]),
        1.0
    );
    // 90 minutes falls between the 1 h and 2 h bounds.
    assert_eq!(
        exposition.value("ec_connection_duration_seconds_bucket", &[("le", "3600")]),
        0.0
    );
    assert_eq!(
        exposition.value("ec_connection_duration_seconds_bucket", &[("le", "7200")]),
        1.0
    );
}

#[test]
fn domain_series_bounded_by_limit() {
    let recorder = LocalRecorder::new();
    let binding = BindingLabels::new(["default"])
        .get("default")
        .expect("configured");
    let configured = [domain("big.example"), domain("bank.example")];
    let mut domains = DomainLabels::new(configured.clone(), 100);

    recorder.scope(|| {
        for i in 0..250 {
            let label = domains.label(&domain(&format!("d{i}.example")));
            ec_metrics::message_fate(&binding, &label, MessageFate::Delivered);
        }
        for configured_domain in &configured {
            let label = domains.label(configured_domain);
            ec_metrics::message_fate(&binding, &label, MessageFate::Delivered);
        }
    });

    let exposition = Exposition::parse(&recorder.render());
    let series: Vec<&Sample> = exposition.named("ec_message_fates_total").collect();
    let values: HashSet<&str> = series
        .iter()
        .map(|sample| sample.labels["domain"].as_str())
        .collect();

    assert_eq!(series.len(), 2 + 100 + 1, "one series per domain label");
    assert_eq!(values.len(), series.len());
    assert!(values.contains("other"));
    assert!(values.contains("big.example"));
    assert!(values.contains("bank.example"));
    assert!(
        values.contains("d99.example"),
        "the 100th domain seen is admitted"
    );
    assert!(
        !values.contains("d100.example"),
        "the 101st domain seen folds"
    );
    assert_eq!(
        exposition.value("ec_message_fates_total", &[("domain", "other")]),
        150.0
    );
    let total: f64 = series.iter().map(|sample| sample.value).sum();
    assert_eq!(total, 252.0, "no count is lost by folding");
}

#[test]
fn live_gauge_tracks_opened_minus_closed() {
    let recorder = LocalRecorder::new();
    let bindings = BindingLabels::new(["default", "outbound-1"]);
    let mut domains = DomainLabels::new([], 10);
    let pairs = [
        (bindings.get("default"), domains.label(&domain("a.example"))),
        (bindings.get("default"), domains.label(&domain("b.example"))),
        (
            bindings.get("outbound-1"),
            domains.label(&domain("a.example")),
        ),
    ];
    let pairs: Vec<_> = pairs
        .into_iter()
        .map(|(binding, domain)| (binding.expect("configured"), domain))
        .collect();

    let check = |expected_live: [f64; 3]| {
        let exposition = Exposition::parse(&recorder.render());
        for ((binding, domain), expected) in pairs.iter().zip(expected_live) {
            let labels = [("binding", binding.as_str()), ("domain", domain.as_str())];
            let opened = exposition.value("ec_connections_opened_total", &labels);
            let closed: f64 = exposition
                .named("ec_connections_closed_total")
                .filter(|s| {
                    s.labels["binding"] == binding.as_str() && s.labels["domain"] == domain.as_str()
                })
                .map(|s| s.value)
                .sum();
            let live = exposition.value("ec_connections_live", &labels);
            assert_eq!(live, expected, "live gauge of {labels:?}");
            assert_eq!(opened - closed, live, "opened - closed of {labels:?}");
        }
    };

    recorder.scope(|| {
        for (binding, domain) in &pairs {
            for _ in 0..3 {
                ec_metrics::connection_opened(binding, domain);
            }
        }
    });
    check([3.0, 3.0, 3.0]);

    recorder.scope(|| {
        let (binding, domain) = &pairs[0];
        ec_metrics::connection_closed(
            binding,
            domain,
            CloseReason::PeerClosed,
            CloseOutcome::Reset,
            Duration::from_millis(20),
        );
    });
    check([2.0, 3.0, 3.0]);

    recorder.scope(|| {
        for ((binding, domain), still_live) in pairs.iter().zip([2, 3, 3]) {
            for _ in 0..still_live {
                ec_metrics::connection_closed(
                    binding,
                    domain,
                    CloseReason::IdleTimeout,
                    CloseOutcome::Clean,
                    Duration::from_secs(30),
                );
            }
        }
    });
    check([0.0, 0.0, 0.0]);
}
