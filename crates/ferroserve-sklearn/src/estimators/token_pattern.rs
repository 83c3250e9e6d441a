//! A scikit-learn `token_pattern` (a Python `re` pattern) compiled with Python's
//! meaning. Python's `re` and the `regex` crate differ on `\w`, `\s` and `\b`: Python's
//! `\w` is letters, numbers and `_` (`str.isalnum`: categories L* and N*), while the
//! crate's adds marks and some symbols (Ⓐ) and lacks No and Nl (² ½ ①); Python's `\s`
//! adds \x1c-\x1f to White_Space; Python's `\b` is the boundary of its own `\w`. Every
//! pattern is therefore translated into Python's meaning before it is compiled (`\w \W
//! \s \S \d \D \b \B`, in and out of classes, under `(?a)` too; Python's class, `{`,
//! `$`, octal and verbose-mode syntax): the default (`(?u)\b\w\w+\b`) and other
//! `\b\w+\b`-shaped patterns become a plain run `[\p{L}\p{N}_]{n,}`; a pattern with `\b`
//! or lookarounds runs on `fancy-regex`. A construct that cannot be carried over
//! exactly is refused, naming it; [`TokenPattern::findall`] follows Python's scan over
//! empty matches.

use regex::Regex;

use crate::model::PredictError;

/// The default `token_pattern`, matched with Python's `\w` (see the module doc).
pub(super) const DEFAULT_TOKEN_PATTERN: &str = r"(?u)\b\w\w+\b";

/// A `token_pattern` compiled with Python's meaning: by the `regex` crate when the
/// translation needs no lookaround (the fast path), else by `fancy-regex`, which runs
/// the lookarounds by backtracking and the rest through `regex`.
#[derive(Debug)]
pub(super) struct TokenPattern {
    engine: Engine,
    /// Whether the pattern has an alternation or a lazy repeat, where an empty match
    /// may be preferred to a non-empty one at the same place (see `findall`).
    ambiguous_empty: bool,
}

#[derive(Debug)]
enum Engine {
    Plain(Regex),
    Fancy(fancy_regex::Regex),
}

