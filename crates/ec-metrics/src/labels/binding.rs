//! The `binding` label: one value per configured binding.

use std::fmt;
use std::sync::Arc;

use ec_types::{Binding, Config};
use metrics::{Label, SharedString};

/// The `binding` label value of one binding, handed out by
/// [`BindingLabels`]. Cloning it is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BindingLabel(SharedString);

impl BindingLabel {
    /// Returns the label value, which is the binding's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn to_label(&self) -> Label {
        Label::new("binding", self.0.clone())
    }
}

impl fmt::Display for BindingLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for BindingLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BindingLabel({})", self.as_str())
    }
}

/// The `binding` labels of the configured bindings and of those the
/// program registers, and no others, so the number of binding values is
/// the number of bindings.
///
/// Build it once when the engine starts, look each binding up once, and
/// keep the returned [`BindingLabel`] with the binding's slot.
#[derive(Debug, Clone)]
pub struct BindingLabels {
    labels: Vec<BindingLabel>,
}

impl BindingLabels {
    /// Creates labels for these binding names. A repeated name gets one
    /// label.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut labels: Vec<BindingLabel> = Vec::new();
        for name in names {
            let name = name.as_ref();
            if labels.iter().all(|label| label.as_str() != name) {
                labels.push(BindingLabel(SharedString::from_shared(Arc::from(name))));
            }
        }
        Self { labels }
    }

    /// Creates labels for the `default` binding, which every engine has,
    /// and the bindings that `config` names.
    pub fn from_config(config: &Config) -> Self {
        let configured = config.binding.keys().map(String::as_str);
        Self::new(std::iter::once(Binding::DEFAULT_NAME).chain(configured))
    }

    /// Returns the label of the binding named `name`, adding one if the
    /// name is new.
    ///
    /// For bindings that a program registers at run time (the scheduler's
    /// `register_binding`) rather than names in the configuration. The
    /// values stay bounded because bindings come from the program, never
    /// from traffic.
    pub fn register(&mut self, name: &str) -> BindingLabel {
        if let Some(label) = self.get(name) {
            return label;
        }
        let label = BindingLabel(SharedString::from_shared(Arc::from(name)));
        self.labels.push(label.clone());
        label
    }

    /// Returns the label of the binding named `name`, or `None` when no
    /// such binding was configured or registered.
    pub fn get(&self, name: &str) -> Option<BindingLabel> {
        self.labels
            .iter()
            .find(|label| label.as_str() == name)
            .cloned()
    }

    /// Returns every label, in the order the names were given.
    pub fn iter(&self) -> impl Iterator<Item = &BindingLabel> {
        self.labels.iter()
    }

    /// Returns the number of bindings.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns whether no binding was given.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use ec_types::BindingScope;

    use super::*;

    #[test]
    fn only_configured_bindings() {
        let labels = BindingLabels::new(["default", "outbound-1", "default"]);

        assert_eq!(labels.len(), 2);
        assert_eq!(
            labels.get("outbound-1").map(|l| l.as_str().to_owned()),
            Some("outbound-1".to_owned())
        );
        assert!(labels.get("outbound-2").is_none());
    }

    #[test]
    fn register_adds_once() {
        let mut labels = BindingLabels::new(["default"]);

        let added = labels.register("outbound-1");
        let again = labels.register("outbound-1");
        let default = labels.register("default");

        assert_eq!(added, again);
        assert_eq!(added.as_str(), "outbound-1");
        assert_eq!(default.as_str(), "default");
        assert_eq!(labels.len(), 2);
    }

    #[test]
    fn from_config_includes_default() {
        let mut config = Config::default();
        config
            .binding
            .insert("outbound-1".to_owned(), BindingScope::default());
        config
            .binding
            .insert(Binding::DEFAULT_NAME.to_owned(), BindingScope::default());

        let labels = BindingLabels::from_config(&config);

        let names: Vec<&str> = labels.iter().map(BindingLabel::as_str).collect();
        assert_eq!(names, ["default", "outbound-1"]);
    }
}
