//! The tokens file (`--auth-tokens`): its entries, parsed without ever echoing
//! the file's text (a token pasted in by mistake must not reach a log), and new
//! tokens for `ferroserve token new`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Scope;

/// One entry of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: BTreeSet<Scope>,
}

/// The tokens file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("tokens file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
}

/// What every token begins with (`ferroserve token new` makes them).
pub const TOKEN_PREFIX: &str = "fst_";

/// A token's name is 1 to 64 printable ASCII characters (spaces allowed), and does
/// not begin as tokens do: it goes into logs and the audit trail, where a token
/// pasted as a name would be told to everyone. The error never repeats the name.
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    {
        return Err("the token name is not valid: 1 to 64 printable ASCII characters".into());
    }
    if name.starts_with(TOKEN_PREFIX) {
        return Err(format!(
            "the token name is not valid: it begins with {TOKEN_PREFIX:?}, as tokens do \
             (the name is logged; a token never is)"
        ));
    }
    Ok(())
}

/// Parses the TOML tokens file. Every entry needs a unique name, a 64-digit hex
/// SHA-256 and at least one known scope; an empty file configures no token, which
/// refuses every protected request (the operator asked for tokens).
///
/// An error names the entry by its place (`token 3 (line 9)`), and by its name only
/// when the name is a valid one; it never repeats a value that is wrong (a scope, a
/// name, a hash): a token pasted there by mistake must not reach a log.
pub fn parse_tokens(text: &str) -> Result<Vec<TokenEntry>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        token: Vec<Entry>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: toml::Spanned<String>,
        sha256: String,
        scopes: Vec<String>,
    }
    let file: File = toml::from_str(text).map_err(|e| {
        crate::toml_error::without_text(&e, text, &["token", "name", "sha256", "scopes"])
    })?;
    let mut names = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    let mut out = Vec::with_capacity(file.token.len());
    for (index, e) in file.token.into_iter().enumerate() {
        let line = line_at(text, e.name.span().start);
        let at = format!("token {} (line {line})", index + 1);
        let name = e.name.into_inner();
        check_token_name(&name).map_err(|reason| format!("{at}: {reason}"))?;
        // The name is a valid one from here on: it may be told.
        let at = format!("token {} {name:?} (line {line})", index + 1);
        if !names.insert(name.clone()) {
            return Err(format!("{at}: the name is used twice"));
        }
        let sha256 = parse_hex32(&e.sha256).ok_or_else(|| {
            format!("{at}: sha256 must be 64 hex digits (the SHA-256 of the token)")
        })?;
        if !hashes.insert(sha256) {
            return Err(format!("{at}: the same token hash appears twice"));
        }
        if e.scopes.is_empty() {
            return Err(format!("{at} has no scopes"));
        }
        let mut scopes = BTreeSet::new();
        for (n, s) in e.scopes.iter().enumerate() {
            let scope = Scope::parse(s).ok_or_else(|| {
                format!(
                    "{at}: unknown scope: scope {} is not one of inference, management, \
                     metrics",
                    n + 1
                )
            })?;
            scopes.insert(scope);
        }
        out.push(TokenEntry {
            name,
            sha256,
            scopes,
        });
    }
    Ok(out)
}

/// The entries in force as a main server hands them to its workers
/// (`crate::workers`), in their environment: one line per entry,
/// `<sha256 hex> <scopes, comma-separated> <name>` (the name last: it may hold
/// spaces, never a line break). Hashes only, as the file holds them: never a token.
pub fn encode_entries(entries: &[TokenEntry]) -> String {
    let mut out = String::new();
    for entry in entries {
        let scopes: Vec<&str> = entry.scopes.iter().map(|s| s.as_str()).collect();
        out.push_str(&format!(
            "{} {} {}\n",
            to_hex(&entry.sha256),
            scopes.join(","),
            entry.name
        ));
    }
    out
}

