//! The `domain` label: configured domains, the first N others, and `other`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ec_types::{Config, Domain};
use metrics::{Label, SharedString};

/// The label value that every domain without a label of its own shares.
pub const OTHER_DOMAIN: &str = "other";

/// How many domains that no configuration names get a label of their own
/// when the caller does not choose (see [`DomainLabels`]).
pub const DEFAULT_DOMAIN_LABEL_LIMIT: usize = 100;

/// The `domain` label value of one destination domain, handed out by
/// [`DomainLabels`]. Cloning it is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DomainLabel(SharedString);

impl DomainLabel {
    /// Returns the label shared by every domain without one of its own.
    pub fn other() -> Self {
        Self(SharedString::const_str(OTHER_DOMAIN))
    }

    fn interned(domain: &Domain) -> Self {
        Self(SharedString::from_shared(Arc::from(domain.as_str())))
    }

    /// Returns the label value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns whether this is the shared `other` label.
    pub fn is_other(&self) -> bool {
        self.as_str() == OTHER_DOMAIN
    }

    pub(crate) fn to_label(&self) -> Label {
        Label::new("domain", self.0.clone())
    }
}

impl fmt::Display for DomainLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DomainLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainLabel({})", self.as_str())
    }
}

/// Hands out `domain` label values and keeps their number bounded.
///
/// The rule, in order:
///
/// 1. A domain that the configuration names (see
///    [`Config::configured_domains`]) always gets its own label.
/// 2. Any other domain gets its own label if it already has one, or if
///    fewer than `limit` such domains have been admitted so far. Domains
///    are admitted in the order of their first call to
///    [`label`](Self::label), which is the order of first traffic.
/// 3. Every other domain gets [`OTHER_DOMAIN`].
///
/// So a process exports at most `configured + limit + 1` domain values.
/// The rule is "first N seen", not a live top N. A counter's series cannot
/// move its count to another label value, and Prometheus would read a
/// series that disappears and comes back as a counter reset. So a domain
/// never loses a label once given. A domain that becomes busy after the
/// limit is reached stays in `other`; name it in the configuration to give
/// it a label. A domain literally named `other` shares the `other` label.
///
/// The registry is owned by one thread (the scheduler's) and takes
/// `&mut self`; the labels it returns are `Send + Sync` and can be handed
/// to sessions. Call [`label`](Self::label) once per domain record and keep
/// the result.
#[derive(Debug)]
pub struct DomainLabels {
    labels: HashMap<Domain, DomainLabel>,
    configured: usize,
    admitted: usize,
    limit: usize,
    limit_reported: bool,
}

impl DomainLabels {
    /// Creates a registry for these configured domains that admits at most
    /// `limit` others.
    pub fn new(configured: impl IntoIterator<Item = Domain>, limit: usize) -> Self {
        let labels: HashMap<Domain, DomainLabel> = configured
            .into_iter()
            .map(|domain| {
                let label = DomainLabel::interned(&domain);
                (domain, label)
            })
            .collect();
        Self {
            configured: labels.len(),
            labels,
            admitted: 0,
            limit,
            limit_reported: false,
        }
    }

    /// Creates a registry for the domains that `config` names that admits
    /// at most [`DEFAULT_DOMAIN_LABEL_LIMIT`] others.
    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config.configured_domains().cloned(),
            DEFAULT_DOMAIN_LABEL_LIMIT,
        )
    }

    /// The label for `domain`, admitting it if the rule allows (see the
    /// type's documentation).
    pub fn label(&mut self, domain: &Domain) -> DomainLabel {
        if let Some(label) = self.labels.get(domain) {
            return label.clone();
        }

        if self.admitted < self.limit {
            let label = DomainLabel::interned(domain);
            self.labels.insert(domain.clone(), label.clone());
            self.admitted += 1;
            tracing::debug!(%domain, admitted = self.admitted, limit = self.limit, "domain given its own metric label");
            return label;
        }

        if !self.limit_reported {
            self.limit_reported = true;
            tracing::warn!(
                %domain,
                limit = self.limit,
                "domain label limit reached: this and later unconfigured domains are counted under domain=\"other\"; \
                 name a domain in the configuration to give it its own label"
            );
        }
        DomainLabel::other()
    }

    /// How many domains the configuration names.
    pub fn configured(&self) -> usize {
        self.configured
    }

    /// How many unconfigured domains have been given a label of their own.
    pub fn admitted(&self) -> usize {
        self.admitted
    }

    /// The most unconfigured domains that get a label of their own.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use ec_types::{BindingScope, Settings};

    use super::*;

    fn domain(name: &str) -> Domain {
        Domain::new(name).expect("test domain names are valid")
    }

    #[test]
    fn first_n_admitted_then_other() {
        let mut labels = DomainLabels::new([], 2);

        assert_eq!(labels.label(&domain("a.example")).as_str(), "a.example");
        assert_eq!(labels.label(&domain("b.example")).as_str(), "b.example");
        assert!(labels.label(&domain("c.example")).is_other());
        assert!(labels.label(&domain("d.example")).is_other());
        assert_eq!(labels.admitted(), 2);
    }

    #[test]
    fn admitted_domain_keeps_label() {
        let mut labels = DomainLabels::new([], 1);

        let first = labels.label(&domain("a.example"));
        assert!(labels.label(&domain("b.example")).is_other());

        assert_eq!(labels.label(&domain("a.example")), first);
        assert_eq!(labels.label(&domain("A.Example.")), first);
        assert!(labels.label(&domain("b.example")).is_other());
    }

    #[test]
    fn configured_domains_beyond_limit() {
        let mut labels = DomainLabels::new([domain("big.example"), domain("bank.example")], 1);

        assert_eq!(labels.label(&domain("x.example")).as_str(), "x.example");
        assert!(labels.label(&domain("y.example")).is_other());
        assert_eq!(labels.label(&domain("big.example")).as_str(), "big.example");
        assert_eq!(
            labels.label(&domain("bank.example")).as_str(),
            "bank.example"
        );
        assert_eq!(labels.configured(), 2);
        assert_eq!(labels.admitted(), 1);
    }

    #[test]
    fn zero_limit_folds_everything_unconfigured() {
        let mut labels = DomainLabels::new([domain("big.example")], 0);

        assert!(labels.label(&domain("x.example")).is_other());
        assert_eq!(labels.label(&domain("big.example")).as_str(), "big.example");
    }

    #[test]
    fn distinct_values_bounded() {
        let configured = [domain("c1.example"), domain("c2.example")];
        let mut labels = DomainLabels::new(configured.clone(), 10);

        let mut values = HashSet::new();
        for i in 0..500 {
            values.insert(labels.label(&domain(&format!("d{i}.example"))));
        }
        for domain in &configured {
            values.insert(labels.label(domain));
        }

        assert_eq!(values.len(), 2 + 10 + 1);
        assert!(values.contains(&DomainLabel::other()));
    }

    #[test]
    fn from_config_uses_configured_domains() {
        let mut config = Config::default();
        config
            .domain
            .insert(domain("big.example"), Settings::default());
        let mut scope = BindingScope::default();
        scope
            .domain
            .insert(domain("partner.example"), Settings::default());
        config.binding.insert("outbound-1".to_owned(), scope);

        let mut labels = DomainLabels::from_config(&config);

        assert_eq!(labels.configured(), 2);
        assert_eq!(labels.limit(), DEFAULT_DOMAIN_LABEL_LIMIT);
        assert_eq!(
            labels.label(&domain("partner.example")).as_str(),
            "partner.example"
        );
        assert_eq!(labels.admitted(), 0);
    }
}
