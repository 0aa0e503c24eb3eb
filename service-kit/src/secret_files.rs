//! Every secret setting can be given as a file instead of a value: `JWT_SECRET_FILE=/run/…`
//! beside `JWT_SECRET`. Kubernetes mounts a Secret as read-only files, and a value kept in a
//! file never shows in the process's environment (`/proc/PID/environ`, `kubectl describe`,
//! crash reports that dump the environment).
//!
//! Which settings are secrets is not a list kept by hand: every argument whose value parser
//! makes a [`Secret`] gets its `_FILE` form, in every service and in every subcommand of the
//! `mp3converter` program that embeds them, so a new secret setting cannot forget it.
//!
//! The file's content becomes the argument's default (hidden from `--help`), so a value given
//! the other ways is detected and refused: the value and the file form together are an error
//! naming both, never a silent choice of one.

use crate::Secret;
use crate::config::ConfigError;
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::any::TypeId;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;

/// A secret file is one value, not a data file: anything larger is refused unread.
const SECRET_FILE_MAX_BYTES: u64 = 64 * 1024;

/// Parses `P` from `argv` and the process's environment, each secret setting's `_FILE` form
/// read and checked.
pub fn parse<P: clap::Parser>(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<P, ConfigError> {
    parse_with_env(argv, |name| std::env::var_os(name))
}

/// [`parse`] with `env` deciding which `NAME` and `NAME_FILE` variables are set (clap still
/// reads `NAME`'s value itself): the seam a unit test uses, as a test cannot change its own
/// process's environment safely.
pub(crate) fn parse_with_env<P: clap::Parser>(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    env: impl Fn(&OsStr) -> Option<OsString>,
) -> Result<P, ConfigError> {
    let mut from_files = Vec::new();
    let command = read_secret_files(P::command(), &[], &env, &mut from_files)?;
    let mut matches = command.try_get_matches_from(argv)?;
    for filled in &from_files {
        filled.refuse_a_command_line_value_too(&matches)?;
    }
    Ok(P::from_arg_matches_mut(&mut matches)?)
}

/// A secret argument whose value came from its file.
struct FilledFromFile {
    /// The subcommands leading to the command the argument belongs to.
    subcommands: Vec<String>,
    id: String,
    long: Option<String>,
    file_variable: String,
}

impl FilledFromFile {
    fn refuse_a_command_line_value_too(&self, matches: &ArgMatches) -> Result<(), ConfigError> {
        let mut matches = matches;
        for name in &self.subcommands {
            match matches.subcommand_matches(name) {
                Some(deeper) => matches = deeper,
                // Another subcommand was chosen: this argument was not parsed at all.
                None => return Ok(()),
            }
        }
        if matches.value_source(&self.id) == Some(ValueSource::CommandLine) {
            let flag = self.long.as_deref().unwrap_or(&self.id);
            return Err(ConfigError::invalid(
                self.file_variable.clone(),
                format!("and --{flag} are both set: give the secret one way"),
            ));
        }
        Ok(())
    }
}

/// Gives every secret argument of `command` (and of its subcommands) whose `NAME_FILE` is set
/// the file's content as its default.
fn read_secret_files(
    mut command: Command,
    subcommands: &[String],
    env: &impl Fn(&OsStr) -> Option<OsString>,
    from_files: &mut Vec<FilledFromFile>,
) -> Result<Command, ConfigError> {
    let mut secrets = Vec::new();
    let mut contents = Vec::new();
    for arg in command.get_arguments() {
        if arg.get_value_parser().type_id() != TypeId::of::<Secret>() {
            continue;
        }
        secrets.push(arg.get_id().to_string());
        let Some(variable) = arg.get_env().map(OsStr::to_string_lossy) else {
            continue;
        };
        let file_variable = format!("{variable}_FILE");
        let Some(path) = env(OsStr::new(&file_variable)) else {
            continue;
        };
        if env(OsStr::new(variable.as_ref())).is_some() {
            return Err(ConfigError::invalid(
                file_variable,
                format!("and {variable} are both set: give the secret one way"),
            ));
        }
        let content = read_secret_file(Path::new(&path))
            .map_err(|problem| ConfigError::invalid(file_variable.clone(), problem))?;
        contents.push((arg.get_id().to_string(), content));
        from_files.push(FilledFromFile {
            subcommands: subcommands.to_vec(),
            id: arg.get_id().to_string(),
            long: arg.get_long().map(str::to_owned),
            file_variable,
        });
    }
    // `--help` would otherwise print a secret variable's value beside its name.
    for id in secrets {
        command = command.mut_arg(id, |arg| arg.hide_env_values(true));
    }
    for (id, content) in contents {
        command = command.mut_arg(id, |arg| {
            arg.default_value(content).hide_default_value(true)
        });
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        let path: Vec<String> = subcommands.iter().cloned().chain([name.clone()]).collect();
        let mut failed = None;
        command = command.mut_subcommand(&name, |sub| {
            match read_secret_files(sub.clone(), &path, env, from_files) {
                Ok(sub) => sub,
                Err(error) => {
                    failed = Some(error);
                    sub
                }
            }
        });
        if let Some(error) = failed {
            return Err(error);
        }
    }
    Ok(command)
}

/// The secret in the file at `path`, trailing line endings removed (`echo secret > file` and
/// `kubectl create secret --from-file` both leave one). The problem, if any, names the path
/// and never the content.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let cannot_read =
        |error: std::io::Error| format!("names {}, which cannot be read: {error}", path.display());
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let mut bytes = Vec::new();
    file.take(SECRET_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > SECRET_FILE_MAX_BYTES {
        return Err(format!(
            "names {}, which is larger than {} KiB: a secret file holds one value",
            path.display(),
            SECRET_FILE_MAX_BYTES / 1024
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("names {}, which is not UTF-8 text", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};
    use std::collections::HashMap;

    /// Variable names no environment sets, so clap's own reading of `NAME` finds nothing.
    const TOKEN: &str = "SERVICE_KIT_TEST_TOKEN";
    const TOKEN_FILE: &str = "SERVICE_KIT_TEST_TOKEN_FILE";

    #[derive(Debug, Parser)]
    struct Example {
        #[arg(long, env = TOKEN)]
        token: Option<Secret>,
        /// Not a secret: has no file form even when `…_FILE` is set.
        #[arg(long, env = "SERVICE_KIT_TEST_PLAIN")]
        plain: Option<String>,
        #[command(subcommand)]
        command: Option<Nested>,
    }

    #[derive(Debug, Subcommand)]
    enum Nested {
        Serve(Inner),
    }

    #[derive(Debug, clap::Args)]
    struct Inner {
        #[arg(long, env = "SERVICE_KIT_TEST_INNER")]
        inner: Option<Secret>,
    }

    fn parse_example(argv: &[&str], env: &[(&str, String)]) -> Result<Example, ConfigError> {
        let env: HashMap<String, String> =
            env.iter().cloned().map(|(k, v)| (k.into(), v)).collect();
        parse_with_env(
            std::iter::once("example").chain(argv.iter().copied()),
            |name| env.get(name.to_str()?).map(OsString::from),
        )
    }

    fn secret_file(content: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), content).unwrap();
        file
    }

    fn path_of(file: &tempfile::NamedTempFile) -> String {
        file.path().display().to_string()
    }

    #[test]
    fn a_secret_file_is_read_with_its_trailing_newline_trimmed() {
        let file = secret_file(b"  s3cret with spaces \r\n\n");
        let parsed = parse_example(&[], &[(TOKEN_FILE, path_of(&file))]).unwrap();
        assert_eq!(parsed.token.unwrap().expose(), "  s3cret with spaces ");
    }

    #[test]
    fn a_secret_file_reaches_a_subcommand_setting() {
        let file = secret_file(b"inner-value\n");
        let parsed = parse_example(
            &["serve"],
            &[("SERVICE_KIT_TEST_INNER_FILE", path_of(&file))],
        )
        .unwrap();
        let Some(Nested::Serve(inner)) = parsed.command else {
            panic!("the subcommand parses");
        };
        assert_eq!(inner.inner.unwrap().expose(), "inner-value");
    }

    #[test]
    fn only_secret_settings_have_a_file_form() {
        let file = secret_file(b"not read\n");
        let parsed =
            parse_example(&[], &[("SERVICE_KIT_TEST_PLAIN_FILE", path_of(&file))]).unwrap();
        assert_eq!(parsed.plain, None);
    }

    #[test]
    fn the_value_and_the_file_together_are_refused_naming_both() {
        let file = secret_file(b"from-file\n");
        let both = parse_example(
            &[],
            &[(TOKEN, "from-env".into()), (TOKEN_FILE, path_of(&file))],
        )
        .unwrap_err()
        .to_string();
        assert!(
            both.contains(TOKEN_FILE) && both.contains(&format!("and {TOKEN} ")),
            "{both}"
        );
        let flag_too = parse_example(&["--token", "from-flag"], &[(TOKEN_FILE, path_of(&file))])
            .unwrap_err()
            .to_string();
        assert!(
            flag_too.contains(TOKEN_FILE) && flag_too.contains("--token"),
            "{flag_too}"
        );
        assert!(!both.contains("from-") && !flag_too.contains("from-file"));
    }

    #[test]
    fn an_unreadable_secret_file_is_refused_naming_the_variable_and_the_path_not_the_content() {
        let missing = parse_example(&[], &[(TOKEN_FILE, "/nonexistent/token".into())]).unwrap_err();
        assert_eq!(missing.variable(), Some(TOKEN_FILE));
        assert!(
            missing.to_string().contains("/nonexistent/token"),
            "{missing}"
        );

        let not_text = secret_file(b"\xff\xfe-the-content");
        let refused = parse_example(&[], &[(TOKEN_FILE, path_of(&not_text))])
            .unwrap_err()
            .to_string();
        assert!(refused.contains(&path_of(&not_text)), "{refused}");
        assert!(!refused.contains("the-content"), "{refused}");

        let huge = secret_file(&vec![b'x'; 64 * 1024 + 1]);
        let refused = parse_example(&[], &[(TOKEN_FILE, path_of(&huge))])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("larger than 64 KiB"), "{refused}");
        assert!(!refused.contains("xxxx"), "{refused}");
    }

    #[test]
    fn a_secret_read_from_a_file_never_shows_in_help() {
        let file = secret_file(b"hunter2-hunter2\n");
        let help = parse_example(&["--help"], &[(TOKEN_FILE, path_of(&file))])
            .unwrap_err()
            .to_string();
        assert!(help.contains("--token"), "{help}");
        assert!(!help.contains("hunter2"), "{help}");
    }
}
