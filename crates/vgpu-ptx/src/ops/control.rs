//! Control flow and block synchronisation: `bra`, `call`, `ret`, `exit`,
//! `bar`/`barrier` (`.sync`, `.arrive`, `.red`), `trap`, `brkpt`, and the
//! instructions with nothing to do here (`nanosleep`, `pmevent`,
//! `griddepcontrol` — no programmatic dependent launch exists —,
//! `setmaxnreg`).

use super::{Decoded, Mods};
use crate::exec::block::Block;
use crate::exec::thread::{Flow, St, Thread};
use crate::exec::X;
use crate::ir::{Inst, Op, Opnd, Ty};
use crate::ExecError;

/// What `bar.red` reduces the block's predicates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarRed {
    Popc,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlOp {
    Bra,
    /// `Inst::ops[0]` is `Imm(index into Function::calls)`.
    Call,
    Ret,
    Exit,
    /// `bar.sync` / `barrier.sync` / `bar.red`: block-wide rendezvous.
    Bar {
        red: Option<BarRed>,
    },
    /// `bar.arrive`: no wait.
    BarArrive,
    Trap,
    Nop,
}

pub(crate) fn decode(m: &Mods) -> Option<Decoded> {
    let ty = m.ty();
    let ctl = |op| Some(Decoded::new(Op::Ctl(op), ty));
    match m.opcode {
        "bra" => ctl(CtlOp::Bra),
        "call" => ctl(CtlOp::Call),
        "ret" => ctl(CtlOp::Ret),
        "exit" => ctl(CtlOp::Exit),
        "bar" | "barrier" if !m.has("warp") => {
            let d = |op| Some(Decoded::new(Op::Ctl(op), Ty::U32));
            if m.has("arrive") {
                return d(CtlOp::BarArrive);
            }
            if m.has("red") {
                let r = if m.has("popc") {
                    BarRed::Popc
                } else if m.has("and") {
                    BarRed::And
                } else if m.has("or") {
                    BarRed::Or
                } else {
                    return super::unsupported(ty);
                };
                return d(CtlOp::Bar { red: Some(r) });
            }
            m.has("cta");
            d(CtlOp::Bar { red: None })
        }
        "trap" | "brkpt" => ctl(CtlOp::Trap),
        "nanosleep" | "pmevent" | "griddepcontrol" | "setmaxnreg" => {
            m.accept_all();
            ctl(CtlOp::Nop)
        }
        _ => None,
    }
}

pub(crate) fn exec(b: &mut Block, t: &mut Thread, i: &Inst, op: CtlOp) -> X<Flow> {
    Ok(match op {
        CtlOp::Bra => {
            if let Opnd::Label(l) = i.ops[0] {
                if l < t.pc {
                    b.loops += 1;
                    if b.loops & 0xffff == 0 && b.l.should_stop() {
                        return Err(ExecError::Cancelled);
                    }
                    // In a cooperative launch a loop may spin on another
                    // block's progress: let that block's thread run.
                    if b.l.cooperative && b.loops & 0xff == 0 {
                        std::thread::yield_now();
                    }
                }
                t.pc = l;
            }
            Flow::Next
        }
        CtlOp::Call => {
            if b.call(t, i)? {
                Flow::Switched
            } else {
                Flow::Stop
            }
        }
        CtlOp::Ret => {
            if b.ret(t, i.line)? {
                Flow::Switched
            } else {
                t.st = St::Done;
                Flow::Stop
            }
        }
        CtlOp::Exit => {
            t.st = St::Done;
            Flow::Stop
        }
        CtlOp::Bar { .. } => {
            t.pc -= 1;
            t.st = St::Bar;
            Flow::Stop
        }
        CtlOp::BarArrive | CtlOp::Nop => Flow::Next,
        CtlOp::Trap => return Err(ExecError::Trap { line: i.line }),
    })
}

/// Releases a block barrier: every live thread is waiting at one.
pub(crate) fn release_barrier(b: &Block, threads: &mut [Thread]) {
    let m = b.l.m;
    // bar.red: reduce each waiting thread's predicate over the block.
    let (mut count, mut all, mut any) = (0u64, true, false);
    for t in threads.iter().filter(|t| t.st == St::Bar) {
        let i = t.inst(m);
        if let Op::Ctl(CtlOp::Bar { red: Some(_) }) = i.op {
            let p = i.ops.last().is_some_and(|x| b.get(t, x) != 0);
            count += p as u64;
            all &= p;
            any |= p;
        }
    }
    for t in threads.iter_mut().filter(|t| t.st == St::Bar) {
        let i = t.inst(m);
        if let Op::Ctl(CtlOp::Bar { red: Some(r) }) = i.op {
            let v = match r {
                BarRed::Popc => count,
                BarRed::And => all as u64,
                BarRed::Or => any as u64,
            };
            Block::set(t, &i.ops[0], v);
        }
        t.pc += 1;
        t.st = St::Run;
    }
}
