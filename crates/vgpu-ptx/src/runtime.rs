//! The device runtime functions that PTX declares `.extern .func` without a
//! body and the CUDA driver (or `cudadevrt`) provides: `vprintf`,
//! `__assertfail`, `malloc`, `free`, and cooperative groups' grid handle and
//! grid synchronisation (`cudaCGGetIntrinsicHandle`, `cudaCGSynchronize`).

use crate::exec::block::Block;
use crate::exec::thread::Thread;
use crate::exec::X;
use crate::ir::Space;
use crate::ExecError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Vprintf,
    AssertFail,
    Malloc,
    Free,
    CgGetIntrinsicHandle,
    CgSynchronize,
}

impl Builtin {
    /// The runtime function a body-less `.func` of this name stands for.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "vprintf" => Builtin::Vprintf,
            "__assertfail" => Builtin::AssertFail,
            "malloc" => Builtin::Malloc,
            "free" => Builtin::Free,
            "cudaCGGetIntrinsicHandle" => Builtin::CgGetIntrinsicHandle,
            "cudaCGSynchronize" => Builtin::CgSynchronize,
            _ => return None,
        })
    }
}

/// What a builtin asks of the thread after it ran.
pub(crate) enum After {
    /// Continue with this return value.
    Return(u64),
    /// Wait at a grid-wide barrier, then continue (returning 0).
    GridSync,
}

/// Longest string read from device memory for `%s` and messages.
const MAX_STRING: usize = 1 << 16;

/// Widest field width or precision honoured.
const MAX_FIELD: usize = 4096;

/// Reads a NUL-terminated string at generic address `a`.
fn read_cstr(b: &mut Block, t: &mut Thread, a: u64, line: u32) -> X<Vec<u8>> {
    let mut out = Vec::new();
    let mut a = a;
    while out.len() < MAX_STRING {
        let mut c = [0u8; 1];
        let loc = b.locate(Space::Generic, a);
        b.load(t, loc, &mut c, line)?;
        if c[0] == 0 {
            break;
        }
        out.push(c[0]);
        a += 1;
    }
    Ok(out)
}

fn string(b: &mut Block, t: &mut Thread, a: u64, line: u32) -> X<String> {
    if a == 0 {
        return Ok("(null)".into());
    }
    Ok(String::from_utf8_lossy(&read_cstr(b, t, a, line)?).into_owned())
}

pub(crate) fn call(b: &mut Block, t: &mut Thread, f: Builtin, args: &[u64], line: u32) -> X<After> {
    let arg = |k: usize| args.get(k).copied().unwrap_or(0);
    Ok(match f {
        Builtin::Vprintf => {
            let fmt = read_cstr(b, t, arg(0), line)?;
            let mut args = ArgBuf {
                base: arg(1),
                off: 0,
            };
            let (text, n) = format(b, t, &fmt, &mut args, line)?;
            b.print(&text);
            After::Return(n as u64)
        }
        Builtin::AssertFail => {
            let message = string(b, t, arg(0), line)?;
            let file = string(b, t, arg(1), line)?;
            let src_line = arg(2) as u32;
            let function = string(b, t, arg(3), line)?;
            let [bx, by, bz] = b.ctaid;
            let [tx, ty, tz] = t.tid;
            // Not subject to the printf buffer's limit.
            b.out.push_str(&format!(
                "{file}:{src_line}: {function}: block: [{bx},{by},{bz}], thread: \
                 [{tx},{ty},{tz}] Assertion `{message}` failed.\n"
            ));
            return Err(ExecError::Assert {
                message,
                file,
                line: src_line,
                function,
            });
        }
        Builtin::Malloc => After::Return(b.l.mem.device_alloc(arg(0)).unwrap_or(0)),
        Builtin::Free => {
            if arg(0) != 0 {
                b.l.mem.device_free(arg(0));
            }
            After::Return(0)
        }
        Builtin::CgGetIntrinsicHandle => After::Return(b.l.grid_workspace),
        Builtin::CgSynchronize => {
            if !b.l.cooperative {
                return Err(ExecError::InvalidConfig(
                    "grid synchronization in a kernel that was not launched cooperatively".into(),
                ));
            }
            After::GridSync
        }
    })
}

/// The packed argument buffer of `vprintf`: each argument at the next
/// multiple of its own size, as nvcc lays them out.
struct ArgBuf {
    base: u64,
    off: u64,
}

