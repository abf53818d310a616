//! Service settings from a config file under flags and environment.
//!
//! Every dbsync service takes `--config <file>` (or `DBSYNC_CONFIG`): a TOML or YAML file
//! whose keys are the service's long flag names (`lease-seconds` or `lease_seconds`; a nested
//! table joins its keys with `-`, so `[metrics] listen = …` sets `--metrics-listen`). A file
//! value becomes the flag's default, so the precedence is: flag, then environment variable,
//! then file, then built-in default. Unknown keys are errors naming the key and the known
//! ones, so a typo never goes unnoticed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, Parser};

/// The flag (and its environment variable) naming the config file.
pub const CONFIG_FLAG: &str = "config";
pub const CONFIG_ENV: &str = "DBSYNC_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid {format}: {detail}")]
    Syntax {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    #[error("config file {path}: unknown setting `{key}`; known settings: {known}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error(
        "config file {path}: setting `{key}` must be a string, number, boolean or a list of them"
    )]
    BadValue { path: PathBuf, key: String },
    #[error(transparent)]
    Args(#[from] clap::Error),
}

/// Parses `P` from the process's arguments and environment with `--config` file values as
/// defaults; prints the error and exits like clap on bad input.
pub fn parse<P: Parser>() -> P {
    match try_parse_from(std::env::args_os()) {
        Ok(p) => p,
        Err(ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// [`parse`] from the given arguments (the first is the program name).
pub fn try_parse_from<P, I, T>(args: I) -> Result<P, ConfigError>
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = with_config_flag(P::command());
    let command = match config_path(&args) {
        Some(path) => apply_file(command, &path)?,
        None => command,
    };
    let mut matches = command.try_get_matches_from(&args)?;
    Ok(P::from_arg_matches_mut(&mut matches)?)
}

/// `--config <file>`, `--config=<file>` or `DBSYNC_CONFIG`, found before clap parses (the
/// file supplies values of flags clap may require).
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let prefix = format!("{flag}=");
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == flag {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix(&prefix) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

fn with_config_flag(command: Command) -> Command {
    command.arg(
        Arg::new(CONFIG_FLAG)
            .long(CONFIG_FLAG)
            .env(CONFIG_ENV)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .action(ArgAction::Set)
            .help("Settings file (TOML or YAML; keys are the long flag names); flags and environment override it"),
    )
}

/// The file's settings as `(flag name, values)`.
pub fn read_settings(path: &Path) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let syntax = |format, detail: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        format,
        detail,
    };
    let value: serde_json::Value = if extension == "toml" {
        let v: toml::Value = toml::from_str(&text).map_err(|e| syntax("TOML", e.to_string()))?;
        serde_json::to_value(v).map_err(|e| syntax("TOML", e.to_string()))?
    } else {
        let v: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| syntax("YAML", e.to_string()))?;
        serde_json::to_value(v).map_err(|e| syntax("YAML", e.to_string()))?
    };
    let mut out = Vec::new();
    match value {
        serde_json::Value::Object(map) => flatten(path, "", map, &mut out)?,
        serde_json::Value::Null => {}
        _ => {
            return Err(syntax(
                if extension == "toml" { "TOML" } else { "YAML" },
                "the top level must be a table of settings".into(),
            ))
        }
    }
    Ok(out)
}

fn flatten(
    path: &Path,
    prefix: &str,
    map: serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, Vec<String>)>,
) -> Result<(), ConfigError> {
    use serde_json::Value;
    for (key, value) in map {
        let key = key.replace('_', "-");
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}-{key}")
        };
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let values = match value {
            Value::Null => continue,
            Value::Object(inner) => {
                flatten(path, &key, inner, out)?;
                continue;
            }
            Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
            other => scalar(&other).map(|v| vec![v]),
        };
        match values {
            Some(values) => out.push((key, values)),
            None => {
                return Err(ConfigError::BadValue {
                    path: path.to_path_buf(),
                    key,
                })
            }
        }
    }
    Ok(())
}

