use super::*;

/// Custom token patterns tokenize as Python's `re.findall` does (one group: the
/// group's text), on text where Python's `\w`, `\s`, `\b` and class syntax differ
/// from the regex crate's.
#[test]
fn token_patterns_match_python_findall() {
    let mut failures = Vec::new();
    for (pattern, text, want) in PYTHON_FINDALL {
        let compiled =
            TokenPattern::compile(pattern).unwrap_or_else(|e| panic!("{pattern:?} refused: {e}"));
        let got = compiled.findall(text, compiled.groups() == 1).unwrap();
        if got != *want {
            failures.push(format!(
                "{pattern:?} on {text:?}: {got:?} != Python's {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn word_runs_between_boundaries_need_no_lookaround() {
    for (pattern, min) in [
        (r"\b\w+\b", Some(1)),
        (r"\b\w\w+\b", Some(2)),
        (r"\b\w{3,}\b", Some(3)),
        (r"\b\w\w{2,}\b", Some(3)),
        (r"\b\w*\b", None),
        (r"\b\w{2,4}\b", None),
        (r"\b\w+", None),
    ] {
        assert_eq!(word_run_minimum(pattern), min, "{pattern}");
    }
    assert!(matches!(
        TokenPattern::compile(r"(?u)\b\w+\b"),
        Ok(TokenPattern {
            engine: Engine::Plain(_),
            ..
        })
    ));
    assert!(matches!(
        TokenPattern::compile(DEFAULT_TOKEN_PATTERN),
        Ok(TokenPattern {
            engine: Engine::Plain(_),
            ..
        })
    ));
    let default = translate_python_pattern(DEFAULT_TOKEN_PATTERN).unwrap();
    assert_eq!(default.pattern, format!("[{PY_WORD}]{{2,}}"));
    assert!(!default.ambiguous_empty);
    assert!(matches!(
        TokenPattern::compile(r"\b[a-z]+\b"),
        Ok(TokenPattern {
            engine: Engine::Fancy(_),
            ..
        })
    ));
}

/// Where Python would try a lower-priority non-empty match after an empty one, the
/// text is refused rather than tokenized differently.
#[test]
fn an_empty_match_python_would_extend_is_refused() {
    // At load, when ordinary text meets it (it loaded, then failed nearly every
    // request).
    for pattern in [r"\w*?", r"|\w+"] {
        let err = TokenPattern::compile(pattern)
            .err()
            .unwrap_or_else(|| panic!("{pattern:?} compiled, but must be refused"));
        assert!(err.contains("empty string"), "{pattern:?}: {err}");
    }
    // At prediction, on a text that meets it where the load's probes did not:
    // Python's `re.findall(r"(?=@)|@\w+", "a @b")` is `['', '@b']` (after the
    // empty match at 2 it tries `@\w+` there), which the crates cannot ask for.
    let pattern = TokenPattern::compile(r"(?=@)|@\w+").unwrap();
    assert_eq!(pattern.findall("a b", false).unwrap(), Vec::<&str>::new());
    match pattern.findall("a @b", false) {
        Err(PredictError::InvalidInput(e)) => assert!(e.contains("empty string"), "{e}"),
        other => panic!("must be refused: {other:?}"),
    }
}

#[test]
fn a_lookaround_pattern_matches_a_megabyte_long_word() {
    let run = "a".repeat(1_200_000);
    let text = format!(" {run}");
    // (A lookahead after such a run, `\w+(?=\W)`, still meets fancy-regex's
    // fixed stack bound: an error for that text, never a different answer.)
    for pattern in [r"(?<=\s)\w+", r"(?<!\S)\w+"] {
        let compiled = TokenPattern::compile(pattern).unwrap();
        let tokens = compiled.findall(&text, false);
        assert_eq!(tokens.unwrap(), vec![run.as_str()], "{pattern:?}");
    }
}

/// Python constructs that cannot be carried over exactly are refused by name.
#[test]
fn untranslatable_patterns_name_the_construct() {
    for (pattern, construct) in [
        (r"(\w)\1", "backreference"),
        (r"(?P<x>\w)(?P=x)", "backreference"),
        (r"(?ai)\w+", "(?a) and (?i)"),
        (r"\w*+", "possessive"),
        (r"\N{DIGIT ONE}", "\\N{...}"),
        (r"(?L)\w+", "(?L)"),
        (r"(?i)[\w-]+", "under (?i)"),
        (r"(a)?(?(1)b|c)", "conditional"),
        (r"\w+(?i)", "only at the start"),
        (r"\q", "\\q"),
    ] {
        match TokenPattern::compile(pattern) {
            Ok(_) => panic!("{pattern:?} compiled, but must be refused"),
            Err(e) => assert!(e.contains(construct), "{pattern:?}: {e}"),
        }
    }
}

/// Made with `re.findall(pattern, text)` (Python 3.11.7, Unicode 14.0).
const PYTHON_FINDALL: &[(&str, &str, &[&str])] = &[
    (
        "(?u)\\b\\w+\\b",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "½", "cup", "m²", "①", "CO₂", "cafe", "x", "y", "٣٤", "team", "won", "a_b",
            "2nd", "31st",
        ],
    ),
    (
        "(?u)\\b\\w+\\b",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "K", "k", "KK", "ſs", "ABC", "line2", "end"],
    ),
    (
        "(?u)\\b\\w+\\b",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha", "A"],
    ),
    ("(?u)\\b\\w+\\b", "", &[]),
    (
        "\\b\\w\\w+\\b",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "cup", "m²", "CO₂", "cafe", "٣٤", "team", "won", "a_b", "2nd", "31st",
        ],
    ),
    (
        "\\b\\w\\w+\\b",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "KK", "ſs", "ABC", "line2", "end"],
    ),
    (
        "\\b\\w\\w+\\b",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["alpha"],
    ),
    ("\\b\\w\\w+\\b", "", &[]),
    (
        "[^\\s]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add",
            "½",
            "cup",
            "m²",
            "①",
            "CO₂",
            "Ⓐ",
            "cafe\u{301}",
            "x\u{345}y",
            "٣٤",
            "team",
            "won",
            "a_b",
            "2nd",
            "31st",
        ],
    ),
    (
        "[^\\s]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Kelvin",
            "K",
            "k",
            "KK",
            "ſs",
            "\u{8}ABC\u{8}",
            "line2",
            "end",
        ],
    ),
    (
        "[^\\s]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a--b", "]a-", "x{", "[x]", "a&&b", ":alpha:", "A\u{0}"],
    ),
    ("[^\\s]+", "", &[]),
    (
        "\\S+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add",
            "½",
            "cup",
            "m²",
            "①",
            "CO₂",
            "Ⓐ",
            "cafe\u{301}",
            "x\u{345}y",
            "٣٤",
            "team",
            "won",
            "a_b",
            "2nd",
            "31st",
        ],
    ),
    (
        "\\S+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Kelvin",
            "K",
            "k",
            "KK",
            "ſs",
            "\u{8}ABC\u{8}",
            "line2",
            "end",
        ],
    ),
    (
        "\\S+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a--b", "]a-", "x{", "[x]", "a&&b", ":alpha:", "A\u{0}"],
    ),
    ("\\S+", "", &[]),
    (
        "[^\\W\\d_]+|[\\d]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "½", "cup", "m²", "①", "CO₂", "cafe", "x", "y", "٣٤", "team", "won", "a", "b",
            "2", "nd", "31", "st",
        ],
    ),
    (
        "[^\\W\\d_]+|[\\d]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "K", "k", "KK", "ſs", "ABC", "line", "2", "end"],
    ),
    (
        "[^\\W\\d_]+|[\\d]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha", "A"],
    ),
    ("[^\\W\\d_]+|[\\d]+", "", &[]),
    (
        "\\b[a-z]+\\b",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["add", "cup", "cafe", "x", "y", "team", "won"],
    ),
    (
        "\\b[a-z]+\\b",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["k", "end"],
    ),
    (
        "\\b[a-z]+\\b",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha"],
    ),
    ("\\b[a-z]+\\b", "", &[]),
    (
        "(?a)\\b[a-z]+\\b|\\d+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "cup", "m", "cafe", "x", "y", "team", "won", "2", "31",
        ],
    ),
    (
        "(?a)\\b[a-z]+\\b|\\d+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["k", "s", "2", "end"],
    ),
    (
        "(?a)\\b[a-z]+\\b|\\d+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha"],
    ),
    ("(?a)\\b[a-z]+\\b|\\d+", "", &[]),
    (
        "(?a)\\w+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "cup", "m", "CO", "cafe", "x", "y", "team", "won", "a_b", "2nd", "31st",
        ],
    ),
    (
        "(?a)\\w+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "k", "KK", "s", "ABC", "line2", "end"],
    ),
    (
        "(?a)\\w+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha", "A"],
    ),
    ("(?a)\\w+", "", &[]),
    (
        "(?a)[^\\s]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add",
            "½",
            "cup",
            "m²",
            "①",
            "CO₂",
            "Ⓐ",
            "cafe\u{301}",
            "x\u{345}y",
            "٣٤",
            "team\u{1c}won",
            "a_b",
            "2nd",
            "31st",
        ],
    ),
    (
        "(?a)[^\\s]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Kelvin",
            "K",
            "k",
            "KK",
            "ſs",
            "\u{8}ABC\u{8}",
            "line2",
            "end",
        ],
    ),
    (
        "(?a)[^\\s]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a--b", "]a-", "x{", "[x]", "a&&b", ":alpha:", "A\u{0}"],
    ),
    ("(?a)[^\\s]+", "", &[]),
    (
        "\\B\\w",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "d", "d", "u", "p", "²", "O", "₂", "a", "f", "e", "٤", "e", "a", "m", "o", "n", "_",
            "b", "n", "d", "1", "s", "t",
        ],
    ),
    (
        "\\B\\w",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "e", "l", "v", "i", "n", "K", "s", "B", "C", "i", "n", "e", "2", "n", "d",
        ],
    ),
    (
        "\\B\\w",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["l", "p", "h", "a"],
    ),
    ("\\B\\w", "", &[]),
    (
        "\\w+\\B",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "ad", "cu", "m", "CO", "caf", "٣", "tea", "wo", "a_", "2n", "31s",
        ],
    ),
    (
        "\\w+\\B",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvi", "K", "ſ", "AB", "line", "en"],
    ),
    ("\\w+\\B", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &["alph"]),
    ("\\w+\\B", "", &[]),
    (
        "(?i)[A-Z]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "cup", "m", "CO", "cafe", "x", "y", "team", "won", "a", "b", "nd", "st",
        ],
    ),
    (
        "(?i)[A-Z]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "K", "k", "KK", "ſs", "ABC", "line", "end"],
    ),
    (
        "(?i)[A-Z]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha", "A"],
    ),
    ("(?i)[A-Z]+", "", &[]),
    (
        "(?x) \\w+  # words\\n | [½]",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "½", "cup", "m²", "①", "CO₂", "cafe", "x", "y", "٣٤", "team", "won", "a_b",
            "2nd", "31st",
        ],
    ),
    (
        "(?x) \\w+  # words\\n | [½]",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "K", "k", "KK", "ſs", "ABC", "line2", "end"],
    ),
    (
        "(?x) \\w+  # words\\n | [½]",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha", "A"],
    ),
    ("(?x) \\w+  # words\\n | [½]", "", &[]),
    (
        "(?i:K)\\w",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "(?i:K)\\w",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Ke", "KK"],
    ),
    ("(?i:K)\\w", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("(?i:K)\\w", "", &[]),
    (
        "(\\w+)-\\w+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "(\\w+)-\\w+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    ("(\\w+)-\\w+", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("(\\w+)-\\w+", "", &[]),
    (
        "(?P<w>\\d+)(?:st|nd)",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["2", "31"],
    ),
    (
        "(?P<w>\\d+)(?:st|nd)",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    (
        "(?P<w>\\d+)(?:st|nd)",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[],
    ),
    ("(?P<w>\\d+)(?:st|nd)", "", &[]),
    (
        "[\\]a-]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["a", "a", "a", "a"],
    ),
    (
        "[\\]a-]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    (
        "[\\]a-]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a--", "]a-", "]", "a", "a", "a"],
    ),
    ("[\\]a-]+", "", &[]),
    (
        "[[:alpha:]]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "[[:alpha:]]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    ("[[:alpha:]]+", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("[[:alpha:]]+", "", &[]),
    (
        "a{,2}",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "a", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
            "", "a", "", "", "", "", "", "", "", "", "", "", "", "", "", "a", "", "", "", "", "",
            "", "a", "", "", "", "", "", "", "", "", "", "", "", "",
        ],
    ),
    (
        "a{,2}",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
            "", "", "", "", "", "", "", "", "", "", "", "", "", "",
        ],
    ),
    (
        "a{,2}",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[
            "a", "", "", "", "", "", "a", "", "", "", "", "", "", "", "", "", "a", "", "", "", "",
            "", "a", "", "", "", "a", "", "", "", "", "",
        ],
    ),
    ("a{,2}", "", &[""]),
    (
        "x{",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "x{",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    ("x{", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &["x{"]),
    ("x{", "", &[]),
    (
        "\\w+$",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["31st"],
    ),
    (
        "\\w+$",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["end"],
    ),
    ("\\w+$", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("\\w+$", "", &[]),
    (
        "(?m)\\w+$",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["31st"],
    ),
    (
        "(?m)\\w+$",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["end"],
    ),
    ("(?m)\\w+$", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("(?m)\\w+$", "", &[]),
    (
        "^\\w+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["add"],
    ),
    (
        "^\\w+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin"],
    ),
    ("^\\w+", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &["a"]),
    ("^\\w+", "", &[]),
    (
        "(?m)^\\w+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["add"],
    ),
    (
        "(?m)^\\w+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin"],
    ),
    ("(?m)^\\w+", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &["a"]),
    ("(?m)^\\w+", "", &[]),
    (
        "(?s).{2}",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "ad", "d ", "½ ", "cu", "p ", "m²", " ①", " C", "O₂", " Ⓐ", " c", "af", "e\u{301}",
            " x", "\u{345}y", " ٣", "٤ ", "te", "am", "\u{1c}w", "on", " a", "_b", " 2", "nd",
            " 3", "1s",
        ],
    ),
    (
        "(?s).{2}",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Ke", "lv", "in", " K", " k", " K", "K ", "ſs", " \u{8}", "AB", "C\u{8}", " \u{a}",
            " l", "in", "e2", " e", "nd",
        ],
    ),
    (
        "(?s).{2}",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[
            "a-", "-b", " ]", "a-", " x", "{ ", "[x", "] ", "a&", "&b", " :", "al", "ph", "a:",
            " A",
        ],
    ),
    ("(?s).{2}", "", &[]),
    (
        ".{2}",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "ad", "d ", "½ ", "cu", "p ", "m²", " ①", " C", "O₂", " Ⓐ", " c", "af", "e\u{301}",
            " x", "\u{345}y", " ٣", "٤ ", "te", "am", "\u{1c}w", "on", " a", "_b", " 2", "nd",
            " 3", "1s",
        ],
    ),
    (
        ".{2}",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Ke", "lv", "in", " K", " k", " K", "K ", "ſs", " \u{8}", "AB", "C\u{8}", " l", "in",
            "e2", " e", "nd",
        ],
    ),
    (
        ".{2}",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[
            "a-", "-b", " ]", "a-", " x", "{ ", "[x", "] ", "a&", "&b", " :", "al", "ph", "a:",
            " A",
        ],
    ),
    (".{2}", "", &[]),
    (
        "\\d\\D",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["٤ ", "2n", "1s"],
    ),
    (
        "\\d\\D",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["2 "],
    ),
    ("\\d\\D", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("\\d\\D", "", &[]),
    (
        "[\\b\\x41-\\x43]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["C"],
    ),
    (
        "[\\b\\x41-\\x43]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["\u{8}ABC\u{8}"],
    ),
    (
        "[\\b\\x41-\\x43]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["A"],
    ),
    ("[\\b\\x41-\\x43]+", "", &[]),
    (
        "\\101\\0",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "\\101\\0",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    (
        "\\101\\0",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["A\u{0}"],
    ),
    ("\\101\\0", "", &[]),
    (
        "(?<=\\s)\\w+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "½", "cup", "m²", "①", "CO₂", "cafe", "x", "٣٤", "team", "won", "a_b", "2nd", "31st",
        ],
    ),
    (
        "(?<=\\s)\\w+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["K", "k", "KK", "ſs", "line2", "end"],
    ),
    (
        "(?<=\\s)\\w+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["x", "a", "A"],
    ),
    ("(?<=\\s)\\w+", "", &[]),
    (
        "\\w+(?=\\W)",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "½", "cup", "m²", "①", "CO₂", "cafe", "x", "y", "٣٤", "team", "won", "a_b",
            "2nd",
        ],
    ),
    (
        "\\w+(?=\\W)",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &["Kelvin", "K", "k", "KK", "ſs", "ABC", "line2", "end"],
    ),
    (
        "\\w+(?=\\W)",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "x", "x", "a", "b", "alpha", "A"],
    ),
    ("\\w+(?=\\W)", "", &[]),
    (
        "[+--]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "[+--]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    (
        "[+--]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["--", "-"],
    ),
    ("[+--]+", "", &[]),
    (
        "[a&&b]+",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["a", "a", "a", "a", "b"],
    ),
    (
        "[a&&b]+",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    (
        "[a&&b]+",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &["a", "b", "a", "a&&b", "a", "a"],
    ),
    ("[a&&b]+", "", &[]),
    (
        "\\w+\\Z",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["31st"],
    ),
    (
        "\\w+\\Z",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    ("\\w+\\Z", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("\\w+\\Z", "", &[]),
    (
        "\\x1c\\S",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["\u{1c}w"],
    ),
    (
        "\\x1c\\S",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    ("\\x1c\\S", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("\\x1c\\S", "", &[]),
    (
        "(?>\\w+)x",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[],
    ),
    (
        "(?>\\w+)x",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    ("(?>\\w+)x", "a--b ]a- x{ [x] a&&b :alpha: A\u{0}", &[]),
    ("(?>\\w+)x", "", &[]),
    (
        "[\\s\\S]",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "a", "d", "d", " ", "½", " ", "c", "u", "p", " ", "m", "²", " ", "①", " ", "C", "O",
            "₂", " ", "Ⓐ", " ", "c", "a", "f", "e", "\u{301}", " ", "x", "\u{345}", "y", " ", "٣",
            "٤", " ", "t", "e", "a", "m", "\u{1c}", "w", "o", "n", " ", "a", "_", "b", " ", "2",
            "n", "d", " ", "3", "1", "s", "t",
        ],
    ),
    (
        "[\\s\\S]",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "K", "e", "l", "v", "i", "n", " ", "K", " ", "k", " ", "K", "K", " ", "ſ", "s", " ",
            "\u{8}", "A", "B", "C", "\u{8}", " ", "\u{a}", " ", "l", "i", "n", "e", "2", " ", "e",
            "n", "d", "\u{a}",
        ],
    ),
    (
        "[\\s\\S]",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[
            "a", "-", "-", "b", " ", "]", "a", "-", " ", "x", "{", " ", "[", "x", "]", " ", "a",
            "&", "&", "b", " ", ":", "a", "l", "p", "h", "a", ":", " ", "A", "\u{0}",
        ],
    ),
    ("[\\s\\S]", "", &[]),
    (
        "\\b\\w*\\b",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "", "½", "", "cup", "", "m²", "", "①", "", "CO₂", "", "cafe", "", "x", "", "y",
            "", "٣٤", "", "team", "", "won", "", "a_b", "", "2nd", "", "31st", "",
        ],
    ),
    (
        "\\b\\w*\\b",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Kelvin", "", "K", "", "k", "", "KK", "", "ſs", "", "ABC", "", "line2", "", "end", "",
        ],
    ),
    (
        "\\b\\w*\\b",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[
            "a", "", "b", "", "a", "", "x", "", "x", "", "a", "", "b", "", "alpha", "", "A", "",
        ],
    ),
    ("\\b\\w*\\b", "", &[]),
    (
        "\\w*",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &[
            "add", "", "½", "", "cup", "", "m²", "", "①", "", "CO₂", "", "", "", "cafe", "", "",
            "x", "", "y", "", "٣٤", "", "team", "", "won", "", "a_b", "", "2nd", "", "31st", "",
        ],
    ),
    (
        "\\w*",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[
            "Kelvin", "", "K", "", "k", "", "KK", "", "ſs", "", "", "ABC", "", "", "", "", "line2",
            "", "end", "", "",
        ],
    ),
    (
        "\\w*",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[
            "a", "", "", "b", "", "", "a", "", "", "x", "", "", "", "x", "", "", "a", "", "", "b",
            "", "", "alpha", "", "", "A", "", "",
        ],
    ),
    ("\\w*", "", &[""]),
    (
        "\\u00bd|\\U000024B6",
        "add ½ cup m² ① CO₂ Ⓐ cafe\u{301} x\u{345}y ٣٤ team\u{1c}won a_b 2nd 31st",
        &["½", "Ⓐ"],
    ),
    (
        "\\u00bd|\\U000024B6",
        "Kelvin K k KK ſs \u{8}ABC\u{8} \u{a} line2 end\u{a}",
        &[],
    ),
    (
        "\\u00bd|\\U000024B6",
        "a--b ]a- x{ [x] a&&b :alpha: A\u{0}",
        &[],
    ),
    ("\\u00bd|\\U000024B6", "", &[]),
];