impl ArgBuf {
    fn next(&mut self, b: &mut Block, t: &mut Thread, size: u64, line: u32) -> X<u64> {
        if self.base == 0 {
            return Ok(0);
        }
        self.off = self.off.next_multiple_of(size);
        let mut buf = [0u8; 8];
        let loc = b.locate(Space::Generic, self.base + self.off);
        b.load(t, loc, &mut buf[..size as usize], line)?;
        self.off += size;
        Ok(u64::from_le_bytes(buf))
    }
}

#[derive(Default)]
struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Formats like C's `printf`; returns the text and the number of
/// arguments consumed.
fn format(
    b: &mut Block,
    t: &mut Thread,
    fmt: &[u8],
    args: &mut ArgBuf,
    line: u32,
) -> X<(String, usize)> {
    let mut out = String::new();
    let mut n = 0;
    let mut i = 0;
    while i < fmt.len() {
        if fmt[i] != b'%' {
            let start = i;
            while i < fmt.len() && fmt[i] != b'%' {
                i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&fmt[start..i]));
            continue;
        }
        i += 1;
        let (mut s, long) = spec(b, t, fmt, &mut i, args, &mut n, line)?;
        let Some(&conv) = fmt.get(i) else { break };
        i += 1;
        match conv {
            b'%' => out.push('%'),
            b'd' | b'i' | b'u' | b'x' | b'X' | b'o' | b'c' | b's' | b'p' | b'f' | b'F' | b'e'
            | b'E' | b'g' | b'G' | b'a' | b'A' => {
                n += 1;
                let (prefix, body) = convert(b, t, conv, long, &mut s, args, line)?;
                pad(&mut out, &s, &prefix, &body);
            }
            other => {
                // Unknown conversion: print it as written, like glibc.
                out.push('%');
                out.push(other as char);
            }
        }
    }
    Ok((out, n))
}

/// Parses flags, width, precision and length of a conversion starting at
/// `fmt[*i]` (after the `%`); `*` widths take an argument. Returns the
/// spec and whether a `l`-class length modifier asks for 64 bits.
fn spec(
    b: &mut Block,
    t: &mut Thread,
    fmt: &[u8],
    i: &mut usize,
    args: &mut ArgBuf,
    n: &mut usize,
    line: u32,
) -> X<(Spec, bool)> {
    let mut s = Spec::default();
    while let Some(&c) = fmt.get(*i) {
        match c {
            b'-' => s.left = true,
            b'+' => s.plus = true,
            b' ' => s.space = true,
            b'#' => s.alt = true,
            b'0' => s.zero = true,
            _ => break,
        }
        *i += 1;
    }
    let mut number = |i: &mut usize, b: &mut Block, t: &mut Thread| -> X<Option<usize>> {
        if fmt.get(*i) == Some(&b'*') {
            *i += 1;
            *n += 1;
            let v = args.next(b, t, 4, line)? as u32 as i32;
            return Ok(Some(v.max(0) as usize));
        }
        let start = *i;
        while fmt.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        Ok(std::str::from_utf8(&fmt[start..*i])
            .ok()
            .and_then(|d| d.parse().ok()))
    };
    // A kernel must not make the driver build huge strings.
    s.width = number(i, b, t)?.map(|w| w.min(MAX_FIELD));
    if fmt.get(*i) == Some(&b'.') {
        *i += 1;
        s.prec = Some(number(i, b, t)?.unwrap_or(0).min(MAX_FIELD));
    }
    let mut long = false;
    while let Some(&c) = fmt.get(*i) {
        match c {
            b'l' | b'z' | b'j' | b't' | b'q' => long = true,
            b'h' | b'L' => {}
            _ => break,
        }
        *i += 1;
    }
    Ok((s, long))
}

