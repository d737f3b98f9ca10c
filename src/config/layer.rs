//! How a setting gets its value: a flag or its environment variable, else the TOML file,
//! else its default; and the help text that shows that default.

/// The layering rule: the flag or its environment variable (clap reads both), else the
/// TOML file, else the default.
pub(super) fn layer<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// A flag's help text ending in the default it documents: `text [default: X]`.
pub(super) fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// The admin token: from `--admin-token-file` (its first line), else `--admin-token` or
/// `CONCLAVE_ADMIN_TOKEN` (a flag's value shows in the process list; the file or the
/// variable do not).
pub(super) fn admin_token(
    flag: Option<&String>,
    file: Option<&std::path::PathBuf>,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let Some(path) = file else {
        return Ok(flag.cloned());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the admin token file {} is empty",
        path.display()
    );
    Ok(Some(token.to_string()))
}

/// A bound as flags and files write it: 0 for none.
pub(super) fn bound_or_zero(bound: Option<u64>) -> u64 {
    bound.unwrap_or(0)
}

/// The bound a flag or file value sets: none for 0.
pub(super) fn bound(value: u64) -> Option<u64> {
    (value > 0).then_some(value)
}

/// Milliseconds from a flag or the file, as a duration.
pub(super) fn millis(ms: Option<u64>) -> Option<std::time::Duration> {
    ms.map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::admin_token;

    #[test]
    fn the_admin_token_file_wins_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret \nsecond line\n").unwrap();
        let flag = "from-flag".to_string();
        let token = admin_token(Some(&flag), Some(&path)).unwrap();
        assert_eq!(token.as_deref(), Some("s3cret"));
        assert_eq!(admin_token(Some(&flag), None).unwrap(), Some(flag));
        std::fs::write(&path, "\n").unwrap();
        assert!(admin_token(None, Some(&path)).is_err());
        assert!(admin_token(None, Some(&dir.path().join("missing"))).is_err());
    }
}