/// Reads what [`encode_entries`] wrote, checking each entry as [`parse_tokens`]
/// does. An error names the entry by its line, never by what it holds.
pub fn decode_entries(text: &str) -> Result<Vec<TokenEntry>, String> {
    let mut out: Vec<TokenEntry> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let at = format!("entry {}", index + 1);
        let mut parts = line.splitn(3, ' ');
        let (Some(hex), Some(scopes), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{at}: not `<sha256> <scopes> <name>`"));
        };
        let sha256 =
            parse_hex32(hex).ok_or_else(|| format!("{at}: sha256 is not 64 hex digits"))?;
        check_token_name(name).map_err(|reason| format!("{at}: {reason}"))?;
        let scopes = scopes
            .split(',')
            .map(Scope::parse)
            .collect::<Option<BTreeSet<Scope>>>()
            .filter(|scopes| !scopes.is_empty())
            .ok_or_else(|| format!("{at}: the scopes are not valid"))?;
        if out.iter().any(|e| e.name == name || e.sha256 == sha256) {
            return Err(format!("{at}: its name or hash appears twice"));
        }
        out.push(TokenEntry {
            name: name.to_string(),
            sha256,
            scopes,
        });
    }
    Ok(out)
}

/// The line (from 1) of byte `at` of `text`.
fn line_at(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .unwrap_or(text)
        .matches('\n')
        .count()
        + 1
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    // from_str_radix would take a sign ("+a").
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a token, as the tokens file stores it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (`fst_` + 43 characters of URL-safe base64 = 256 bits)
/// and the tokens-file entry that accepts it.
pub fn new_token(name: &str, scopes: &[Scope]) -> Result<(String, String), String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let scopes: BTreeSet<Scope> = scopes.iter().copied().collect();
    if scopes.is_empty() {
        return Err("give at least one scope".into());
    }
    let list: Vec<String> = scopes.iter().map(|s| format!("{:?}", s.as_str())).collect();
    let entry = format!(
        "[[token]]\nname = {}\nsha256 = \"{}\"\nscopes = [{}]\n",
        toml::Value::String(name.to_string()),
        to_hex(&token_sha256(&token)),
        list.join(", ")
    );
    // The entry must be one the server accepts.
    parse_tokens(&entry)?;
    Ok((token, entry))
}

