//! The text a GPU prints for a kernel: device `printf` goes to the
//! process's stdout, and a failed device `assert` to its stderr as one line
//! in CUDA's fixed shape (CUDA C++ Programming Guide, "Assertion"):
//!
//! ```text
//! <file>:<line>: <function>: block: [<x>,<y>,<z>], thread: [<x>,<y>,<z>] Assertion `<expression>` failed.
//! ```
//!
//! The software GPU, which prints both through one sink, and the host
//! worker, which must tell a driver's assert lines from other text on its
//! stderr, recognize that shape with the same function.

/// Whether `line` (with or without its line ending) is a device assert
/// message.
pub fn is_assert_message(line: &str) -> bool {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if !line.ends_with("` failed.") {
        return false;
    }
    // The file and function names come first and may contain anything, so
    // try every place the block coordinates could start.
    line.match_indices(": block: ")
        .any(|(i, m)| after_block(&line[i + m.len()..]))
}

/// `[x,y,z], thread: [x,y,z] Assertion `…` failed.`
fn after_block(s: &str) -> bool {
    let Some(s) = coordinates(s) else {
        return false;
    };
    let Some(s) = s.strip_prefix(", thread: ") else {
        return false;
    };
    let Some(s) = coordinates(s) else {
        return false;
    };
    // What remains ends with "` failed." (checked by the caller); the
    // expression between the backticks may be anything, even empty.
    s.strip_prefix(" Assertion `")
        .is_some_and(|rest| rest.len() >= "` failed.".len())
}

/// Skips `[x,y,z]` (three unsigned decimals).
fn coordinates(s: &str) -> Option<&str> {
    let mut s = s.strip_prefix('[')?;
    for end in [',', ',', ']'] {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        s = s[digits..].strip_prefix(end)?;
    }
    Some(s)
}

/// Splits one kernel block's output into its `printf` text and, when the
/// block ended in a failed assert, that message (the last line, with its
/// newline): a block stops at its assert, so nothing follows the message.
pub fn split_trailing_assert(text: &str) -> (&str, Option<&str>) {
    let Some(body) = text.strip_suffix('\n') else {
        return (text, None);
    };
    let start = body.rfind('\n').map_or(0, |i| i + 1);
    if is_assert_message(&text[start..]) {
        (&text[..start], Some(&text[start..]))
    } else {
        (text, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = "test.cu:19: void testAssert(): block: [0,0,0], thread: [0,0,0] \
                         Assertion `should_be_one` failed.";

    #[test]
    fn the_programming_guides_example_is_an_assert_message() {
        assert!(is_assert_message(GUIDE));
        assert!(is_assert_message(&format!("{GUIDE}\n")));
        assert!(is_assert_message(&format!("{GUIDE}\r\n")));
        // Names with the separators in them, large coordinates, an
        // expression with backticks.
        assert!(is_assert_message(
            "a: block: b.cu:7: void f<x: block: 1>(): block: [65535,2,3], thread: \
             [1023,0,0] Assertion `s == \"` failed.\"` failed."
        ));
    }

    #[test]
    fn other_text_is_not() {
        for s in [
            "",
            "hello\n",
            "Assertion `x` failed.",
            "f.cu:1: g: block: [0,0], thread: [0,0,0] Assertion `x` failed.",
            "f.cu:1: g: block: [0,0,0], thread: [0,0,-1] Assertion `x` failed.",
            "f.cu:1: g: block: [0,0,0], thread: [0,0,0] Assertion `x` failed",
            "f.cu:1: g: block: [0,0,0], thread: [0,0,0] Assertion x failed.",
            "f.cu:1: g: block: [0,0,0], thread: [0,0,0] Assertion `x` failed.\nmore",
            "vgpu-emu: kernel `k` failed: illegal address",
        ] {
            assert!(!is_assert_message(s), "{s:?}");
        }
    }

    #[test]
    fn a_blocks_trailing_assert_is_split_off() {
        let a = format!("{GUIDE}\n");
        let text = format!("x=1\ny=2\n{a}");
        assert_eq!(split_trailing_assert(&text), ("x=1\ny=2\n", Some(&a[..])));
        assert_eq!(split_trailing_assert(&a), ("", Some(&a[..])));
        // printf text alone, an assert not at the end, no final newline.
        for t in ["x=1\n", "", &format!("{a}x=1\n"), GUIDE] {
            assert_eq!(split_trailing_assert(t), (t, None), "{t:?}");
        }
    }
}
