//! A small shell glob for `gfs find -name`: `*` (any run of characters),
//! `?` (one character), `[abc]`, `[a-z]`, `[!abc]` / `[^abc]` (a class, or
//! its complement) and `\x` (a literal `x`). Matched against one name, so
//! `/` is an ordinary character here. The pattern is checked once, when it
//! is parsed: an unclosed `[` or a trailing `\` is an error, not a literal.

use anyhow::bail;

/// One element of a parsed pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    Any,
    /// `*`
    Star,
    /// `[...]`: inclusive ranges (a single character is `c..=c`).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A parsed glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Parses `pattern`.
    pub fn new(pattern: &str) -> anyhow::Result<Glob> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let t = match c {
                '*' => Token::Star,
                '?' => Token::Any,
                '\\' => match chars.next() {
                    Some(l) => Token::Literal(l),
                    None => bail!("glob {pattern:?}: ends with a lone backslash"),
                },
                '[' => parse_class(pattern, &mut chars)?,
                l => Token::Literal(l),
            };
            // `**` is the same as `*`.
            if t == Token::Star && tokens.last() == Some(&Token::Star) {
                continue;
            }
            tokens.push(t);
        }
        Ok(Glob { tokens })
    }

    /// True when the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // Iterative matching with one backtrack point (the last `*`):
        // linear in practice and never exponential.
        let (mut t, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(tok) if one(tok, name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                // Let the last `*` take one more character.
                Some((st, sn)) => {
                    star = Some((st, sn + 1));
                    t = st + 1;
                    n = sn + 1;
                }
                None => return false,
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == Token::Star)
    }
}

/// Whether a single-character token matches `c`.
fn one(tok: &Token, c: char) -> bool {
    match tok {
        Token::Literal(l) => *l == c,
        Token::Any => true,
        Token::Star => false,
        Token::Class { negated, ranges } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
    }
}

/// Parses a class after its `[`. A `]` right after `[` (or `[!`) is a
/// member, as in the shell.
fn parse_class(pattern: &str, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> anyhow::Result<Token> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = match chars.next() {
            None => bail!("glob {pattern:?}: unclosed '['"),
            Some(']') if !first => break,
            Some('\\') => match chars.next() {
                Some(l) => l,
                None => bail!("glob {pattern:?}: unclosed '['"),
            },
            Some(c) => c,
        };
        first = false;
        let mut lookahead = chars.clone();
        if lookahead.next() == Some('-') && lookahead.peek().is_some_and(|h| *h != ']') {
            chars.next();
            let hi = chars.next().expect("peeked");
            if hi < c {
                bail!("glob {pattern:?}: range {c}-{hi} is reversed");
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
    }
    Ok(Token::Class { negated, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).unwrap().matches(n)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("*.log", "a.log"));
        assert!(m("*.log", ".log"));
        assert!(!m("*.log", "a.log.1"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "acb"));
        assert!(m("part-?????", "part-00001"));
        assert!(!m("part-?????", "part-0001"));
        assert!(m("**x", "abx"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn classes() {
        assert!(m("f[0-9]", "f7"));
        assert!(!m("f[0-9]", "fa"));
        assert!(m("f[!0-9]", "fa"));
        assert!(m("f[^0-9]", "fa"));
        assert!(!m("f[!0-9]", "f1"));
        assert!(m("[abc]x", "bx"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("[!]]", "a"));
        assert!(m("é[é-ê]", "éê"), "characters, not bytes");
    }

    #[test]
    fn escapes_are_literals() {
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
        assert!(m(r"\?", "?"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        for p in ["[abc", "[", "a\\", "[z-a]", "[!"] {
            assert!(Glob::new(p).is_err(), "{p}");
        }
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let p = "*a".repeat(30) + "b";
        let n = "a".repeat(200);
        assert!(!m(&p, &n));
    }
}
