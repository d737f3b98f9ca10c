//! Party kinds: what can serve a party name. The built-in kinds (relay, chat, presence,
//! counter, yjs) and those a server binary of your own adds (`Conclave::party`); the TOML
//! file's `[parties.NAME] kind = "…"` maps names to them.

use conclave_node::{Party, PartyFactory, PartyRegistry};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The built-in parties served by default, by name: `main` is the relay.
const DEFAULT_PARTIES: [(&str, &str); 5] = [
    ("main", "relay"),
    ("chat", "chat"),
    ("presence", "presence"),
    ("counter", "counter"),
    ("yjs", "yjs"),
];

/// Every party kind a binary can serve.
#[derive(Clone)]
pub struct PartyKinds {
    kinds: BTreeMap<String, Arc<dyn PartyFactory>>,
    /// Kinds the binary added; each is also served under its own name by default.
    added: Vec<String>,
}

impl Default for PartyKinds {
    fn default() -> Self {
        Self::builtin()
    }
}

impl std::fmt::Debug for PartyKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl PartyKinds {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let kinds = conclave_node::parties::BUILTIN_KINDS
            .iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    Arc::from(conclave_node::parties::builtin(k)?),
                ))
            })
            .collect();
        Self {
            kinds,
            added: Vec::new(),
        }
    }

    /// Adds the kind `kind`, served by `P::default()` instances.
    pub fn with<P: Party + Default>(self, kind: &str) -> Self {
        self.with_factory(kind, || Box::new(P::default()) as Box<dyn Party>)
    }

    /// Adds the kind `kind`, served by `factory` (for `before_connect`, or configured
    /// instances).
    pub fn with_factory(mut self, kind: &str, factory: impl PartyFactory) -> Self {
        self.kinds.insert(kind.to_string(), Arc::new(factory));
        if !self.added.iter().any(|k| k == kind) {
            self.added.push(kind.to_string());
        }
        self
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The kinds' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// The parties served without a TOML file, as (name, kind): `main` = relay, `chat`,
    /// `presence`, `counter`, and each added kind under its own name.
    pub fn default_parties(&self) -> Vec<(String, String)> {
        let added = self.added.iter().map(|k| (k.as_str(), k.as_str()));
        DEFAULT_PARTIES
            .into_iter()
            .chain(added)
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect()
    }

    /// A registry serving each (name, kind) with its kind (unknown kinds are left out;
    /// `FileConfig::parties` refuses them first).
    pub fn registry<'a>(
        &self,
        parties: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> PartyRegistry {
        parties
            .into_iter()
            .fold(PartyRegistry::new(), |reg, (name, kind)| {
                match self.kinds.get(kind) {
                    Some(factory) => reg.with_shared_factory(name, factory.clone()),
                    None => reg,
                }
            })
    }
}
