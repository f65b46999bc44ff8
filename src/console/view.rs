//! What a viewer asked for (remote-console's query: `mode`, `follow`,
//! `lines`, read as Go's `strconv` would) and how followed output is cut
//! into the one-line-per-frame form `tail` sends. Pure.

/// A viewer's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Keystrokes in, output out.
    Interactive,
    /// The log: `lines` > 0 is that many last lines, else all of it.
    Tail { follow: bool, lines: i64 },
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Decodes the query; the error is the 400 text.
pub fn parse(
    mode: Option<&str>,
    follow: Option<&str>,
    lines: Option<&str>,
) -> Result<View, String> {
    match mode.unwrap_or("") {
        "" | "interactive" => Ok(View::Interactive),
        "tail" => {
            let follow = match follow {
                None | Some("") => false,
                Some(f) => go_bool(f).ok_or_else(|| format!("follow={f:?} is not a boolean"))?,
            };
            let lines = match lines {
                None | Some("") => 0,
                Some(l) => l
                    .parse::<i64>()
                    .map_err(|_| format!("lines={l:?} is not an integer"))?,
            };
            Ok(View::Tail { follow, lines })
        }
        other => Err(format!("mode={other:?} is neither interactive nor tail")),
    }
}

/// Collects output and hands back whole lines (`\n` kept).
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
}

/// A line longer than this is sent in pieces rather than held.
const MAX_LINE: usize = 64 * 1024;

impl LineBuffer {
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for piece in data.split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(piece);
            if piece.ends_with(b"\n") || self.partial.len() >= MAX_LINE {
                out.push(std::mem::take(&mut self.partial));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_table() {
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Result<View, ()>,
        );
        let cases: &[Case] = &[
            (None, None, None, Ok(View::Interactive)),
            (Some("interactive"), Some("x"), None, Ok(View::Interactive)),
            (
                Some("tail"),
                None,
                None,
                Ok(View::Tail {
                    follow: false,
                    lines: 0,
                }),
            ),
            (
                Some("tail"),
                Some("true"),
                Some("100"),
                Ok(View::Tail {
                    follow: true,
                    lines: 100,
                }),
            ),
            (
                Some("tail"),
                Some("T"),
                Some("-1"),
                Ok(View::Tail {
                    follow: true,
                    lines: -1,
                }),
            ),
            (Some("tail"), Some("yes"), None, Err(())),
            (Some("tail"), None, Some("ten"), Err(())),
            (Some("watch"), None, None, Err(())),
        ];
        for (m, f, l, want) in cases {
            assert_eq!(
                parse(*m, *f, *l).map_err(|_| ()),
                *want,
                "{m:?} {f:?} {l:?}"
            );
        }
    }

    #[test]
    fn lines_are_cut_at_newlines() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"par").is_empty());
        assert_eq!(
            b.push(b"tial\nnext\nre"),
            vec![b"partial\n".to_vec(), b"next\n".to_vec()]
        );
        assert_eq!(b.push(b"st\n"), vec![b"rest\n".to_vec()]);
    }
}
