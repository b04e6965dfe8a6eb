//! Host names: normalisation, RFC 6125 wildcard matching, and the O(1) SNI → host index.
//!
//! A configured name is either exact (`shop.example.com`) or a wildcard (`*.example.com`). The
//! index keeps one map for each; a lookup is one exact probe, then one probe of the SNI's parent
//! domain in the wildcard map, so its cost does not grow with the number of hosts.

use foldhash::{HashMap, HashMapExt};

/// Lowercases a name and drops one trailing dot. `None` when the result is not a plausible DNS
/// name (empty, too long, empty labels, or bytes outside `[a-z0-9-_*.]`).
pub fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let valid = lower.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
    });
    valid.then_some(lower)
}

/// A configured host name after validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostName {
    /// Matches exactly this name.
    Exact(String),
    /// `*.parent`: matches one label followed by `parent`.
    Wildcard {
        /// The domain below the `*.`.
        parent: String,
    },
}

impl HostName {
    /// Parses a configured name; `None` if it is not a valid exact or `*.` wildcard name.
    pub fn parse(name: &str) -> Option<Self> {
        let name = normalize(name)?;
        match name.strip_prefix("*.") {
            Some(parent) if !parent.contains('*') && parent.contains('.') => Some(Self::Wildcard {
                parent: parent.to_owned(),
            }),
            Some(_) => None,
            None if name.contains('*') => None,
            None => Some(Self::Exact(name)),
        }
    }

    /// Whether a certificate carrying `cert_names` is valid for this configured name.
    pub fn covered_by(&self, cert_names: &[String]) -> bool {
        match self {
            Self::Exact(name) => cert_names.iter().any(|c| cert_name_matches(c, name)),
            Self::Wildcard { parent } => cert_names
                .iter()
                .any(|c| c.strip_prefix("*.") == Some(parent.as_str())),
        }
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard { parent } => write!(f, "*.{parent}"),
        }
    }
}

/// RFC 6125 matching of one certificate name against one exact host name: a `*.` wildcard
/// covers exactly one leftmost label.
pub fn cert_name_matches(cert_name: &str, host: &str) -> bool {
    let cert_name = cert_name.strip_suffix('.').unwrap_or(cert_name);
    match cert_name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => cert_name.eq_ignore_ascii_case(host),
    }
}

/// SNI → host index lookup table.
#[derive(Debug, Default)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl NameIndex {
    /// An empty index with room for `exact` exact names (each host usually has one), so
    /// 100,000 hosts fill it without growing it step by step.
    pub fn with_capacity(exact: usize) -> Self {
        Self {
            exact: HashMap::with_capacity(exact),
            wildcard: HashMap::new(),
        }
    }

    /// Registers `name` for host `host`. Returns the host already holding that name, if any.
    pub fn insert(&mut self, name: &HostName, host: usize) -> Option<usize> {
        let (map, key) = match name {
            HostName::Exact(n) => (&mut self.exact, n),
            HostName::Wildcard { parent } => (&mut self.wildcard, parent),
        };
        match map.get(key) {
            Some(&other) if other != host => Some(other),
            Some(_) => None,
            None => {
                map.insert(key.clone(), host);
                None
            }
        }
    }

    /// Finds the host serving a client's SNI: exact names first, then `*.parent` wildcards.
    /// The SNI is matched case-insensitively and a trailing dot is ignored.
    pub fn lookup(&self, sni: &str) -> Option<usize> {
        let sni = sni.strip_suffix('.').unwrap_or(sni);
        // rustls already lowercases SNI; this copy is only made for clients it did not.
        let owned;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            owned = sni.to_ascii_lowercase();
            owned.as_str()
        } else {
            sni
        };
        if let Some(&host) = self.exact.get(sni) {
            return Some(host);
        }
        let (label, parent) = sni.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(parent).copied()
    }

    /// Number of names registered.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no name is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_and_wildcard_names() {
        assert_eq!(
            HostName::parse("Shop.Example.COM."),
            Some(HostName::Exact("shop.example.com".into()))
        );
        assert_eq!(
            HostName::parse("*.example.com"),
            Some(HostName::Wildcard {
                parent: "example.com".into()
            })
        );
        assert_eq!(HostName::parse("a.*.example.com"), None);
        assert_eq!(HostName::parse("*.com"), None);
        assert_eq!(HostName::parse(""), None);
        assert_eq!(HostName::parse("bad..name"), None);
        assert_eq!(HostName::parse("sp ace.com"), None);
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        assert!(cert_name_matches("*.example.com", "a.example.com"));
        assert!(!cert_name_matches("*.example.com", "a.b.example.com"));
        assert!(!cert_name_matches("*.example.com", "example.com"));
        assert!(cert_name_matches("example.com", "EXAMPLE.com"));
    }

    #[test]
    fn configured_names_are_checked_against_certificate_names() {
        let cert = vec!["*.example.com".to_owned(), "example.com".to_owned()];
        assert!(HostName::parse("a.example.com").unwrap().covered_by(&cert));
        assert!(HostName::parse("example.com").unwrap().covered_by(&cert));
        assert!(HostName::parse("*.example.com").unwrap().covered_by(&cert));
        assert!(
            !HostName::parse("a.b.example.com")
                .unwrap()
                .covered_by(&cert)
        );
        assert!(!HostName::parse("*.other.com").unwrap().covered_by(&cert));
    }

    #[test]
    fn lookup_prefers_exact_then_wildcard() {
        let mut index = NameIndex::default();
        assert_eq!(
            index.insert(&HostName::parse("*.example.com").unwrap(), 0),
            None
        );
        assert_eq!(
            index.insert(&HostName::parse("shop.example.com").unwrap(), 1),
            None
        );
        assert_eq!(
            index.insert(&HostName::parse("shop.example.com").unwrap(), 2),
            Some(1)
        );
        assert_eq!(index.lookup("shop.example.com"), Some(1));
        assert_eq!(index.lookup("SHOP.example.com."), Some(1));
        assert_eq!(index.lookup("a.example.com"), Some(0));
        assert_eq!(index.lookup("a.b.example.com"), None);
        assert_eq!(index.lookup("example.com"), None);
        assert_eq!(index.lookup(".example.com"), None);
    }
}