/// Makes each file setting the default of its flag.
fn apply_file(mut command: Command, path: &Path) -> Result<Command, ConfigError> {
    for (key, values) in read_settings(path)? {
        let id = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != CONFIG_FLAG)
            .map(|a| a.get_id().to_string());
        let Some(id) = id else {
            let known: Vec<&str> = command
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !matches!(*l, "help" | "version" | CONFIG_FLAG))
                .collect();
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
                known: known.join(", "),
            });
        };
        // Parsed once per process: leaking the few values is the simple way to give clap the
        // 'static strings it takes without its `string` feature.
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        command = command.mut_arg(id, |a| a.default_values(values).required(false));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Parser, Debug)]
    struct Settings {
        #[arg(long, default_value = "0.0.0.0:1")]
        listen: String,
        #[arg(long = "lease-seconds", default_value_t = 15)]
        lease_seconds: u32,
        #[arg(long = "metrics-listen")]
        metrics_listen: Option<String>,
        #[arg(long)]
        verbose: bool,
    }

    fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        try_parse_from(std::iter::once("svc").chain(args.iter().copied()))
    }

    #[test]
    fn toml_and_yaml_set_defaults_that_flags_override() {
        let (_d, toml) = file(
            "c.toml",
            "listen = \"127.0.0.1:9\"\nlease_seconds = 30\nverbose = true\n[metrics]\nlisten = \"127.0.0.1:10\"\n",
        );
        let s = parse(&["--config", toml.to_str().unwrap()]).unwrap();
        assert_eq!(
            (
                s.listen.as_str(),
                s.lease_seconds,
                s.metrics_listen.as_deref(),
                s.verbose
            ),
            ("127.0.0.1:9", 30, Some("127.0.0.1:10"), true)
        );
        let s = parse(&["--config", toml.to_str().unwrap(), "--lease-seconds", "5"]).unwrap();
        assert_eq!(s.lease_seconds, 5, "a flag beats the file");

        let (_d, yaml) = file(
            "c.yaml",
            "lease-seconds: 40\nmetrics-listen: 127.0.0.1:11\n",
        );
        let s = parse(&["--config", yaml.to_str().unwrap()]).unwrap();
        assert_eq!((s.lease_seconds, s.listen.as_str()), (40, "0.0.0.0:1"));
        assert_eq!(s.metrics_listen.as_deref(), Some("127.0.0.1:11"));
        assert_eq!(
            parse(&[]).unwrap().lease_seconds,
            15,
            "no file: built-in defaults"
        );
    }

    #[test]
    fn environment_beats_the_file() {
        #[derive(Parser)]
        struct WithEnv {
            #[arg(long, env = "DBSYNC_CONFIG_TEST_LISTEN")]
            listen: String,
            #[arg(long)]
            other: String,
        }
        let (_d, yaml) = file("c.yml", "listen: 127.0.0.1:9\nother: from-file\n");
        // Only this test sets this variable.
        std::env::set_var("DBSYNC_CONFIG_TEST_LISTEN", "127.0.0.1:12");
        let s: WithEnv = try_parse_from(["svc", "--config", yaml.to_str().unwrap()]).unwrap();
        std::env::remove_var("DBSYNC_CONFIG_TEST_LISTEN");
        assert_eq!(
            (s.listen.as_str(), s.other.as_str()),
            ("127.0.0.1:12", "from-file")
        );
    }

    #[test]
    fn unknown_keys_bad_values_and_bad_syntax_are_named() {
        let (_d, typo) = file("c.toml", "lease_secnds = 3\n");
        let e = parse(&["--config", typo.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown setting `lease-secnds`") && e.contains("lease-seconds"),
            "{e}"
        );
        let (_d, nested) = file("c.yaml", "listen: [{a: 1}]\n");
        let e = parse(&["--config", nested.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("setting `listen`"), "{e}");
        let (_d, broken) = file("c.toml", "listen = \n");
        let e = parse(&["--config", broken.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = parse(&["--config", "/nonexistent/c.toml"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read config file /nonexistent/c.toml"),
            "{e}"
        );
        let (_d, wrong) = file("c.toml", "lease_seconds = \"many\"\n");
        assert!(matches!(
            parse(&["--config", wrong.to_str().unwrap()]),
            Err(ConfigError::Args(_))
        ));
    }
}