pub(super) fn read_tokens_file(path: &Path) -> Result<String, TokensError> {
    std::fs::read_to_string(path).map_err(|e| TokensError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn entry(name: &str, token: &str, scopes: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
            to_hex(&token_sha256(token))
        )
    }

    #[test]
    fn tokens_file_is_validated() {
        let good = entry("a", "t", "\"inference\"");
        assert_eq!(parse_tokens(&good).unwrap().len(), 1);
        assert!(parse_tokens("").unwrap().is_empty());
        for (bad, says) in [
            (good.clone() + &good, "used twice"),
            (entry("a", "t", "\"admin\""), "unknown scope"),
            (entry("a", "t", ""), "no scopes"),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"abc\"\nscopes = [\"inference\"]\n".into(),
                "64 hex",
            ),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"x\"\nscopes = []\ncolour = 1\n".into(),
                "line 5, column 1: unknown key, expected one of `name`, `sha256`, `scopes`",
            ),
            (entry("", "t", "\"inference\""), "not valid"),
            (
                entry("a", "t", "\"inference\"") + &entry("b", "t", "\"inference\""),
                "hash appears twice",
            ),
        ] {
            let e = parse_tokens(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_that_does_not_parse_is_told_without_its_text() {
        // With a backtick, as toml's messages quote what they found.
        const SECRET: &str = "fst_pasted`Secret42";
        let head = "[[token]]\nname = \"ci\"\n";
        // (the file's text after its head, what is said of it)
        for (rest, says) in [
            (
                format!("token = \"{SECRET}\"\n"),
                "line 3, column 1: unknown key",
            ),
            (
                format!("sha256 = {SECRET}\n"),
                "line 3, column 10 (sha256): invalid string",
            ),
            (
                format!("sha256 = '{SECRET}\n"),
                "line 3, column 30 (sha256): invalid literal string",
            ),
            (
                format!("sha256 = \"\"\"{SECRET}\n"),
                "line 3, column 32 (sha256): invalid multiline basic string",
            ),
            (
                format!("sha256 = \"0\"\nscopes = \"{SECRET}\"\n"),
                "line 4, column 10 (scopes): invalid type: string, expected a sequence",
            ),
            (
                format!("sha256 = \"0\"\nscopes = [1.5, \"{SECRET}\"]\n"),
                "line 4, column 11 (scopes): invalid type: floating point, expected a string",
            ),
            (
                format!("sha256 = [\"{SECRET}\"]\n"),
                "line 3, column 10 (sha256): invalid type: sequence, expected a string",
            ),
            (format!("'{SECRET}' = 1\n"), "line 3, column 1: unknown key"),
            (
                format!("sha256 = \"0\"\n\"{SECRET}\" = 1\n\"{SECRET}\" = 2\n"),
                "line 5, column 1: duplicate key …",
            ),
            (
                "sha256 = \"0\"\nsha256 = \"1\"\n".into(),
                "line 4, column 1: duplicate key `sha256` in table `token`",
            ),
            (
                format!("[{SECRET}]\n"),
                "line 3, column 12: invalid table header; expected `.`, `]`",
            ),
            (
                "sha256 = \"0\"\nscopes = []\n[fst_pastedSecret42]\n".into(),
                "line 5, column 2: unknown key, expected `token`",
            ),
        ] {
            let text = format!("{head}{rest}");
            let told = parse_tokens(&text).err().unwrap_or_default();
            assert!(told.contains(says), "{text}\n{told}");
            for part in ["pasted", "Secret"] {
                assert!(!told.contains(part), "{text}\n{told}");
            }
        }
    }

    /// A token pasted into `scopes` or as a name is not repeated: the entry and the
    /// scope are told by their place.
    #[test]
    fn a_token_pasted_as_a_scope_or_a_name_is_not_told() {
        const SECRET: &str = "fst_c-jts5PastedSecret42";
        let ok = entry("ok", "t0", "\"inference\"");
        for (text, says) in [
            (
                ok.clone() + &entry("ci", "t", &format!("\"inference\", \"{SECRET}\"")),
                "token 2 \"ci\" (line 6): unknown scope: scope 2 is not one of inference, \
                 management, metrics",
            ),
            (
                ok.clone() + &entry("ci", "t", "\"admin\""),
                "token 2 \"ci\" (line 6): unknown scope: scope 1 is not one",
            ),
            (
                ok.clone() + &entry(SECRET, "t", "\"inference\""),
                "token 2 (line 6): the token name is not valid: it begins with \"fst_\"",
            ),
            (
                ok.clone() + &entry("fst_Pasted\\u0007Secret", "t", "\"inference\""),
                "token 2 (line 6): the token name is not valid: 1 to 64 printable",
            ),
            (
                ok.clone()
                    + &entry(
                        &format!("{SECRET} {}", "x".repeat(64)),
                        "t",
                        "\"inference\"",
                    ),
                "token 2 (line 6): the token name is not valid: 1 to 64 printable",
            ),
        ] {
            let told = parse_tokens(&text).unwrap_err();
            assert!(told.contains(says), "{text}\n{told}");
            for part in ["Pasted", "Secret", "admin"] {
                assert!(!told.contains(part), "{text}\n{told}");
            }
        }
        assert!(check_token_name("fst_ci").is_err());
        assert!(check_token_name("ci fst_").is_ok());
    }

    /// The entries a main server hands its workers come back as they went, and
    /// what is not such a list is refused without repeating it.
    #[test]
    fn entries_in_force_round_trip() {
        let text = entry("ci bot", "t1", "\"management\", \"inference\"")
            + &entry("prom", "t2", "\"metrics\"");
        let entries = parse_tokens(&text).unwrap();
        let encoded = encode_entries(&entries);
        assert!(!encoded.contains("t1"), "{encoded}");
        assert_eq!(decode_entries(&encoded).unwrap(), entries);
        assert_eq!(decode_entries("").unwrap(), Vec::new());
        let hex = to_hex(&token_sha256("t"));
        for bad in [
            "fst_pastedSecret".to_string(),
            format!("{hex} inference"),
            format!("{hex} admin x"),
            format!("{hex}  x"),
            "abc inference x".to_string(),
            format!("{hex} inference fst_pastedSecret"),
            format!("{hex} inference x\n{hex} inference y"),
        ] {
            let e = decode_entries(&bad).unwrap_err();
            assert!(!e.contains("pasted") && !e.contains("admin"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_sha256_is_64_hex_digits_and_nothing_else() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_hex32(&hex), Some([0xab; 32]));
        assert_eq!(parse_hex32(&"+a".repeat(32)), None, "a sign is no digit");
        assert_eq!(parse_hex32(&"ab".repeat(31)), None);
        assert_eq!(parse_hex32(&"zz".repeat(32)), None);
    }
}