impl TokenPattern {
    /// Compiles a Python `re` pattern (a `str` pattern, as scikit-learn's) so that it
    /// matches what Python's would, or says which construct it cannot carry over.
    pub(super) fn compile(text: &str) -> Result<TokenPattern, String> {
        // The default (`\b\w\w+\b`) translates to a plain run of word characters
        // (`word_run_minimum`), as any word run between boundaries does.
        let translated = translate_python_pattern(text)?;
        let engine = if translated.lookaround {
            fancy_regex::RegexBuilder::new(&translated.pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map(Engine::Fancy)
                .map_err(|e| format!("its translation does not compile: {e}"))?
        } else {
            Regex::new(&translated.pattern)
                .map(Engine::Plain)
                .map_err(|e| format!("its translation does not compile: {e}"))?
        };
        let pattern = TokenPattern {
            engine,
            ambiguous_empty: translated.ambiguous_empty,
        };
        // A pattern that meets the empty match `findall` cannot answer as Python
        // does on ordinary text (`|\w+`, `\w*?`) is refused now, not on (nearly)
        // every request.
        if pattern.ambiguous_empty {
            for probe in ["a", "ab", " ", "a b", "1", "a1 b_2\n"] {
                if pattern.findall(probe, false).is_err() {
                    return Err(format!(
                        "it matches the empty string where Python's re would look for a \
                         longer alternative (on {probe:?}), which cannot be reproduced: \
                         refit with a pattern that cannot match the empty string"
                    ));
                }
            }
        }
        Ok(pattern)
    }

    /// The number of capturing groups (group 0 not counted).
    pub(super) fn groups(&self) -> usize {
        match &self.engine {
            Engine::Plain(r) => r.captures_len() - 1,
            Engine::Fancy(r) => r.captures_len() - 1,
        }
    }

    /// `re.findall`: every match, or its one group's text ("" when it did not take part).
    ///
    /// Python's scan differs from the crates' iterators on empty matches: an empty match
    /// right after a non-empty one is kept, and after an empty match at `p` Python first
    /// tries a non-empty match at `p` (a lower-priority branch), then moves on. The crates
    /// cannot ask for that branch, so a pattern with an alternation (`|`) or a lazy
    /// repeat that meets this case is refused for the text rather than answered
    /// differently; with greedy repeats only, an empty match at `p` means no non-empty
    /// one starts there.
    pub(super) fn findall<'d>(
        &self,
        doc: &'d str,
        group: bool,
    ) -> Result<Vec<&'d str>, PredictError> {
        let fancy_error = |e: fancy_regex::Error| {
            PredictError::InvalidInput(format!("token_pattern cannot be matched on this text: {e}"))
        };
        let mut tokens = Vec::new();
        let mut pos = 0;
        let mut must_advance = false;
        while pos <= doc.len() {
            // (start, end, the token).
            let found: Option<(usize, usize, &'d str)> = match &self.engine {
                Engine::Plain(r) if group => r.captures_at(doc, pos).map(|c| {
                    let m = c.get(0).expect("group 0");
                    (m.start(), m.end(), c.get(1).map_or("", |g| g.as_str()))
                }),
                Engine::Plain(r) => r
                    .find_at(doc, pos)
                    .map(|m| (m.start(), m.end(), m.as_str())),
                Engine::Fancy(r) if group => r
                    .captures_from_pos(doc, pos)
                    .map_err(fancy_error)?
                    .map(|c| {
                        let m = c.get(0).expect("group 0");
                        (m.start(), m.end(), c.get(1).map_or("", |g| g.as_str()))
                    }),
                Engine::Fancy(r) => r
                    .find_from_pos(doc, pos)
                    .map_err(fancy_error)?
                    .map(|m| (m.start(), m.end(), m.as_str())),
            };
            let Some((start, end, token)) = found else {
                break;
            };
            if must_advance && start == pos && end == pos {
                if pos == doc.len() {
                    break;
                }
                if self.ambiguous_empty {
                    return Err(PredictError::InvalidInput(
                        "token_pattern matches the empty string here where Python's re would \
                         look for a longer alternative, which cannot be reproduced; refit with \
                         a pattern that cannot match the empty string"
                            .into(),
                    ));
                }
                pos += doc[pos..].chars().next().map_or(1, char::len_utf8);
                must_advance = false;
                continue;
            }
            tokens.push(token);
            must_advance = start == end;
            pos = end;
        }
        Ok(tokens)
    }
}

/// How many backtracking steps fancy-regex may take on one document. Its default, a
/// million, is reached by a lookaround pattern (`(?<=\s)\w+`) on a run of about a
/// megabyte of word characters that Python matches at once (a base64 blob, minified
/// text); a request's body bounds a document's size, and this bounds the work.
const BACKTRACK_LIMIT: usize = 1_000_000_000;

/// Python's `\w` in a `str` pattern: `str.isalnum()` or `_`, which is exactly the
/// Unicode categories L* and N* and `_` (the numeric-valued letters such as 一 are L*).
/// The crate's `\w` differs: it adds marks and some symbols (Ⓐ) and lacks No and Nl
/// (² ½ ①).
const PY_WORD: &str = r"\p{L}\p{N}_";
const PY_WORD_ASCII: &str = r"0-9A-Za-z_";
/// Python's `\s` (`str.isspace`): Unicode White_Space plus the separators \x1c-\x1f.
const PY_SPACE: &str =
    r"\t-\r\x1C-\x20\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}";
const PY_SPACE_ASCII: &str = r"\t-\r\x20";
/// Python's `\d` (`str.isdecimal`) is Nd, as the crate's.
const PY_DIGIT: &str = r"\p{Nd}";
const PY_DIGIT_ASCII: &str = r"0-9";

/// The flags Python applies at one point of a pattern.
#[derive(Debug, Clone, Copy, Default)]
struct PyFlags {
    ascii: bool,
    ignorecase: bool,
    multiline: bool,
    dotall: bool,
    verbose: bool,
}

/// A translated pattern, whether it needs `fancy-regex`, and whether the Python pattern
/// has an alternation or a lazy repeat.
struct Translated {
    pattern: String,
    lookaround: bool,
    ambiguous_empty: bool,
}

