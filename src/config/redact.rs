//! Secrets out of a printed configuration (`--check-config`): tokens, JWT secrets and
//! passwords in URLs.

/// Field names whose string values are secrets.
const SECRET_FIELDS: [&str; 3] = ["admin_token", "secret", "password"];

/// `debug` (a `{:#?}` rendering) with every secret field's string value and every URL's
/// password replaced by `<redacted>`.
pub fn redact(debug: &str) -> String {
    let mut inside_secret = false;
    debug
        .lines()
        .map(|line| {
            // `{:#?}` puts an Option's value on its own line: `name: Some(` then `"…",`.
            if std::mem::take(&mut inside_secret) && line.trim_start().starts_with('"') {
                let indent = &line[..line.len() - line.trim_start().len()];
                return format!("{indent}<redacted>,");
            }
            let trimmed = line.trim_start();
            if SECRET_FIELDS
                .iter()
                .any(|f| trimmed.strip_prefix(f) == Some(": Some("))
            {
                inside_secret = true;
            }
            redact_url_password(&redact_field(line))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `name: Some("…")` or `name: "…"` of a secret field.
fn redact_field(line: &str) -> String {
    let trimmed = line.trim_start();
    let Some((name, value)) = trimmed.split_once(": ") else {
        return line.to_string();
    };
    if !SECRET_FIELDS.contains(&name) || !value.contains('"') {
        return line.to_string();
    }
    let indent = &line[..line.len() - trimmed.len()];
    let wrapped = value.starts_with("Some(");
    let comma = if value.ends_with(',') { "," } else { "" };
    let shown = if wrapped {
        "Some(<redacted>)"
    } else {
        "<redacted>"
    };
    format!("{indent}{name}: {shown}{comma}")
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`.
fn redact_url_password(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '"', ' ', '?']).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon + 1]);
                out.push_str("<redacted>");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_tokens_and_url_passwords_are_hidden() {
        let debug = r#"Config {
    admin_token: Some(
        "t0p",
    ),
    admin_token: Some("t0p"),
    secret: Some("jwt-secret"),
    storage: Postgres(
        "postgres://conclave:hunter2@db:5432/conclave",
    ),
    redis_url: Some("redis://:pw@redis:6379"),
    region: "eu",
}"#;
        let shown = redact(debug);
        for leaked in ["t0p\"", "jwt-secret", "hunter2", ":pw@"] {
            assert!(!shown.contains(leaked), "{leaked} leaked:\n{shown}");
        }
        assert!(shown.contains("postgres://conclave:<redacted>@db:5432/conclave"));
        assert!(shown.contains("region: \"eu\""));
    }
}
