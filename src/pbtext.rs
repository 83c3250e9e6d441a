//! Protobuf's text format, as TF Serving's configuration files use it
//! (`models.config`'s `ModelServerConfig` in `crate::model_config_list`, the
//! batching parameters and monitoring config in `crate::tfs_flags`): a tokenizer, a
//! parser into a tree of named fields (each with its line, for messages), and the
//! checks that turn a field into a message, a string or an integer, or name it
//! unknown. No schema: the callers say which fields they take.
//!
//! The text format's rules for fields: a scalar needs a colon (`name: "a"`); a
//! message may go without (`config { … }`, `config: < … >`); a repeated field may
//! give its values as a list, each value becoming a field of that name
//! (`versions: [1, 2]`, `config [{ … }, { … }]`; without the colon the list holds
//! messages only); `,` or `;` may end a field.
//!
//! Invariant: parsing never panics; anything malformed is an error naming its line.

// ---- protobuf text format: tokens ----

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    /// A number as written (sign included), interpreted by the field that takes it.
    Num(String),
    Sym(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    // A UTF-8 byte-order mark (an editor's) is no text: protobuf skips it too.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line) = (0usize, 1usize);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' | '}' | ':' | '[' | ']' | ',' | ';' | '<' | '>' => {
                out.push(Token {
                    tok: Tok::Sym(c),
                    line,
                });
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let start_line = line;
                // Bytes: an octal or hex escape gives one byte, and the whole must
                // be UTF-8.
                let mut s: Vec<u8> = Vec::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(format!("line {start_line}: unterminated string"));
                    };
                    i += 1;
                    match c {
                        '\n' => return Err(format!("line {start_line}: unterminated string")),
                        c if c == quote => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err(format!("line {start_line}: unterminated string"));
                            };
                            i += 1;
                            // Protobuf's escapes (text_format's CUnescape).
                            let digits = |i: &mut usize, radix: u32, most: usize| {
                                let mut n = 0u32;
                                let mut taken = 0;
                                while taken < most {
                                    match chars.get(*i).and_then(|c| c.to_digit(radix)) {
                                        Some(d) => n = n * radix + d,
                                        None => break,
                                    }
                                    *i += 1;
                                    taken += 1;
                                }
                                (n, taken)
                            };
                            let char_escape = |c: char, s: &mut Vec<u8>| {
                                s.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                            };
                            match e {
                                'n' => s.push(b'\n'),
                                't' => s.push(b'\t'),
                                'r' => s.push(b'\r'),
                                'a' => s.push(0x07),
                                'b' => s.push(0x08),
                                'f' => s.push(0x0c),
                                'v' => s.push(0x0b),
                                '\\' | '\'' | '"' | '?' => s.push(e as u8),
                                '0'..='7' => {
                                    i -= 1;
                                    let (n, _) = digits(&mut i, 8, 3);
                                    let byte = u8::try_from(n).map_err(|_| {
                                        format!("line {line}: octal escape \\{n:o} is above \\377")
                                    })?;
                                    s.push(byte);
                                }
                                'x' | 'X' => match digits(&mut i, 16, 2) {
                                    (_, 0) => {
                                        return Err(format!(
                                            "line {line}: \\x needs a hex digit in a string"
                                        ))
                                    }
                                    (n, _) => s.push(n as u8),
                                },
                                'u' | 'U' => {
                                    let want = if e == 'u' { 4 } else { 8 };
                                    let (n, taken) = digits(&mut i, 16, want);
                                    match char::from_u32(n).filter(|_| taken == want) {
                                        Some(c) => char_escape(c, &mut s),
                                        None => {
                                            return Err(format!(
                                                "line {line}: \\{e} needs {want} hex digits of a \
                                                 Unicode character in a string"
                                            ))
                                        }
                                    }
                                }
                                other => {
                                    return Err(format!(
                                        "line {line}: unknown escape \\{other} in a string"
                                    ))
                                }
                            }
                        }
                        c => s.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                let s = String::from_utf8(s).map_err(|_| {
                    format!("line {start_line}: the string's escapes make no UTF-8 text")
                })?;
                // Adjacent strings concatenate, as in protobuf text format.
                if let Some(Token {
                    tok: Tok::Str(prev),
                    ..
                }) = out.last_mut()
                {
                    prev.push_str(&s);
                } else {
                    out.push(Token {
                        tok: Tok::Str(s),
                        line: start_line,
                    });
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_'))
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Num(chars[start..i].iter().collect()),
                    line,
                });
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(chars[start..i].iter().collect()),
                    line,
                });
            }
            other => return Err(format!("line {line}: unexpected character {other:?}")),
        }
    }
    Ok(out)
}

