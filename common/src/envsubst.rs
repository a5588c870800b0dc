//! `${VAR}` expansion in config string values, so secrets (provider URLs, tokens) live in the
//! environment (a Kubernetes Secret) and never in the file.

use thiserror::Error;

/// Why a string could not be expanded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvsubstError {
    #[error(
        "environment variable `{0}` is not set; export it or remove `${{{0}}}` from the value"
    )]
    Missing(String),
    #[error("`${{` is not closed by `}}`; write `${{NAME}}`")]
    Unclosed,
    #[error("`${{{0}}}` is not a valid variable name; use letters, digits and `_`")]
    BadName(String),
}

/// Replaces every `${NAME}` in `input` with `lookup(NAME)`. `$` not followed by `{` stays as is.
pub fn expand(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, EnvsubstError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(EnvsubstError::Unclosed)?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(EnvsubstError::BadName(name.to_owned()));
        }
        out.push_str(&lookup(name).ok_or_else(|| EnvsubstError::Missing(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cret".to_owned())
    }

    #[test]
    fn expands_known_variables_anywhere_in_the_value() {
        assert_eq!(
            expand("https://h/${KEY}/x?${KEY}", env).unwrap(),
            "https://h/s3cret/x?s3cret"
        );
        assert_eq!(
            expand("no vars, a $ sign", env).unwrap(),
            "no vars, a $ sign"
        );
    }

    #[test]
    fn names_the_missing_variable() {
        assert_eq!(
            expand("${NOPE}", env),
            Err(EnvsubstError::Missing("NOPE".into()))
        );
    }

    #[test]
    fn rejects_malformed_references() {
        assert_eq!(expand("${KEY", env), Err(EnvsubstError::Unclosed));
        assert_eq!(
            expand("${}", env),
            Err(EnvsubstError::BadName(String::new()))
        );
        assert_eq!(
            expand("${1A}", env),
            Err(EnvsubstError::BadName("1A".into()))
        );
        assert_eq!(
            expand("${A B}", env),
            Err(EnvsubstError::BadName("A B".into()))
        );
    }
}
