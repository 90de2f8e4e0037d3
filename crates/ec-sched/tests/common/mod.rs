//! Reading the Prometheus exposition text in the metrics tests.

// Each test binary compiles this module and may use only part of it.
#![allow(dead_code)]

/// Sums the samples of `name` whose labels include every pair of
/// `labels`. The exposition writes label values without quotes or commas
/// in these tests, so a plain split reads them.
pub(crate) fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let matches = labels.iter().all(|(key, wanted)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{key}=\"{wanted}\""))
            });
            matches.then(|| value.parse::<f64>().expect("a numeric sample"))
        })
        .sum()
}

/// Returns the distinct values of `label` among the samples of `name`.
pub(crate) fn label_values(text: &str, name: &str, label: &str) -> Vec<String> {
    let prefix = format!("{label}=\"");
    let mut values: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| {
            let start = line.find(&prefix)? + prefix.len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .collect();
    values.sort();
    values.dedup();
    values
}
