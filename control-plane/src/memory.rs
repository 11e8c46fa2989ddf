//! Process-wide memory settings, shared by the `geiger` binary and the
//! control-plane benchmarks (which should measure what a node runs).

/// Transparent huge pages off for this process. mimalloc asks for them
/// (`madvise(MADV_HUGEPAGE)`) on the arena it reserves, so a few touched
/// kilobytes can make a whole 2 MiB page resident. On a 3-node cluster
/// grown to 1,000,000 draws (`cargo bench -p geiger-node --bench
/// node_memory`, docs/ARCHITECTURE.md) that was about 50 MiB of each node's
/// resident memory: peaks (VmHWM) of 240-255 MiB against the target of
/// 256 MiB, and 184-207 MiB without, at the same throughput. It cost CPU
/// too: the cluster benchmark spent about 7 % of its CPU zeroing huge pages
/// and drew about 5 % fewer draws a second at 64 writers. The flag covers
/// every mapping of the process, also where the kernel's THP mode is
/// `always`. Where the kernel lacks it the call fails and nothing changes.
/// Call it first thing in `main`.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: integer arguments only; the call changes a flag of this
    // process's address space and touches none of our memory.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