// ---- protobuf text format: a generic tree ----

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(Tok),
    Message(Vec<Field>),
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) value: Value,
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Deepest nesting accepted, so a hostile file cannot overflow the stack.
const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn line(&self) -> usize {
        self.peek()
            .or(self.tokens.last())
            .map(|t| t.line)
            .unwrap_or(1)
    }

    /// Fields until `close` (or the end of input when `None`).
    fn fields(&mut self, close: Option<char>) -> Result<Vec<Field>, String> {
        self.fields_at(close, 0)
    }

    fn fields_at(&mut self, close: Option<char>, depth: usize) -> Result<Vec<Field>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("line {}: nested too deeply", self.line()));
        }
        let mut fields = Vec::new();
        loop {
            let Some(token) = self.next() else {
                return match close {
                    None => Ok(fields),
                    Some(c) => Err(format!("unexpected end of file: missing {c:?}")),
                };
            };
            let name = match token.tok {
                Tok::Sym(c) if Some(c) == close => return Ok(fields),
                Tok::Ident(name) => name,
                other => {
                    return Err(format!(
                        "line {}: expected a field name, found {}",
                        token.line,
                        describe(&other)
                    ))
                }
            };
            let has_colon = matches!(
                self.peek(),
                Some(Token {
                    tok: Tok::Sym(':'),
                    ..
                })
            );
            if has_colon {
                self.pos += 1;
            }
            let line = token.line;
            match self.peek().map(|t| t.tok.clone()) {
                // A repeated field's values in a list. Without the colon the field
                // is a message field (`config [{ … }, { … }]`), so its list holds
                // messages only; with it, scalars or messages.
                Some(Tok::Sym('[')) => {
                    self.pos += 1;
                    if matches!(
                        self.peek(),
                        Some(Token {
                            tok: Tok::Sym(']'),
                            ..
                        })
                    ) {
                        self.pos += 1;
                    } else {
                        loop {
                            if !has_colon && self.peek().is_some() && !self.at_message() {
                                return Err(format!(
                                    "line {}: expected ':' after field {name:?} (only a list of messages may follow a field name without one)",
                                    self.line()
                                ));
                            }
                            let value = self.value(depth)?;
                            fields.push(Field {
                                name: name.clone(),
                                line,
                                value,
                            });
                            match self.next().map(|t| t.tok) {
                                Some(Tok::Sym(',')) => continue,
                                Some(Tok::Sym(']')) => break,
                                _ => return Err(format!("line {line}: expected ',' or ']'")),
                            }
                        }
                    }
                }
                // A message field: the colon before its value is optional.
                Some(Tok::Sym('{' | '<')) => {
                    let value = self.value(depth)?;
                    fields.push(Field { name, line, value });
                }
                Some(_) if has_colon => {
                    let value = self.value(depth)?;
                    fields.push(Field { name, line, value });
                }
                _ => {
                    return Err(format!(
                        "line {line}: expected ':', '{{' or '[' after field {name:?}"
                    ))
                }
            }
            if matches!(
                self.peek(),
                Some(Token {
                    tok: Tok::Sym(',' | ';'),
                    ..
                })
            ) {
                self.pos += 1;
            }
        }
    }

    /// Whether a message (`{ … }` or `< … >`) comes next.
    fn at_message(&self) -> bool {
        matches!(
            self.peek(),
            Some(Token {
                tok: Tok::Sym('{' | '<'),
                ..
            })
        )
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        let line = self.line();
        match self.next().map(|t| t.tok) {
            Some(Tok::Sym('{')) => Ok(Value::Message(self.fields_at(Some('}'), depth + 1)?)),
            Some(Tok::Sym('<')) => Ok(Value::Message(self.fields_at(Some('>'), depth + 1)?)),
            Some(t @ (Tok::Str(_) | Tok::Num(_) | Tok::Ident(_))) => Ok(Value::Scalar(t)),
            Some(other) => Err(format!(
                "line {line}: expected a value, found {}",
                describe(&other)
            )),
            None => Err("unexpected end of file: expected a value".into()),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Num(s) => format!("the number {s}"),
        Tok::Sym(c) => format!("{c:?}"),
    }
}

/// Any protobuf text-format document as a tree of fields.
pub(crate) fn parse_text_fields(text: &str) -> Result<Vec<Field>, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, pos: 0 };
    parser.fields(None)
}

// ---- what the fields hold ----

