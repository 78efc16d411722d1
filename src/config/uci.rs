//! The UCI grammar: text of `/etc/config/*` → sections with options, each with its line number.
//!
//! This follows libuci's file parser where it matters for hand-written files:
//! - statements are `package NAME`, `config TYPE [NAME]`, `option NAME VALUE`, `list NAME VALUE`;
//!   they end at a newline or at an unquoted `;`;
//! - a token is unquoted, `'single'` (everything literal) or `"double"` quoted (a backslash takes
//!   the next character literally); adjacent parts concatenate, so `'a'"b"c` is `abc` and UCI's
//!   own escape for a quote inside single quotes, `'it'\''s'`, reads `it's`;
//! - outside quotes a backslash also takes the next character literally, and a backslash at the
//!   end of a line joins the next line;
//! - an unquoted `#` starts a comment that runs to the end of the line;
//! - repeated `list NAME` accumulates values in order; a repeated `option NAME` replaces the
//!   earlier value (the last wins) and the replaced one is kept in [`Section::overridden`].
//!
//! Deliberate differences, so every error has an exact line: a quoted value may not span lines
//! (libuci allows it, but then a missing quote swallows the rest of the file), NUL characters
//! are refused, and mixing `option` and `list` for one name is an error instead of a conversion.
//!
//! Section *names* and option names are UCI names (`A-Z a-z 0-9 _`); section *types* may be any
//! printable ASCII without spaces, as in libuci.
//!
//! # Layout
//! - [`parse`]: the entry point; [`Section`], [`UciOption`], [`UciValue`]: what it returns.
//! - [`UciError`]: the first grammar error, with its line.
//! - private: a lexer (text → statements of tokens) and the statement interpreter.

use std::fmt;
use std::iter::Peekable;
use std::str::Chars;

/// One `config TYPE ['NAME']` section and the options that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section type (`mnigs`, `gateway`, `discovery`, …).
    pub ty: String,
    /// The section name, or `None` for an anonymous section (no name, or `''`).
    pub name: Option<String>,
    /// Line of the `config` statement (1-based).
    pub line: usize,
    /// Options in order of first appearance; a repeated `option` keeps its place.
    pub options: Vec<UciOption>,
    /// Earlier values of options that a later `option` with the same name replaced, in order.
    pub overridden: Vec<UciOption>,
}

impl Section {
    /// The option called `name`, if the section has one.
    pub fn get(&self, name: &str) -> Option<&UciOption> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// One option of a section, single-valued (`option`) or a list (`list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciOption {
    /// The option name.
    pub name: String,
    /// Its value.
    pub value: UciValue,
    /// Line of the (last) `option` statement, or of the first `list` statement.
    pub line: usize,
}

/// The value of an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UciValue {
    /// Set by `option NAME VALUE`.
    Single(String),
    /// Set by one or more `list NAME VALUE`: each value with the line it came from.
    List(Vec<(String, usize)>),
}

impl UciValue {
    /// Every value with its line; a single value is a list of one at `line`.
    pub fn values(&self, line: usize) -> Vec<(&str, usize)> {
        match self {
            UciValue::Single(v) => vec![(v.as_str(), line)],
            UciValue::List(vs) => vs.iter().map(|(v, l)| (v.as_str(), *l)).collect(),
        }
    }
}

/// A grammar error: the file is not UCI. Shown as `line N: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciError {
    /// 1-based line where the error is.
    pub line: usize,
    /// What is wrong, in English.
    pub message: String,
}

impl fmt::Display for UciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for UciError {}

/// One token of a statement: its text after unquoting, and the line it started on.
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, UciError> {
    Err(UciError {
        line,
        message: message.into(),
    })
}

/// Spaces that separate tokens (a newline ends the statement instead).
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\x0b' | '\x0c')
}

/// Splits text into statements of tokens, dropping comments, one statement at a time (so the
/// first error in the file is the one reported, whether it is lexical or not).
struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    line: usize,
}

