//! Reading a configuration file: read → parse YAML → validate.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;

use super::files::FileCache;
use super::model::RawConfig;
use super::problem::{Problem, Problems};
use super::validate::{Checked, Config, Reuse, validate};

/// Why a configuration could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for the model (syntax, unknown or missing fields).
    #[error("error: {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde_norway's error, with the field path and line.
        #[source]
        source: serde_norway::Error,
    },
    /// Validation found errors.
    #[error(transparent)]
    Invalid(#[from] Problems),
}

/// A parsed and validated configuration with the problems that did not prevent using it.
#[derive(Debug)]
pub struct Loaded {
    /// The raw model, kept to list watched files.
    pub raw: RawConfig,
    /// The typed config. Hosts whose files failed have `certs: None`.
    pub config: Config,
    /// Warnings, and errors scoped to single hosts' files.
    pub problems: Vec<Problem>,
    /// A hash of the configuration text, for the reloader's change check.
    pub text_hash: u64,
    /// Which hosts were clean, for the next load's [`Reuse`].
    pub checked: Checked,
}

impl Loaded {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    /// Every file the configuration references, for the reload watcher.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        super::validate::referenced_files(&self.raw, &self.config.source)
    }

    /// Fails with all problems if any is an error: what `check` and start-up require.
    pub fn strict(self) -> Result<Self, LoadError> {
        if self.has_errors() {
            return Err(Problems(self.problems).into());
        }
        Ok(self)
    }
}

/// Reads, parses and validates `path`. Errors in the file itself fail the load; errors in one
/// host's certificate files are returned inside [`Loaded::problems`] so a reload can keep the
/// host's previous certificate.
pub fn load(path: &Path, provider: &CryptoProvider) -> Result<Loaded, LoadError> {
    load_with(path, provider, &mut FileCache::default())
}

/// [`load`], reading through `cache` (one pass: the caller begins and ends it).
pub fn load_with(
    path: &Path,
    provider: &CryptoProvider,
    cache: &mut FileCache,
) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    finish(parse(&text, path)?, &text, path, provider, cache, None)
}

/// Parses and validates YAML text as if read from `path` (relative files resolve against its
/// directory).
pub fn from_str(text: &str, path: &Path, provider: &CryptoProvider) -> Result<Loaded, LoadError> {
    finish(
        parse(text, path)?,
        text,
        path,
        provider,
        &mut FileCache::default(),
        None,
    )
}

/// Parses YAML text into the raw model (no file is read).
///
/// A document written as JSON (which is YAML too, and what generators of large configurations
/// write) is tried with serde_json first: 100,000 hosts parse in 0.25–0.37 s instead of
/// 1.8–2.5 s (benches/README.md). Whatever serde_json refuses is parsed as YAML, so a JSON
/// document that loads means the same as it would as YAML, and every error is the YAML parser's.
pub fn parse(text: &str, path: &Path) -> Result<RawConfig, LoadError> {
    if text.trim_start().starts_with('{')
        && let Ok(raw) = serde_json::from_str(text)
    {
        return Ok(raw);
    }
    serde_norway::from_str(text).map_err(|source| LoadError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Validates `raw`, parsed from `text` read from `path`, loading every file it references
/// through `cache` and taking the hosts `reuse` offers.
pub fn finish(
    raw: RawConfig,
    text: &str,
    path: &Path,
    provider: &CryptoProvider,
    cache: &mut FileCache,
    reuse: Option<&Reuse>,
) -> Result<Loaded, LoadError> {
    let (config, problems, checked) =
        validate(&raw, path, provider, cache, SystemTime::now(), reuse);
    let (fatal, problems): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|p| p.is_error() && p.scope == super::problem::Scope::Config);
    if !fatal.is_empty() {
        let mut all = fatal;
        all.extend(problems);
        return Err(Problems(all).into());
    }
    Ok(Loaded {
        raw,
        config,
        problems,
        text_hash: text_hash(text),
        checked,
    })
}

/// The hash [`Loaded::text_hash`] holds.
pub fn text_hash(text: &str) -> u64 {
    crate::tls::certs::fingerprint(&[text.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The YAML crate's messages are part of tlsedge's interface: an operator reads them to find
    /// the mistake. Each must name the file, the field's path, and the line and column.
    #[test]
    fn parse_errors_name_the_file_the_field_and_the_place() {
        let path = Path::new("/etc/tlsedge/tlsedge.yaml");
        let cases = [
            (
                "listeners: [\"127.0.0.1:443\"]\nhosts:\n  - names: [a.example]\n    certs: []\n    bakends: []\n",
                &[
                    "/etc/tlsedge/tlsedge.yaml",
                    "hosts[0]",
                    "unknown field `bakends`",
                    "line 5 column 5",
                ][..],
            ),
            (
                "listeners: [\"127.0.0.1:443\"]\nlimits: { max_connections: lots }\nhosts: []\n",
                &[
                    "limits.max_connections",
                    "invalid type: string \"lots\"",
                    "line 2 column 28",
                ],
            ),
            (
                "listeners: [\"127.0.0.1:443\"]\ntimeouts: { idle: 5 parsecs }\nhosts: []\n",
                &["timeouts.idle", "line 2 column 19"],
            ),
            (
                "listeners: [\"127.0.0.1:443\"]\nhosts: [ { names: [a.example] }\n",
                &["line 2", "column"],
            ),
        ];
        assert_parse_errors(path, &cases);
    }

    /// Each text fails to parse as if read from `path`, with every wanted piece in the message.
    fn assert_parse_errors(path: &Path, cases: &[(&str, &[&str])]) {
        for (text, wanted) in cases {
            let error = parse(text, path).expect_err(text);
            let message = error.to_string();
            for want in *wanted {
                assert!(message.contains(want), "{want:?} missing from: {message}");
            }
        }
    }

    /// The example configuration written as JSON parses through serde_json to the same model
    /// as its YAML.
    #[test]
    fn a_json_document_means_what_its_yaml_means() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tlsedge.yaml"));
        let yaml = std::fs::read_to_string(path).expect("config/tlsedge.yaml");
        let value: serde_norway::Value = serde_norway::from_str(&yaml).expect("yaml");
        let json = serde_json::to_string_pretty(&value).expect("json");
        assert!(
            serde_json::from_str::<RawConfig>(&json).is_ok(),
            "the JSON form must take the serde_json path"
        );
        let from_yaml = parse(&yaml, path).expect("yaml parses");
        let from_json = parse(&format!("\n  {json}"), path).expect("json parses");
        assert_eq!(format!("{from_yaml:?}"), format!("{from_json:?}"));
    }

    /// A mistake in a JSON document is reported by the YAML parser, with the field's path and
    /// its line, like any other.
    #[test]
    fn a_mistake_in_a_json_document_gets_the_yaml_message() {
        let path = Path::new("/etc/tlsedge/tlsedge.json");
        let cases = [
            (
                "{\"listeners\": [\"127.0.0.1:443\"],\n \"hosts\": [{\"names\": [\"a.example\"], \"certs\": [],\n  \"bakends\": []}]}",
                &[
                    "/etc/tlsedge/tlsedge.json",
                    "hosts[0]",
                    "unknown field `bakends`",
                    "line 3",
                ][..],
            ),
            (
                "{\"listeners\": [\"127.0.0.1:443\"], \"limits\": {\"max_connections\": -1}, \"hosts\": []}",
                &["limits.max_connections", "line 1"],
            ),
            (
                "{\"listeners\": [\"127.0.0.1:443\"], \"hosts\": [",
                &["line", "column"],
            ),
        ];
        assert_parse_errors(path, &cases);
    }
}