/// One conversion's sign/prefix and digits, reading its argument.
fn convert(
    b: &mut Block,
    t: &mut Thread,
    conv: u8,
    long: bool,
    s: &mut Spec,
    args: &mut ArgBuf,
    line: u32,
) -> X<(String, String)> {
    let isize = if long { 8 } else { 4 };
    let sign = |neg: bool, s: &Spec| {
        if neg {
            "-"
        } else if s.plus {
            "+"
        } else if s.space {
            " "
        } else {
            ""
        }
        .to_string()
    };
    Ok(match conv {
        b'd' | b'i' => {
            let v = args.next(b, t, isize, line)?;
            let v = if long {
                v as i64
            } else {
                v as u32 as i32 as i64
            };
            (
                sign(v < 0, s),
                int_digits(v.unsigned_abs(), 10, false, s.prec),
            )
        }
        b'u' | b'x' | b'X' | b'o' => {
            let v = args.next(b, t, isize, line)?;
            let v = if long { v } else { v as u32 as u64 };
            let (radix, upper) = match conv {
                b'u' => (10, false),
                b'o' => (8, false),
                b'x' => (16, false),
                _ => (16, true),
            };
            let digits = int_digits(v, radix, upper, s.prec);
            let prefix = match conv {
                b'x' if s.alt && v != 0 => "0x",
                b'X' if s.alt && v != 0 => "0X",
                b'o' if s.alt && !digits.starts_with('0') => "0",
                _ => "",
            };
            (prefix.to_string(), digits)
        }
        b'c' => {
            let v = args.next(b, t, 4, line)? as u8;
            s.zero = false;
            (String::new(), (v as char).to_string())
        }
        b's' => {
            let a = args.next(b, t, 8, line)?;
            let mut text = string(b, t, a, line)?;
            if let Some(p) = s.prec {
                text = text.chars().take(p).collect();
            }
            s.zero = false;
            (String::new(), text)
        }
        b'p' => {
            let a = args.next(b, t, 8, line)?;
            s.zero = false;
            ("0x".to_string(), format!("{a:x}"))
        }
        _ => {
            let v = f64::from_bits(args.next(b, t, 8, line)?);
            if !v.is_finite() {
                s.zero = false;
            }
            (
                sign(v.is_sign_negative() && !v.is_nan(), s),
                float_body(v.abs(), conv, s),
            )
        }
    })
}

fn pad(out: &mut String, s: &Spec, prefix: &str, digits: &str) {
    let len = prefix.len() + digits.chars().count();
    let w = s.width.unwrap_or(0);
    let fill = w.saturating_sub(len);
    if s.left {
        out.push_str(prefix);
        out.push_str(digits);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if s.zero {
        out.push_str(prefix);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(digits);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(prefix);
        out.push_str(digits);
    }
}

fn int_digits(v: u64, radix: u32, upper: bool, prec: Option<usize>) -> String {
    let mut d = match radix {
        8 => format!("{v:o}"),
        16 if upper => format!("{v:X}"),
        16 => format!("{v:x}"),
        _ => v.to_string(),
    };
    match prec {
        // Precision 0 prints nothing for the value 0.
        Some(0) if v == 0 => d.clear(),
        Some(p) if d.len() < p => d = "0".repeat(p - d.len()) + &d,
        _ => {}
    }
    d
}

/// `%e` of a non-negative value in C's form (`1.500000e+02`).
fn exp_form(v: f64, prec: usize, upper: bool) -> String {
    let s = format!("{v:.prec$e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    let e = if upper { 'E' } else { 'e' };
    format!("{mant}{e}{sign}{:02}", exp.abs())
}

fn float_body(v: f64, conv: u8, s: &Spec) -> String {
    let upper = conv.is_ascii_uppercase();
    if v.is_nan() {
        return if upper { "NAN" } else { "nan" }.into();
    }
    if v.is_infinite() {
        return if upper { "INF" } else { "inf" }.into();
    }
    let prec = s.prec.unwrap_or(6);
    match conv {
        b'f' | b'F' => {
            let mut r = format!("{v:.prec$}");
            if s.alt && prec == 0 {
                r.push('.');
            }
            r
        }
        b'e' | b'E' | b'a' | b'A' => exp_form(v, prec, upper),
        _ => {
            // %g: %e or %f by the exponent, trailing zeros removed.
            let p = if prec == 0 { 1 } else { prec };
            let x = if v == 0.0 {
                0
            } else {
                // The exponent after rounding to p significant digits.
                let e = format!("{v:.*e}", p - 1);
                e.split_once('e')
                    .map_or(0, |(_, x)| x.parse::<i32>().unwrap_or(0))
            };
            let mut r = if x < -4 || x >= p as i32 {
                exp_form(v, p - 1, upper)
            } else {
                format!("{v:.*}", (p as i32 - 1 - x) as usize)
            };
            if !s.alt {
                let (m, e) = match r.find(['e', 'E']) {
                    Some(k) => (r[..k].to_string(), r[k..].to_string()),
                    None => (r.clone(), String::new()),
                };
                let m = if m.contains('.') {
                    m.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    m
                };
                r = m + &e;
            }
            r
        }
    }
}