impl Lexer<'_> {
    fn new(text: &str) -> Lexer<'_> {
        Lexer {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    /// Consumes the character after a backslash; returns it, or `None` for a line join or EOF.
    fn escaped(&mut self) -> Result<Option<char>, UciError> {
        match self.chars.next() {
            None => Ok(None),
            Some('\n') => {
                self.line += 1;
                Ok(None)
            }
            Some('\0') => err(self.line, "NUL character in file"),
            Some(c) => Ok(Some(c)),
        }
    }

    /// Reads the next statement (a non-empty list of tokens), or `None` at the end of the text.
    fn statement(&mut self) -> Result<Option<Vec<Token>>, UciError> {
        let mut tokens = Vec::new();
        while let Some(&c) = self.chars.peek() {
            match c {
                '\n' | ';' => {
                    self.chars.next();
                    if c == '\n' {
                        self.line += 1;
                    }
                    if !tokens.is_empty() {
                        return Ok(Some(tokens));
                    }
                }
                '#' => while self.chars.next_if(|&c| c != '\n').is_some() {},
                c if is_blank(c) => {
                    self.chars.next();
                }
                _ => {
                    if let Some(token) = self.token()? {
                        tokens.push(token);
                    }
                }
            }
        }
        Ok((!tokens.is_empty()).then_some(tokens))
    }

    /// Reads one token; `None` if it was only a backslash line join.
    fn token(&mut self) -> Result<Option<Token>, UciError> {
        let line = self.line;
        let mut text = String::new();
        let mut any = false;
        while let Some(&c) = self.chars.peek() {
            if is_blank(c) || matches!(c, '\n' | ';' | '#') {
                break;
            }
            self.chars.next();
            match c {
                '\'' => {
                    any = true;
                    self.single_quoted(&mut text)?;
                }
                '"' => {
                    any = true;
                    self.double_quoted(&mut text)?;
                }
                '\\' => {
                    if let Some(c) = self.escaped()? {
                        any = true;
                        text.push(c);
                    }
                }
                '\0' => return err(self.line, "NUL character in file"),
                _ => {
                    any = true;
                    text.push(c);
                }
            }
        }
        Ok(any.then_some(Token { text, line }))
    }

    fn single_quoted(&mut self, text: &mut String) -> Result<(), UciError> {
        let line = self.line;
        loop {
            match self.chars.next() {
                Some('\'') => return Ok(()),
                None | Some('\n') => return err(line, "unterminated ' quote"),
                Some('\0') => return err(line, "NUL character in file"),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quoted(&mut self, text: &mut String) -> Result<(), UciError> {
        let line = self.line;
        loop {
            match self.chars.next() {
                Some('"') => return Ok(()),
                None | Some('\n') => return err(line, "unterminated \" quote"),
                Some('\\') => match self.chars.peek() {
                    None => return err(line, "unterminated \" quote"),
                    Some(_) => {
                        if let Some(c) = self.escaped()? {
                            text.push(c);
                        }
                    }
                },
                Some('\0') => return err(line, "NUL character in file"),
                Some(c) => text.push(c),
            }
        }
    }
}

/// True for a UCI name: one or more of `A-Z a-z 0-9 _`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True for a UCI package name: one or more of `A-Z a-z 0-9 _ -`.
fn is_package_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// True for a UCI section type: one or more printable ASCII characters, no spaces.
fn is_type(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Shows a token in a message; tokens may hold anything, so escape them.
fn show(s: &str) -> String {
    crate::validate::quoted(s)
}

/// Rejects tokens after the `n` that a statement takes.
fn no_extra(tokens: &[Token], n: usize, what: &str) -> Result<(), UciError> {
    match tokens.get(n) {
        None => Ok(()),
        Some(t) => err(t.line, format!("unexpected {} after {what}", show(&t.text))),
    }
}

/// Parses UCI text into its sections, in file order. Stops at the first grammar error.
pub fn parse(text: &str) -> Result<Vec<Section>, UciError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut lexer = Lexer::new(text);
    while let Some(tokens) = lexer.statement()? {
        let keyword = &tokens[0];
        let line = keyword.line;
        match keyword.text.as_str() {
            "package" => {
                let Some(name) = tokens.get(1) else {
                    return err(line, "'package' needs a name");
                };
                no_extra(&tokens, 2, "the package name")?;
                if !is_package_name(&name.text) {
                    return err(line, format!("invalid package name {}", show(&name.text)));
                }
            }
            "config" => {
                let Some(ty) = tokens.get(1) else {
                    return err(line, "'config' needs a section type");
                };
                if !is_type(&ty.text) {
                    return err(
                        line,
                        format!(
                            "invalid section type {}: it must be printable ASCII without spaces",
                            show(&ty.text)
                        ),
                    );
                }
                let name = match tokens.get(2) {
                    None => None,
                    Some(t) if t.text.is_empty() => None,
                    Some(t) if is_name(&t.text) => Some(t.text.clone()),
                    Some(t) => {
                        return err(
                            line,
                            format!(
                                "invalid section name {}: UCI names are A-Z a-z 0-9 _",
                                show(&t.text)
                            ),
                        );
                    }
                };
                no_extra(&tokens, 3, "the section name")?;
                sections.push(Section {
                    ty: ty.text.clone(),
                    name,
                    line,
                    options: Vec::new(),
                    overridden: Vec::new(),
                });
            }
            kw @ ("option" | "list") => {
                let Some(section) = sections.last_mut() else {
                    return err(line, format!("'{kw}' before any 'config' line"));
                };
                let Some(name) = tokens.get(1) else {
                    return err(line, format!("'{kw}' needs a name and a value"));
                };
                if !is_name(&name.text) {
                    return err(
                        line,
                        format!(
                            "invalid option name {}: UCI names are A-Z a-z 0-9 _",
                            show(&name.text)
                        ),
                    );
                }
                let Some(value) = tokens.get(2) else {
                    return err(line, format!("'{kw} {}' needs a value", name.text));
                };
                no_extra(&tokens, 3, "the value")?;
                add(section, kw == "list", &name.text, &value.text, line)?;
            }
            other => {
                return err(
                    line,
                    format!(
                        "unknown keyword {}: expected config, option, list or package",
                        show(other)
                    ),
                );
            }
        }
    }
    Ok(sections)
}

/// Adds one `option` or `list` statement to `section`.
fn add(
    section: &mut Section,
    list: bool,
    name: &str,
    value: &str,
    line: usize,
) -> Result<(), UciError> {
    let existing = section.options.iter_mut().find(|o| o.name == name);
    match (existing, list) {
        (None, false) => section.options.push(UciOption {
            name: name.to_string(),
            value: UciValue::Single(value.to_string()),
            line,
        }),
        (None, true) => section.options.push(UciOption {
            name: name.to_string(),
            value: UciValue::List(vec![(value.to_string(), line)]),
            line,
        }),
        (Some(o), false) => {
            if let UciValue::List(_) = o.value {
                return err(
                    line,
                    format!(
                        "'{name}' is a list (line {}); 'option' cannot replace it",
                        o.line
                    ),
                );
            }
            let old = std::mem::replace(
                o,
                UciOption {
                    name: name.to_string(),
                    value: UciValue::Single(value.to_string()),
                    line,
                },
            );
            section.overridden.push(old);
        }
        (Some(o), true) => match &mut o.value {
            UciValue::List(values) => values.push((value.to_string(), line)),
            UciValue::Single(_) => {
                return err(
                    line,
                    format!(
                        "'{name}' is a single option (line {}); 'list' cannot add to it",
                        o.line
                    ),
                );
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(name: &str, value: &str, line: usize) -> UciOption {
        UciOption {
            name: name.into(),
            value: UciValue::Single(value.into()),
            line,
        }
    }

    fn values(s: &Section, name: &str) -> Vec<(String, usize)> {
        match &s.get(name).unwrap().value {
            UciValue::List(v) => v.clone(),
            UciValue::Single(v) => panic!("{name} is single: {v}"),
        }
    }

    fn value(s: &Section, name: &str) -> String {
        match &s.get(name).unwrap().value {
            UciValue::Single(v) => v.clone(),
            UciValue::List(v) => panic!("{name} is a list: {v:?}"),
        }
    }

    fn error(text: &str) -> (usize, String) {
        let e = parse(text).unwrap_err();
        (e.line, e.message)
    }

    /// Writes sections the way `uci export` does (single quotes, `'\''` for a quote).
    fn emit(sections: &[Section]) -> String {
        fn q(s: &str) -> String {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
        let mut out = String::from("package mnigs\n");
        for s in sections {
            out.push_str(&format!("\nconfig {}", s.ty));
            if let Some(n) = &s.name {
                out.push_str(&format!(" {}", q(n)));
            }
            out.push('\n');
            for o in &s.options {
                match &o.value {
                    UciValue::Single(v) => out.push_str(&format!("\toption {} {}\n", o.name, q(v))),
                    UciValue::List(vs) => {
                        for (v, _) in vs {
                            out.push_str(&format!("\tlist {} {}\n", o.name, q(v)));
                        }
                    }
                }
            }
        }
        out
    }

    /// Sections with every line number zeroed, to compare structure only.
    fn shape(mut sections: Vec<Section>) -> Vec<Section> {
        for s in &mut sections {
            s.line = 0;
            for o in &mut s.options {
                o.line = 0;
                if let UciValue::List(vs) = &mut o.value {
                    vs.iter_mut().for_each(|v| v.1 = 0);
                }
            }
        }
        sections
    }

    #[test]
    fn parses_sections_options_and_lists_with_lines() {
        let text = "\
# mnigs configuration
package mnigs

config mnigs 'main'
\toption name 'node-1'
\tlist listen '::'
\tlist listen \"0.0.0.0\"

config discovery
  option method routes
";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].ty.as_str(), s[0].name.as_deref(), s[0].line),
            ("mnigs", Some("main"), 4)
        );
        assert_eq!(s[0].options[0], single("name", "node-1", 5));
        assert_eq!(s[0].options[1].line, 6);
        assert_eq!(
            values(&s[0], "listen"),
            vec![("::".into(), 6), ("0.0.0.0".into(), 7)]
        );
        assert_eq!(
            (s[1].ty.as_str(), s[1].name.as_deref(), s[1].line),
            ("discovery", None, 9)
        );
        assert_eq!(s[1].options, vec![single("method", "routes", 10)]);
    }

    #[test]
    fn empty_and_comment_only_files_have_no_sections() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(
            parse("\n\n  \t\n# x\n   # y 'unterminated\n").unwrap(),
            vec![]
        );
    }

    #[test]
    fn quoting_rules() {
        let text = r#"config t 'n'
	option a 'single "x" \n # literal'
	option b "double 'y' \"q\" \\ \n # literal"
	option c 'a'"b"c
	option d 'it'\''s'
	option e ''
	option f un\ quoted\#
	option g ""
"#;
        let s = &parse(text).unwrap()[0];
        assert_eq!(value(s, "a"), r#"single "x" \n # literal"#);
        assert_eq!(value(s, "b"), r#"double 'y' "q" \ n # literal"#);
        assert_eq!(value(s, "c"), "abc");
        assert_eq!(value(s, "d"), "it's");
        assert_eq!(value(s, "e"), "");
        assert_eq!(value(s, "f"), "un quoted#");
        assert_eq!(value(s, "g"), "");
    }

    #[test]
    fn comments_after_tokens() {
        let text = "config t n # a comment\n\toption a 'v' # another 'one\n\toption b v#w\n\toption c 'x#y'\n";
        let s = &parse(text).unwrap()[0];
        assert_eq!(s.name.as_deref(), Some("n"));
        assert_eq!(value(s, "a"), "v");
        assert_eq!(value(s, "b"), "v");
        assert_eq!(value(s, "c"), "x#y");
    }

    #[test]
    fn semicolons_separate_statements() {
        let s = &parse("config t n; option a 1; list b 2;list b 3\n").unwrap()[0];
        assert_eq!(value(s, "a"), "1");
        assert_eq!(values(s, "b"), vec![("2".into(), 1), ("3".into(), 1)]);
        assert_eq!(
            value(&parse("config t\noption a 'x;y'\n").unwrap()[0], "a"),
            "x;y"
        );
    }

    #[test]
    fn backslash_newline_joins_lines() {
        let text =
            "config t n\n\toption a \\\n\t\t'joined'\n\toption b \"one\\\ntwo\"\n\toption c 3\n";
        let s = &parse(text).unwrap()[0];
        assert_eq!(s.options[0], single("a", "joined", 2));
        assert_eq!(s.options[1], single("b", "onetwo", 4));
        assert_eq!(s.options[2], single("c", "3", 6));
    }

    #[test]
    fn crlf_and_odd_whitespace() {
        let s = &parse("config t n\r\n\toption a 'v'\r\n \t option b w\r\n").unwrap()[0];
        assert_eq!(s.options, vec![single("a", "v", 2), single("b", "w", 3)]);
    }

    #[test]
    fn anonymous_sections() {
        let s = parse("config discovery\nconfig discovery ''\nconfig discovery 'named'\n").unwrap();
        let names: Vec<_> = s.iter().map(|s| s.name.as_deref()).collect();
        assert_eq!(names, vec![None, None, Some("named")]);
    }

    #[test]
    fn repeated_option_last_wins_and_is_recorded() {
        let s = &parse("config t n\n\toption a 1\n\toption b x\n\toption a 2\n").unwrap()[0];
        assert_eq!(s.options, vec![single("a", "2", 4), single("b", "x", 3)]);
        assert_eq!(s.overridden, vec![single("a", "1", 2)]);
    }

    #[test]
    fn repeated_list_accumulates_in_order() {
        let s =
            &parse("config t n\n\tlist p 1\n\toption x y\n\tlist p 2\n\tlist p 1\n").unwrap()[0];
        assert_eq!(s.get("p").unwrap().line, 2);
        assert_eq!(
            values(s, "p"),
            vec![("1".into(), 2), ("2".into(), 4), ("1".into(), 5)]
        );
    }

    #[test]
    fn options_belong_to_the_latest_section() {
        let s = parse("config a x\noption o 1\nconfig b y\noption o 2\n").unwrap();
        assert_eq!(value(&s[0], "o"), "1");
        assert_eq!(value(&s[1], "o"), "2");
    }

    #[test]
    fn quoted_keywords_and_names_are_fine() {
        let s = &parse("'config' \"t\" 'n'\n'option' 'a' 'v'\n").unwrap()[0];
        assert_eq!((s.ty.as_str(), value(s, "a")), ("t", "v".to_string()));
    }

    #[test]
    fn values_may_hold_anything_but_nul_and_newline() {
        let s = &parse("config t n\noption a '$(rm -rf /); `id` | & > \u{435}'\n").unwrap()[0];
        assert_eq!(value(s, "a"), "$(rm -rf /); `id` | & > \u{435}");
    }

    #[test]
    fn error_unterminated_quotes() {
        assert_eq!(
            error("config t n\n\toption a 'v\n"),
            (2, "unterminated ' quote".into())
        );
        assert_eq!(
            error("config t n\n\n\toption a \"v\\\"\n"),
            (3, "unterminated \" quote".into())
        );
        assert_eq!(
            error("config t n\noption a \"v"),
            (2, "unterminated \" quote".into())
        );
        assert_eq!(
            error("config t n\noption a \"v\\"),
            (2, "unterminated \" quote".into())
        );
        assert_eq!(error("config 't n\n"), (1, "unterminated ' quote".into()));
    }

    #[test]
    fn error_option_before_config() {
        assert_eq!(
            error("# c\n\toption a b\n"),
            (2, "'option' before any 'config' line".into())
        );
        assert_eq!(
            error("package p\nlist a b\n"),
            (2, "'list' before any 'config' line".into())
        );
    }

    #[test]
    fn error_missing_name_or_value() {
        assert_eq!(
            error("config t\n\toption\n"),
            (2, "'option' needs a name and a value".into())
        );
        assert_eq!(
            error("config t\n\tlist # c\n"),
            (2, "'list' needs a name and a value".into())
        );
        assert_eq!(
            error("config t\n\n\toption a\n"),
            (3, "'option a' needs a value".into())
        );
        assert_eq!(
            error("config t\n\tlist a ;\n"),
            (2, "'list a' needs a value".into())
        );
        assert_eq!(
            error("config\n"),
            (1, "'config' needs a section type".into())
        );
        assert_eq!(error("package\n"), (1, "'package' needs a name".into()));
    }

    #[test]
    fn error_extra_tokens() {
        assert_eq!(
            error("config t n\n\toption a 'b' c\n"),
            (2, "unexpected 'c' after the value".into())
        );
        assert_eq!(
            error("config t n x\n"),
            (1, "unexpected 'x' after the section name".into())
        );
        assert_eq!(
            error("package a b\n"),
            (1, "unexpected 'b' after the package name".into())
        );
        // Text after a joined line is reported on the line it is on.
        assert_eq!(
            error("config t n\noption a b \\\n c\n"),
            (3, "unexpected 'c' after the value".into())
        );
    }

    #[test]
    fn error_unknown_keyword() {
        assert_eq!(
            error("config t n\n\n\toptoin a b\n"),
            (
                3,
                "unknown keyword 'optoin': expected config, option, list or package".into()
            )
        );
        assert_eq!(
            error("\u{435}config t\n"),
            (
                1,
                "unknown keyword '\\u{435}config': expected config, option, list or package".into()
            )
        );
    }

    #[test]
    fn error_invalid_names() {
        assert_eq!(
            error("config t n\noption a-b c\n"),
            (
                2,
                "invalid option name 'a-b': UCI names are A-Z a-z 0-9 _".into()
            )
        );
        assert_eq!(
            error("config t n\nlist '' c\n"),
            (
                2,
                "invalid option name '': UCI names are A-Z a-z 0-9 _".into()
            )
        );
        assert_eq!(
            error("config t 'my gw'\n"),
            (
                1,
                "invalid section name 'my gw': UCI names are A-Z a-z 0-9 _".into()
            )
        );
        assert_eq!(
            error("config 'a b'\n"),
            (
                1,
                "invalid section type 'a b': it must be printable ASCII without spaces".into()
            )
        );
        assert_eq!(
            error("package 'a;b'\n"),
            (1, "invalid package name 'a;b'".into())
        );
    }

    #[test]
    fn error_option_list_mismatch() {
        assert_eq!(
            error("config t n\noption a 1\nlist a 2\n"),
            (
                3,
                "'a' is a single option (line 2); 'list' cannot add to it".into()
            )
        );
        assert_eq!(
            error("config t n\nlist a 1\n\noption a 2\n"),
            (
                4,
                "'a' is a list (line 2); 'option' cannot replace it".into()
            )
        );
        // The same name in another section is independent.
        assert!(parse("config t n\noption a 1\nconfig t m\nlist a 2\n").is_ok());
    }

    #[test]
    fn error_nul() {
        assert_eq!(
            error("config t n\noption a 'x\0y'\n"),
            (2, "NUL character in file".into())
        );
        assert_eq!(
            error("config t n\n\noption a x\0y\n"),
            (3, "NUL character in file".into())
        );
    }

    #[test]
    fn the_first_error_in_the_file_is_reported() {
        assert_eq!(error("bogus\nconfig t 'x\n").0, 1);
        assert_eq!(error("config t 'x\nbogus\n").0, 1);
    }

    #[test]
    fn error_display() {
        let e = parse("config t\nbogus\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: unknown keyword 'bogus': expected config, option, list or package"
        );
    }

    #[test]
    fn round_trip_through_export_format() {
        let text = "\
config mnigs 'main'
\toption name 'node-1'
\tlist listen '::'
\tlist listen '0.0.0.0'
\toption odd 'it'\\''s \"q\" # ; \\ $x'

config discovery
\toption method 'routes'
\tlist port '65533'
";
        let first = parse(text).unwrap();
        assert_eq!(value(&first[0], "odd"), "it's \"q\" # ; \\ $x");
        let again = parse(&emit(&first)).unwrap();
        assert_eq!(shape(again.clone()), shape(first));
        assert_eq!(emit(&again), emit(&parse(&emit(&again)).unwrap()));
    }
}
