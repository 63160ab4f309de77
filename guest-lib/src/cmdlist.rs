//! The command-list format of the Linux comparison tests: one command per line, its words
//! separated by spaces, `'single quotes'` grouping words (and `\n` inside them standing for a
//! newline); blank lines and lines starting with `#` are skipped. `/bin/runlist` runs such a
//! list in the guest, and the host tests run the same list on the host.
use alloc::string::String;
use alloc::vec::Vec;

/// The words of one line: `Ok(None)` for a blank line or a comment, `Err` for an unclosed
/// quote.
pub fn words(line: &str) -> Result<Option<Vec<String>>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut in_word, mut quoted) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    out.push(core::mem::take(&mut word));
                }
                in_word = false;
            }
            '\\' if quoted && chars.peek() == Some(&'n') => {
                chars.next();
                word.push('\n');
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unclosed quote");
    }
    if in_word {
        out.push(word);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn words_quotes_and_comments() {
        assert_eq!(words("  # note"), Ok(None));
        assert_eq!(words(""), Ok(None));
        assert_eq!(
            words("busybox  awk '{ print $2 }'  f"),
            Ok(Some(vec![
                "busybox".into(),
                "awk".into(),
                "{ print $2 }".into(),
                "f".into()
            ]))
        );
        assert_eq!(
            words("printf 'a\\nb' ''"),
            Ok(Some(vec!["printf".into(), "a\nb".into(), "".into()]))
        );
        assert_eq!(words("x 'open"), Err("unclosed quote"));
    }
}
