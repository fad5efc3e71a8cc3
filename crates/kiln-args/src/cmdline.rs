//! The Solo5 command line: one string that hvt, spt and virtio guests
//! receive, split into arguments the way MirageOS splits it, and the
//! quoting that makes any argument survive the trip.
//!
//! The rules are mirage-bootvar's (`parse_argv/parse_argv.ml`, `Parse_argv.parse`,
//! which `Mirage_bootvar.argv` runs on Solo5 and Xen):
//!
//! - words are separated by runs of spaces (only `' '`: a tab or a newline
//!   is part of a word);
//! - `"` opens and closes a quoted part, in which spaces are kept; quoted
//!   and plain parts next to each other make one word (`a"b c"d` is `ab cd`);
//! - `\` takes the next character as it is, inside quotes or out
//!   (`a\ b` is `a b`, `\"` a quote, `\\` a backslash, `\n` an `n`);
//! - `'` is an ordinary character;
//! - a line that ends inside a quote or right after a `\` is refused.
//!
//! One difference, for input MirageOS cannot express: MirageOS drops an
//! empty word, so `--name ""` loses its value; here a word that held a
//! quoted part is kept even when it is empty.
//!
//! [`quote`] is the inverse the host side uses (`kiln run`, the daemon,
//! `kiln package`, the VMM command lines): `split(&join(args)) == args`
//! for every list of arguments without NUL.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why a command line could not be split. `Display` is one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    /// A `"` at this byte offset is never closed.
    UnclosedQuote(usize),
    /// The line ends with a `\` that escapes nothing.
    TrailingBackslash,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnclosedQuote(at) => write!(
                f,
                "the command line's quote at byte {at} is never closed; hint: close it with \", or write \\\" for a quote character"
            ),
            CmdlineError::TrailingBackslash => write!(
                f,
                "the command line ends with a lone backslash; hint: write \\\\ for a backslash"
            ),
        }
    }
}

impl core::error::Error for CmdlineError {}

/// The characters that make a word more than its text.
const SPECIAL: [char; 3] = [' ', '"', '\\'];

/// Splits a command line into arguments (see the module's documentation).
/// A word without quotes or backslashes is borrowed from `line`.
pub fn split(line: &str) -> Result<Vec<Cow<'_, str>>, CmdlineError> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        let Some(start) = line[at..].find(|c| c != ' ').map(|i| at + i) else {
            return Ok(words);
        };
        let rest = &line[start..];
        let plain = rest.find(SPECIAL).unwrap_or(rest.len());
        if !rest[plain..].starts_with(['"', '\\']) {
            words.push(Cow::Borrowed(&rest[..plain]));
            at = start + plain;
            continue;
        }
        let mut word = String::from(&rest[..plain]);
        let mut open = None;
        let mut end = line.len();
        let mut chars = rest[plain..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                ' ' if open.is_none() => {
                    end = start + plain + i;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => word.push(escaped),
                    None => {
                        return Err(match open {
                            Some(quote) => CmdlineError::UnclosedQuote(quote),
                            None => CmdlineError::TrailingBackslash,
                        });
                    }
                },
                '"' => {
                    open = match open {
                        Some(_) => None,
                        None => Some(start + plain + i),
                    }
                }
                c => word.push(c),
            }
        }
        if let Some(quote) = open {
            return Err(CmdlineError::UnclosedQuote(quote));
        }
        words.push(Cow::Owned(word));
        at = end;
    }
}