pub(crate) fn message(f: &Field) -> Result<&[Field], String> {
    match &f.value {
        Value::Message(fields) => Ok(fields),
        Value::Scalar(_) => Err(format!(
            "line {}: {} must be a message {{ … }}",
            f.line, f.name
        )),
    }
}

pub(crate) fn string(f: &Field) -> Result<String, String> {
    match &f.value {
        Value::Scalar(Tok::Str(s)) => Ok(s.clone()),
        _ => Err(format!(
            "line {}: {} must be a quoted string",
            f.line, f.name
        )),
    }
}

pub(crate) fn integer(f: &Field) -> Result<u64, String> {
    match &f.value {
        Value::Scalar(Tok::Num(n)) => n.trim_start_matches('+').parse::<u64>().map_err(|_| {
            format!(
                "line {}: {} must be a non-negative integer, not {n}",
                f.line, f.name
            )
        }),
        _ => Err(format!("line {}: {} must be an integer", f.line, f.name)),
    }
}

/// Refuses a second value of a field that is not repeated, as protobuf's text
/// format does ("Non-repeated field … is specified multiple times"); `seen` holds
/// the names met so far in one message.
pub(crate) fn once<'a>(seen: &mut Vec<&'a str>, f: &'a Field) -> Result<(), String> {
    if seen.contains(&f.name.as_str()) {
        return Err(format!(
            "line {}: non-repeated field {:?} is specified multiple times",
            f.line, f.name
        ));
    }
    seen.push(&f.name);
    Ok(())
}

pub(crate) fn unknown(f: &Field, within: &str, known: &[&str]) -> String {
    format!(
        "line {}: unknown field {:?} in {within} (known: {})",
        f.line,
        f.name,
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn the_string(text: &str) -> Result<String, String> {
        let fields = parse_text_fields(&format!("s: {text}"))?;
        string(&fields[0])
    }

    /// Protobuf's escapes, and a leading byte-order mark, read as protobuf reads
    /// them.
    #[test]
    fn escapes_and_a_byte_order_mark() {
        assert_eq!(the_string(r#""\x6dodel""#).unwrap(), "model");
        assert_eq!(the_string(r#""\155odel""#).unwrap(), "model");
        assert_eq!(the_string(r#""\0""#).unwrap(), "\0");
        assert_eq!(the_string(r#""caf\303\251""#).unwrap(), "caf\u{e9}");
        assert_eq!(
            the_string(r#""caf\u00e9 \a\?""#).unwrap(),
            "caf\u{e9} \u{7}?"
        );
        assert!(the_string(r#""\xzz""#).is_err());
        assert!(the_string(r#""\q""#)
            .unwrap_err()
            .contains("unknown escape"));
        assert!(the_string(r#""\377""#).unwrap_err().contains("UTF-8"));
        let fields = parse_text_fields("\u{feff}name: \"a\"").unwrap();
        assert_eq!(fields[0].name, "name");
    }

    /// The field names, values flattened to their text, of a parsed document.
    fn shape(fields: &[Field]) -> String {
        fields
            .iter()
            .map(|f| match &f.value {
                Value::Scalar(Tok::Str(s) | Tok::Num(s) | Tok::Ident(s)) => {
                    format!("{}={s}", f.name)
                }
                Value::Scalar(Tok::Sym(c)) => format!("{}={c}", f.name),
                Value::Message(inner) => format!("{}{{{}}}", f.name, shape(inner)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn parsed(text: &str) -> String {
        shape(&parse_text_fields(text).unwrap_or_else(|e| panic!("{text:?}: {e}")))
    }

    #[test]
    fn message_fields_take_an_optional_colon_and_lists() {
        let want = "m{a=1} m{a=2}";
        for text in [
            "m { a: 1 } m { a: 2 }",
            "m: { a: 1 } m: < a: 2 >",
            "m [{ a: 1 }, { a: 2 }]",
            "m: [{ a: 1 }, < a: 2 >]",
            "m [{ a: 1 }]; m [< a: 2 >],",
            "m [] m [{ a: 1 }, { a: 2 }] m: []",
        ] {
            assert_eq!(parsed(text), want, "{text:?}");
        }
        assert_eq!(parsed("s: [1, 2] t: \"x\""), "s=1 s=2 t=x");
    }

    #[test]
    fn scalar_values_and_lists_need_the_colon() {
        for (text, says) in [
            ("s [1, 2]", "expected ':'"),
            ("m [{ a: 1 }, 2]", "expected ':'"),
            ("s 1", "expected ':', '{' or '['"),
            ("m [{ a: 1 } { a: 2 }]", "expected ',' or ']'"),
            ("m [{ a: 1 },", "end of file"),
        ] {
            let err = parse_text_fields(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
