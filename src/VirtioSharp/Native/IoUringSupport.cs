namespace VirtioSharp.Native;

/// <summary>
/// What this kernel's io_uring offers a queue worker, found out once by trying it: a ring can
/// be set up (with IORING_FEAT_NODROP, Linux 5.5), the opcodes the worker queues exist
/// (READV, FSYNC, POLL_ADD), and a poll can be multishot (IORING_POLL_ADD_MULTI, Linux 5.13).
/// Before 5.13 a multishot poll ends at once with EINVAL; a worker that armed it again would spin.
/// </summary>
public sealed record IoUringSupport(bool Ring, bool ReadV, bool FSync, bool PollAdd, bool MultishotPoll, string? RingProblem = null)
{
    /// <summary>Everything a worker needs is there.</summary>
    public bool Complete => Missing is null;

    /// <summary>Null when complete; otherwise what is missing, in words for a log line.</summary>
    public string? Missing =>
        !Ring ? RingProblem ?? "io_uring cannot be set up"
        : !ReadV ? "io_uring has no IORING_OP_READV"
        : !FSync ? "io_uring has no IORING_OP_FSYNC"
        : !PollAdd ? "io_uring has no IORING_OP_POLL_ADD"
        : !MultishotPoll ? "io_uring has no multishot poll (IORING_POLL_ADD_MULTI came in Linux 5.13)"
        : null;

    private static readonly Lazy<IoUringSupport> s_probed = new(ProbeNow, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The probe's answer for this process (probed on first use).</summary>
    public static IoUringSupport Probed => s_probed.Value;

    /// <summary>Probes the kernel now: sets up a small ring, asks for the opcodes and arms one multishot poll.</summary>
    public static IoUringSupport ProbeNow()
    {
        using var ring = IoUring.TryCreate(4, out var why);
        if (ring is null)
            return new IoUringSupport(false, false, false, false, false, why);
        // A kernel that cannot list its opcodes (before 5.6) has these three: they came in 5.1.
        var readV = ring.SupportsOpcode(IoUring.OpReadV) ?? true;
        var fsync = ring.SupportsOpcode(IoUring.OpFSync) ?? true;
        var pollAdd = ring.SupportsOpcode(IoUring.OpPollAdd) ?? true;
        return new IoUringSupport(true, readV, fsync, pollAdd, pollAdd && MultishotWorks(ring));
    }

    /// <summary>Arms a multishot poll on a readable eventfd: it must complete with POLLIN and stay armed (IORING_CQE_F_MORE).</summary>
    private static bool MultishotWorks(IoUring ring)
    {
        using var ready = EventFd.Create();
        ready.Signal(); // readable before the poll is armed, so the wait below returns at once
        bool added = false;
        try
        {
            ready.Handle.DangerousAddRef(ref added);
            if (!ring.QueuePollMultishot(ready.Fd, 1))
                return false;
            for (var attempt = 0; attempt < 3; attempt++)
            {
                ring.SubmitAndWait(wait: true); // may return early on a signal (EINTR)
                if (ring.TryTakeCompletion(out var cqe))
                    return cqe.UserData == 1 && cqe.Result > 0 && (cqe.Flags & IoUring.CqeFlagMore) != 0;
            }
            return false;
        }
        catch (NativeCallException)
        {
            return false;
        }
        finally
        {
            if (added)
                ready.Handle.DangerousRelease();
        }
    }
}
