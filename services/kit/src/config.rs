//! Typed configuration: defaults, then an optional TOML file, then `FLEET_`
//! environment variables (`__` separates nesting levels). The environment is
//! passed in as pairs, so tests hand over a map and never touch the process.

use std::path::Path;

use figment::{
    Error, Figment, Metadata, Profile, Provider,
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use serde::{Serialize, de::DeserializeOwned};

/// The prefix of Fleet's own environment variables.
pub const ENV_PREFIX: &str = "FLEET_";

/// Unprefixed variables that operators set by convention, and the config key
/// each one fills. A `FLEET_` variable for the same key wins.
pub const STANDARD_VARS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("AMQP_URL", "amqp_url"),
];

/// Loads `T` from its defaults, then `file` (TOML) if given, then `env`.
pub fn load<T>(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<T, Box<Error>>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(Box::new(Error::from(format!(
                "configuration file {} does not exist",
                path.display()
            ))));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment.merge(EnvVars::new(env)).extract().map_err(Box::new)
}

/// A figment provider over a given set of environment variables.
#[derive(Debug, Clone)]
pub struct EnvVars {
    vars: Vec<(String, String)>,
}

impl EnvVars {
    /// Keeps the `FLEET_` variables and the standard ones of [`STANDARD_VARS`].
    pub fn new(env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut standard = Vec::new();
        let mut prefixed = Vec::new();
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                if !rest.is_empty() {
                    prefixed.push((rest.to_ascii_lowercase().replace("__", "."), value));
                }
            } else if let Some((_, key)) = STANDARD_VARS.iter().find(|(var, _)| *var == name) {
                standard.push(((*key).to_string(), value));
            }
        }
        // Standard names first, so the FLEET_ spelling overrides them.
        standard.extend(prefixed);
        Self { vars: standard }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        for (key, raw) in &self.vars {
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
            // A key of only separators nests nothing; skip it rather than fail.
            let Some(nested) = figment::util::nest(key, value).into_dict() else {
                continue;
            };
            dict = merge_dicts(dict, nested);
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (key, value) in from {
        let merged = match (into.remove(&key), value) {
            (Some(Value::Dict(_, a)), Value::Dict(tag, b)) => Value::Dict(tag, merge_dicts(a, b)),
            (_, value) => value,
        };
        into.insert(key, merged);
    }
    into
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde::Deserialize;

    use super::*;
    use crate::secret::Secret;

    #[derive(Debug, Serialize, Deserialize, Default, PartialEq)]
    #[serde(default)]
    struct Inner {
        port: u16,
        name: String,
    }

    #[derive(Debug, Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Sample {
        database_url: Option<Secret>,
        inner: Inner,
        flag: bool,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "flag = true\n[inner]\nport = 1\nname = \"file\"").unwrap();
        let cfg: Sample = load(Some(file.path()), vars(&[("FLEET_INNER__PORT", "2")])).unwrap();
        assert_eq!(
            cfg.inner,
            Inner {
                port: 2,
                name: "file".into()
            }
        );
        assert!(cfg.flag);
    }

    #[test]
    fn standard_database_url_is_read_and_fleet_spelling_wins() {
        let cfg: Sample = load(None, vars(&[("DATABASE_URL", "postgres://a")])).unwrap();
        assert_eq!(cfg.database_url.unwrap().expose(), "postgres://a");
        let cfg: Sample = load(
            None,
            vars(&[("FLEET_DATABASE_URL", "postgres://b"), ("DATABASE_URL", "postgres://a")]),
        )
        .unwrap();
        assert_eq!(cfg.database_url.unwrap().expose(), "postgres://b");
    }

    #[test]
    fn unrelated_variables_are_ignored_and_bad_values_are_reported() {
        let cfg: Sample = load(None, vars(&[("PATH", "/bin"), ("FLEET_", "x")])).unwrap();
        assert_eq!(cfg.inner.port, 0);
        let err = load::<Sample>(None, vars(&[("FLEET_INNER__PORT", "not-a-port")])).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/fleet.toml")), vars(&[])).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