/// [`split`] for the one command line a guest boots with, which lives as
/// long as the guest: the words that needed unquoting are copied to the
/// heap once and never freed, so every argument is `&'static str`.
pub fn split_static(line: &'static str) -> Result<Vec<&'static str>, CmdlineError> {
    Ok(split(line)?
        .into_iter()
        .map(|word| match word {
            Cow::Borrowed(word) => word,
            Cow::Owned(word) => &*Box::leak(word.into_boxed_str()),
        })
        .collect())
}

/// `arg` as one word of a command line: as it is when it holds no space,
/// quote or backslash and is not empty, else in quotes with `"` and `\`
/// escaped.
pub fn quote(arg: &str) -> Cow<'_, str> {
    if !arg.is_empty() && !arg.contains(SPECIAL) {
        return Cow::Borrowed(arg);
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// The command line that [`split`]s back into `args`: each [`quote`]d,
/// joined with spaces.
pub fn join<S: AsRef<str>>(args: &[S]) -> String {
    let mut line = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&quote(arg.as_ref()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn words(line: &str) -> Result<Vec<String>, CmdlineError> {
        split(line).map(|w| w.into_iter().map(Cow::into_owned).collect())
    }

    /// mirage-bootvar's own cases (`test/test.ml`, `tests` and
    /// `negative_test`), with the results MirageOS gives.
    #[test]
    fn mirage_bootvar_cases() {
        let cases: [(&str, &[&str]); 7] = [
            ("foo bar baz", &["foo", "bar", "baz"]),
            (r#"foo "bar" baz"#, &["foo", "bar", "baz"]),
            (r#"f\ oo b\"r baz"#, &["f oo", "b\"r", "baz"]),
            (r#"foo bar"bie"boo baz"#, &["foo", "barbieboo", "baz"]),
            (r#"foo "bar baz""#, &["foo", "bar baz"]),
            (r#"foo bar\ baz"#, &["foo", "bar baz"]),
            ("  ", &[]),
        ];
        for (line, expected) in cases {
            assert_eq!(words(line).unwrap(), expected, "{line}");
        }
        assert_eq!(words("  \\"), Err(CmdlineError::TrailingBackslash));
    }

    /// What Parse_argv's state machine does with input its tests do not
    /// cover.
    #[test]
    fn mirage_state_machine_edges() {
        // Only spaces separate; runs of them and the ends are ignored.
        assert_eq!(words("  a   b  ").unwrap(), ["a", "b"]);
        assert_eq!(words("a\tb\nc").unwrap(), ["a\tb\nc"]);
        // A backslash takes any character, inside quotes too.
        assert_eq!(words(r"\n\\\a").unwrap(), ["n\\a"]);
        assert_eq!(words(r#""a\"b\\c\ d""#).unwrap(), ["a\"b\\c d"]);
        // Single quotes are ordinary characters.
        assert_eq!(words("'a b'").unwrap(), ["'a", "b'"]);
        assert_eq!(words("--name=it's").unwrap(), ["--name=it's"]);
        // Quoted parts join their neighbours.
        assert_eq!(
            words(r#"--msg="hello world"!"#).unwrap(),
            ["--msg=hello world!"]
        );
        // Multi-byte characters pass through, escaped or not.
        assert_eq!(words("é \\é \"ü x\"").unwrap(), ["é", "é", "ü x"]);
        // Unfinished quotes and escapes are refused.
        assert_eq!(words(r#"a "b c"#), Err(CmdlineError::UnclosedQuote(2)));
        assert_eq!(words(r#"a "b\"#), Err(CmdlineError::UnclosedQuote(2)));
        assert_eq!(words(r#""a" "b"c""#), Err(CmdlineError::UnclosedQuote(8)));
        assert_eq!(words("a\\"), Err(CmdlineError::TrailingBackslash));
        assert_eq!(
            words("\"").unwrap_err().to_string(),
            "the command line's quote at byte 0 is never closed; hint: close it with \", or write \\\" for a quote character"
        );
    }

    #[test]
    fn an_explicitly_empty_word_is_kept() {
        // MirageOS drops it; kiln keeps it so that `--name ""` has a value.
        assert_eq!(words(r#"--name "" x"#).unwrap(), ["--name", "", "x"]);
        assert_eq!(words(r#""""#).unwrap(), [""]);
    }

    #[test]
    fn plain_words_are_borrowed() {
        let line = String::from("--times 3 \"a b\"");
        let split = split(&line).unwrap();
        assert!(matches!(split[0], Cow::Borrowed("--times")));
        assert!(matches!(split[1], Cow::Borrowed("3")));
        assert!(matches!(split[2], Cow::Owned(_)));
    }

    #[test]
    fn quoting_round_trips() {
        assert_eq!(quote("--times=3"), "--times=3");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
        let awkward = [
            "",
            " ",
            "a b",
            "\"",
            "\\",
            "\\\"",
            "'",
            "a\tb",
            "\n",
            "é ü",
            "--msg=hello  world",
            "x\\",
            "\" \"",
            "--plain",
        ];
        for a in awkward {
            for b in awkward {
                let args = vec![a, b, "end"];
                let line = join(&args);
                assert_eq!(words(&line).unwrap(), args, "{line}");
            }
        }
    }
}