/// The body of the class of a category escape (`\w`, `\S`, ...) and whether it is
/// negated.
fn category(letter: char, ascii: bool) -> (&'static str, bool) {
    let body = match (letter.to_ascii_lowercase(), ascii) {
        ('w', false) => PY_WORD,
        ('w', true) => PY_WORD_ASCII,
        ('s', false) => PY_SPACE,
        ('s', true) => PY_SPACE_ASCII,
        ('d', false) => PY_DIGIT,
        _ => PY_DIGIT_ASCII,
    };
    (body, letter.is_ascii_uppercase())
}

fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    }
}

/// `\b \w+ \b`-shaped patterns (a run of at least `n` word characters between word
/// boundaries) are runs of word characters: `[W]{n,}` needs no lookaround. Returns `n`.
fn word_run_minimum(body: &str) -> Option<usize> {
    let middle = body.strip_prefix(r"\b")?.strip_suffix(r"\b")?;
    let mut rest = middle;
    let mut words: usize = 0;
    while let Some(r) = rest.strip_prefix(r"\w") {
        words += 1;
        rest = r;
    }
    let last = match rest {
        "+" => 1,
        _ => rest
            .strip_prefix('{')?
            .strip_suffix(",}")?
            .parse::<usize>()
            .ok()?,
    };
    let n = words.checked_sub(1)? + last;
    (n >= 1).then_some(n)
}

struct PyTranslator {
    chars: Vec<char>,
    pos: usize,
    out: String,
    flags: PyFlags,
    /// The flags to restore when each open group closes.
    groups: Vec<PyFlags>,
    lookaround: bool,
    ambiguous_empty: bool,
}

/// Translates a Python `re` pattern into the `regex` / `fancy-regex` syntax with
/// Python's meaning, or names the construct that cannot be carried over exactly.
fn translate_python_pattern(src: &str) -> Result<Translated, String> {
    let mut t = PyTranslator {
        chars: src.chars().collect(),
        pos: 0,
        out: String::new(),
        flags: PyFlags::default(),
        groups: Vec::new(),
        lookaround: false,
        ambiguous_empty: false,
    };
    // Global flags: only at the start of a pattern in Python 3.11+.
    while t.peek_str("(?") {
        let Some(end) = t.chars[t.pos + 2..].iter().position(|&c| c == ')') else {
            break;
        };
        let letters: String = t.chars[t.pos + 2..t.pos + 2 + end].iter().collect();
        if letters.is_empty() || !letters.chars().all(|c| c.is_ascii_alphabetic()) {
            break;
        }
        let mut flags = t.flags;
        apply_flags(&mut flags, &letters, "")?;
        t.flags = flags;
        t.pos += 3 + end;
    }
    t.check_flags()?;
    let body_start = t.pos;
    let body: String = t.chars[body_start..].iter().collect();
    if !t.flags.verbose && !t.flags.ignorecase {
        if let Some(n) = word_run_minimum(&body) {
            let (class, _) = category('w', t.flags.ascii);
            return Ok(Translated {
                pattern: format!("[{class}]{{{n},}}"),
                lookaround: false,
                ambiguous_empty: false,
            });
        }
    }
    if t.flags.ignorecase {
        t.out.push_str("(?i)");
    }
    t.sequence()?;
    Ok(Translated {
        pattern: t.out,
        lookaround: t.lookaround,
        ambiguous_empty: t.ambiguous_empty,
    })
}

/// Applies inline flags `on` (and, for a scoped group, `off`) as Python would.
fn apply_flags(flags: &mut PyFlags, on: &str, off: &str) -> Result<(), String> {
    for (letters, value) in [(on, true), (off, false)] {
        for c in letters.chars() {
            match c {
                'i' => flags.ignorecase = value,
                'm' => flags.multiline = value,
                's' => flags.dotall = value,
                'x' => flags.verbose = value,
                'a' if value => flags.ascii = true,
                'u' if value => {}
                'L' => return Err("the flag (?L) (Python refuses it in a str pattern)".into()),
                other => {
                    return Err(format!(
                        "the inline flag {other:?} (Python's are a, i, L, m, s, u, x)"
                    ))
                }
            }
        }
    }
    if on.contains('a') && on.contains('u') {
        return Err("the flags a and u together (Python refuses them)".into());
    }
    Ok(())
}

