//! TOML errors told without the file's text (see [`without_text`]): config files
//! hold secrets (database URLs, token hashes), and a message that quotes the line
//! it stopped at would put them in a log.

/// Where a file stops being TOML of its shape, and what is wrong there (`line 3,
/// column 1: unknown key, expected one of ...`), without its text: toml's own
/// message quotes the offending line, and its words quote what it found there
/// (``unknown field `fst_…` ``, `invalid type: string "fst_…"`). That is a secret
/// whenever one is pasted where it does not belong (a token where its hash
/// belongs, `sha256 = fst_…`; a database URL with its password left unquoted,
/// `database_url = postgres://u:pw@host/db`), and secrets are never logged. `keys`
/// are the file's own keys, which may be told.
pub fn without_text(e: &toml::de::Error, text: &str, keys: &[&str]) -> String {
    let at = e.span().map(|span| {
        // The end of a file that ends its last line is told as that line's end.
        let mut start = span.start.min(text.len());
        if start == text.len() && text.ends_with('\n') {
            start -= 1;
        }
        let before = text.get(..start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_before = before.rsplit('\n').next().unwrap_or("");
        let column = line_before.chars().count() + 1;
        // The key of a `key = value` line whose value is wrong, when it is one of
        // the file's keys (a check of the value may not name it, and a key the
        // file does not take is told as "unknown key" anyway).
        let key = line_before
            .split_once('=')
            .map(|(key, _)| key.trim().trim_matches(['"', '\'']))
            .filter(|key| keys.contains(key))
            .map(|key| format!(" ({key})"))
            .unwrap_or_default();
        format!("line {line}, column {column}{key}: ")
    });
    let what: Vec<String> = e
        .message()
        .lines()
        .map(|l| words_without_text(l, keys))
        .collect();
    format!("{}{}", at.unwrap_or_default(), what.join("; "))
}

/// One line of toml's message, with whatever it quotes from the file left out.
/// serde's words name the value or key found before `, expected …` (which names
/// only what the file takes): they become the kind of what was found.
/// toml's own words (``duplicate key `sha256` in table `token` ``, ``expected `"`,
/// `'` ``) keep what they quote only when it is one of the file's keys or a single
/// character; past anything else (a quoted key may hold a backtick itself, so
/// nothing after it can be told apart from the file's text) the line is cut.
fn words_without_text(line: &str, keys: &[&str]) -> String {
    let expected = line.rsplit_once(", expected ").map(|(_, e)| e);
    if line.starts_with("unknown field ") {
        return match expected {
            Some(e) => format!("unknown key, expected {e}"),
            None => "unknown key".into(),
        };
    }
    // A choice's value it does not take (`[cache] admission`): the values it
    // takes are the program's words, the one found is the file's.
    if line.starts_with("unknown variant ") {
        return match expected {
            Some(e) => format!("unknown variant, expected {e}"),
            None => "unknown variant".into(),
        };
    }
    for what in ["invalid type", "invalid value"] {
        if let Some(found) = line.strip_prefix(what).and_then(|r| r.strip_prefix(": ")) {
            // `string "…"`, ``integer `3` ``, `sequence`: its kind, not its value.
            let kind = match found.split([' ', ',']).next().unwrap_or("") {
                "floating" => "floating point",
                k => k,
            };
            return match expected {
                Some(e) => format!("{what}: {kind}, expected {e}"),
                None => format!("{what}: {kind}"),
            };
        }
    }
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        let fits = match i {
            // A double-quoted value (serde's words for a string) is the file's.
            0 => !part.contains('"'),
            i if i % 2 == 1 => part.chars().count() <= 1 || keys.contains(&part),
            _ => matches!(part, "" | ", " | " in table " | " in document root"),
        };
        if !fits {
            out.push('…');
            break;
        }
        if i > 0 {
            out.push('`');
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Admission {
        FirstMiss,
        SecondMiss,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Cache {
        admission: Admission,
    }

    /// A choice with a value it does not take names the values it takes (they are
    /// the program's words), never the value written (the file's text): the
    /// expected part was cut at the value.
    #[test]
    fn a_bad_choice_names_the_valid_ones_but_not_the_value() {
        for value in ["always", "sk_secret`, expected `leak"] {
            let text = format!("admission = \"{value}\"\n");
            let e = toml::from_str::<Cache>(&text).unwrap_err();
            let told = without_text(&e, &text, &["admission"]);
            assert!(
                told.ends_with(
                    "(admission): unknown variant, expected `first_miss` or `second_miss`"
                ),
                "{told}"
            );
            assert!(
                !told.contains("always") && !told.contains("secret"),
                "{told}"
            );
        }
    }
}
