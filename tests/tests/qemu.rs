//! The same kernel ELF under QEMU TCG (`-M microvm`): real x86 semantics, INIT/SIPI start-up,
//! the UART and isa-debug-exit instead of k42vm's paravirtual interface.

use k42_tests::*;

fn qemu_ktests(cpus: u32) {
    let run = qemu_tcg_microvm(cpus, None, "k42.ktest");
    let context = run.all();
    // isa-debug-exit: QEMU exits with (code << 1) | 1, so a guest exit code of 0 is status 1.
    assert_eq!(
        run.status,
        Some(1),
        "guest did not exit with code 0\n{context}"
    );
    assert!(
        run.stdout.contains("on a non-k42vm hypervisor"),
        "{context}"
    );
    assert_eq!(
        banner_cpus(&run.stdout),
        Some(cpus),
        "not every CPU came up by INIT/SIPI\n{context}"
    );
    assert_all_ktests_passed(&run.stdout, &context);
}

#[test]
fn qemu_tcg_microvm_1_cpu() {
    qemu_ktests(1);
}

#[test]
fn qemu_tcg_microvm_2_cpus() {
    qemu_ktests(2);
}