impl PyTranslator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_str(&self, s: &str) -> bool {
        let want: Vec<char> = s.chars().collect();
        self.chars[self.pos..].starts_with(&want)
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Python folds case in ASCII only under `(?a)` with `(?i)`; the crate folds all of
    /// Unicode (k and K, s and ſ).
    fn check_flags(&self) -> Result<(), String> {
        if self.flags.ascii && self.flags.ignorecase {
            return Err(
                "the flags (?a) and (?i) together (Python then folds ASCII case \
                        only, which the regex crate cannot express)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The class of a category escape, outside a character class: case-insensitive
    /// matching must not widen it (the crate folds U+0345 into `\w` under `(?i)`).
    fn push_category(&mut self, letter: char) {
        let (body, negated) = category(letter, self.flags.ascii);
        let caret = if negated { "^" } else { "" };
        self.out.push_str(&format!("(?-i:[{caret}{body}])"));
    }

    /// `\b` / `\B` with Python's `\w` as lookarounds.
    fn push_boundary(&mut self, negated: bool) {
        let (w, _) = category('w', self.flags.ascii);
        let w = format!("(?-i:[{w}])");
        self.lookaround = true;
        if negated {
            // CPython (before 3.14) never matches `\B` in an empty string.
            self.out.push_str(&format!(
                "(?:(?<={w})(?={w})|(?<!{w})(?!{w})(?:(?<=(?s:.))|(?=(?s:.))))"
            ));
        } else {
            self.out
                .push_str(&format!("(?:(?<={w})(?!{w})|(?<!{w})(?={w}))"));
        }
    }

    fn skip_verbose(&mut self) -> bool {
        match self.peek() {
            Some(' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c') => {
                self.pos += 1;
                true
            }
            Some('#') => {
                while let Some(c) = self.next() {
                    if c == '\n' {
                        break;
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// The pattern from the current position to its end.
    fn sequence(&mut self) -> Result<(), String> {
        while let Some(c) = self.peek() {
            if self.flags.verbose && self.skip_verbose() {
                continue;
            }
            self.pos += 1;
            match c {
                '\\' => self.escape()?,
                '[' => self.class()?,
                '(' => self.open_group()?,
                ')' => {
                    let Some(outer) = self.groups.pop() else {
                        return Err("an unbalanced ')'".into());
                    };
                    self.flags = outer;
                    self.out.push(')');
                }
                '.' if self.flags.dotall => self.out.push_str("(?s:.)"),
                '.' => self.out.push_str(r"[^\n]"),
                '^' if self.flags.multiline => self.out.push_str("(?m:^)"),
                '^' => self.out.push_str(r"\A"),
                '$' if self.flags.multiline => self.out.push_str("(?m:$)"),
                '$' => {
                    // Python's `$`: the end, or before a newline that ends the text.
                    self.lookaround = true;
                    self.out.push_str(r"(?:\z|(?=\n\z))");
                }
                '*' | '+' | '?' => {
                    self.out.push(c);
                    self.after_repeat()?;
                }
                '{' => self.brace()?,
                '|' => {
                    self.ambiguous_empty = true;
                    self.out.push('|');
                }
                other => push_literal(&mut self.out, other),
            }
        }
        if !self.groups.is_empty() {
            return Err("an unclosed '('".into());
        }
        Ok(())
    }

    /// After a repeat: lazy `?` passes; Python 3.11's possessive `+` is refused.
    fn after_repeat(&mut self) -> Result<(), String> {
        match self.peek() {
            Some('?') => {
                self.pos += 1;
                self.ambiguous_empty = true;
                self.out.push('?');
            }
            Some('+') => return Err("a possessive repeat (`*+`, `++`, `?+`, `{m,n}+`)".into()),
            _ => {}
        }
        Ok(())
    }

    /// `{m,n}` when it is a repeat in Python's grammar, else a literal `{`.
    fn brace(&mut self) -> Result<(), String> {
        let start = self.pos;
        if self.peek() == Some('}') {
            push_literal(&mut self.out, '{');
            return Ok(());
        }
        let digits = |t: &mut PyTranslator| {
            let mut s = String::new();
            while let Some(d) = t.peek().filter(char::is_ascii_digit) {
                s.push(d);
                t.pos += 1;
            }
            s
        };
        let lo = digits(self);
        let (comma, hi) = if self.peek() == Some(',') {
            self.pos += 1;
            (true, digits(self))
        } else {
            (false, String::new())
        };
        if self.peek() != Some('}') {
            self.pos = start;
            push_literal(&mut self.out, '{');
            return Ok(());
        }
        self.pos += 1;
        let lo = if lo.is_empty() { "0".to_string() } else { lo };
        match (comma, hi.is_empty()) {
            (false, _) => self.out.push_str(&format!("{{{lo}}}")),
            (true, true) => self.out.push_str(&format!("{{{lo},}}")),
            (true, false) => self.out.push_str(&format!("{{{lo},{hi}}}")),
        }
        self.after_repeat()
    }

    fn open_group(&mut self) -> Result<(), String> {
        self.groups.push(self.flags);
        if self.peek() != Some('?') {
            self.out.push('(');
            return Ok(());
        }
        self.pos += 1;
        let rest: String = self.chars[self.pos..].iter().take(3).collect();
        if rest.starts_with(':') {
            self.pos += 1;
            self.out.push_str("(?:");
        } else if rest.starts_with("P<") {
            // A named group: findall only counts groups, so the name is not carried.
            let end = self.chars[self.pos..]
                .iter()
                .position(|&c| c == '>')
                .ok_or("an unterminated group name")?;
            self.pos += end + 1;
            self.out.push('(');
        } else if rest.starts_with("P=") {
            return Err("a backreference (?P=name)".into());
        } else if rest.starts_with('#') {
            let end = self.chars[self.pos..]
                .iter()
                .position(|&c| c == ')')
                .ok_or("an unterminated comment")?;
            self.pos += end + 1;
            self.groups.pop();
        } else if let Some(marker) = ["=", "!", "<=", "<!", ">"]
            .into_iter()
            .find(|m| rest.starts_with(m))
        {
            // Lookarounds and atomic groups: fancy-regex runs them as Python does.
            self.lookaround = true;
            self.pos += marker.len();
            self.out.push_str("(?");
            self.out.push_str(marker);
        } else if rest.starts_with('(') {
            return Err("a conditional group (?(id)yes|no)".into());
        } else {
            // Scoped flags `(?aimsx-imsx:...)`; global ones are only allowed first.
            let end = self.chars[self.pos..]
                .iter()
                .position(|&c| c == ':' || c == ')')
                .ok_or("an unterminated group")?;
            let spec: String = self.chars[self.pos..self.pos + end].iter().collect();
            if self.chars[self.pos + end] == ')' {
                return Err(format!(
                    "the flags (?{spec}) after the start (Python allows global flags only \
                     at the start)"
                ));
            }
            if spec.is_empty() || !spec.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
                return Err(format!("the group syntax (?{spec}:"));
            }
            let (on, off) = spec.split_once('-').unwrap_or((&spec, ""));
            if off.chars().any(|c| matches!(c, 'a' | 'u' | 'L')) {
                return Err(format!(
                    "the flags (?{spec}: (Python cannot turn a, u or L off)"
                ));
            }
            let mut flags = self.flags;
            apply_flags(&mut flags, on, off)?;
            self.flags = flags;
            self.check_flags()?;
            self.pos += end + 1;
            let i = if self.flags.ignorecase { "i" } else { "-i" };
            self.out.push_str(&format!("(?{i}:"));
        }
        Ok(())
    }

    /// Reads `n` hex digits of `\x`, `\u` or `\U`.
    fn hex(&mut self, n: usize, escape: char) -> Result<char, String> {
        let digits: String = self.chars[self.pos..].iter().take(n).collect();
        if digits.chars().count() != n || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("a bad escape \\{escape}{digits}"));
        }
        self.pos += n;
        u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("a bad escape \\{escape}{digits}"))
    }

    /// Octal digits after a first one already read (up to three in all).
    fn octal(&mut self, first: char) -> Result<char, String> {
        let mut value = first.to_digit(8).unwrap_or(0);
        let mut n = 1;
        while n < 3 {
            match self.peek().and_then(|c| c.to_digit(8)) {
                Some(d) => {
                    value = value * 8 + d;
                    self.pos += 1;
                    n += 1;
                }
                None => break,
            }
        }
        if value > 0o377 {
            return Err(format!("an octal escape above \\377 (\\{value:o})"));
        }
        Ok(char::from_u32(value).expect("below 256"))
    }

    /// A literal escape valid both in and out of a class, or `None` when `c` is not one.
    fn literal_escape(&mut self, c: char) -> Result<Option<char>, String> {
        Ok(Some(match c {
            'a' => '\x07',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            'x' => self.hex(2, 'x')?,
            'u' => self.hex(4, 'u')?,
            'U' => self.hex(8, 'U')?,
            'N' => return Err("a named character escape \\N{...}".into()),
            '0' => self.octal('0')?,
            c if c.is_ascii_alphanumeric() => return Ok(None),
            c => c,
        }))
    }

    fn escape(&mut self) -> Result<(), String> {
        let c = self.next().ok_or("a trailing backslash")?;
        match c {
            'w' | 'W' | 's' | 'S' | 'd' | 'D' => self.push_category(c),
            'b' => self.push_boundary(false),
            'B' => self.push_boundary(true),
            'A' => self.out.push_str(r"\A"),
            'Z' => self.out.push_str(r"\z"),
            '1'..='9' => {
                let three_octal = c <= '7'
                    && self.chars[self.pos..]
                        .iter()
                        .take(2)
                        .filter(|d| ('0'..='7').contains(d))
                        .count()
                        == 2;
                if !three_octal {
                    return Err(format!("a backreference \\{c}"));
                }
                let l = self.octal(c)?;
                push_literal(&mut self.out, l);
            }
            c => match self.literal_escape(c)? {
                Some(l) => push_literal(&mut self.out, l),
                None => return Err(format!("the escape \\{c} (Python refuses it)")),
            },
        }
        Ok(())
    }

    /// One class item: a literal, or a category escape (`Err` of its letter).
    fn class_item(&mut self, c: char) -> Result<Result<char, char>, String> {
        if c != '\\' {
            return Ok(Ok(c));
        }
        let e = self.next().ok_or("an unterminated character class")?;
        match e {
            'w' | 'W' | 's' | 'S' | 'd' | 'D' => Ok(Err(e)),
            'b' => Ok(Ok('\x08')),
            '1'..='7' => self.octal(e).map(Ok),
            _ => match self.literal_escape(e)? {
                Some(l) => Ok(Ok(l)),
                None => Err(format!("the escape \\{e} in a character class")),
            },
        }
    }

    /// `[...]` as Python reads it: a leading `]` is literal, `[`, `&&`, `--`, `~~` are
    /// literal (the crate would read nested classes and set operations), every literal
    /// is written as `\x{..}`, and category escapes become nested classes.
    fn class(&mut self) -> Result<(), String> {
        self.out.push('[');
        if self.peek() == Some('^') {
            self.pos += 1;
            self.out.push('^');
        }
        let start = self.pos;
        loop {
            let c = self.next().ok_or("an unterminated character class")?;
            if c == ']' && self.pos - 1 != start {
                break;
            }
            let item = self.class_item(c)?;
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some() {
                self.pos += 1;
                let that = self.next().expect("checked");
                if that == ']' {
                    self.push_class_item(item)?;
                    push_literal(&mut self.out, '-');
                    break;
                }
                let end = self.class_item(that)?;
                match (item, end) {
                    (Ok(lo), Ok(hi)) if lo <= hi => {
                        push_literal(&mut self.out, lo);
                        self.out.push('-');
                        push_literal(&mut self.out, hi);
                    }
                    _ => return Err("a bad character range".into()),
                }
            } else {
                self.push_class_item(item)?;
            }
        }
        self.out.push(']');
        Ok(())
    }

    fn push_class_item(&mut self, item: Result<char, char>) -> Result<(), String> {
        match item {
            Ok(c) => push_literal(&mut self.out, c),
            Err(letter) => {
                if self.flags.ignorecase && letter.eq_ignore_ascii_case(&'w') {
                    // Inside a class the crate folds case over the nested class too,
                    // adding U+0345 to `\w`; Python does not.
                    return Err(format!(
                        "\\{letter} inside a character class under (?i) (Python's \\w does \
                         not fold case there)"
                    ));
                }
                let (body, negated) = category(letter, self.flags.ascii);
                let caret = if negated { "^" } else { "" };
                self.out.push_str(&format!("[{caret}{body}]"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
