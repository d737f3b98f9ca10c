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

/// Milliseconds from a flag or the file, as a duration.
pub(super) fn millis(ms: Option<u64>) -> Option<std::time::Duration> {
    ms.map(std::time::Duration::from_millis)
}
