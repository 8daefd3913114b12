//! `vgpu smi`: the nvidia-smi-like table, through the shims.
mod common;

use common::{expected, Daemon};
use std::process::Command;

#[test]
fn smi_table_shows_the_device_and_is_aligned() {
    let d = Daemon::start_target();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.arg("smi");
    let out = common::run_guest(cmd, &d, &[]);
    out.assert_success();
    // The table: from the first border to the blank line before "Processes:".
    let table: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with('+'))
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(table.len() >= 9, "no table:\n{out}");
    let width = table[0].chars().count();
    assert_eq!(width, 91, "border:\n{out}");
    for l in &table {
        assert_eq!(l.chars().count(), width, "line {l:?} is misaligned:\n{out}");
        assert!(l.starts_with('+') || l.starts_with('|'), "{l:?}");
        assert!(l.ends_with('+') || l.ends_with('|'), "{l:?}");
    }
    // Every inner separator sits where the border's '+' joints are.
    let joints: Vec<usize> = table[2].match_indices('+').map(|(i, _)| i).collect();
    assert_eq!(joints.len(), 4, "{}", table[2]);
    for l in table
        .iter()
        .filter(|l| l.starts_with("| ") && l.matches('|').count() == 4)
    {
        let bars: Vec<usize> = l.match_indices('|').map(|(i, _)| i).collect();
        assert_eq!(bars, joints, "columns of {l:?} are off:\n{out}");
    }

    let row = table
        .iter()
        .find(|l| l.starts_with("|   0  "))
        .unwrap_or_else(|| panic!("no row for device 0:\n{out}"));
    assert!(row.contains(expected::NVML_PCI_BUS_ID), "{row}");
    // The software GPU's name and NVML total; a real board's are its own.
    if let Some(h) = expected::host() {
        assert!(row.contains(h.name), "{row}");
        let mem = format!("{}MiB", h.nvml_total_mem >> 20);
        assert!(
            table.iter().any(|l| l.contains(&format!("/ {mem} |"))),
            "no memory total {mem}:\n{out}"
        );
    }
}
