using VirtioSharp.Devices;
using VirtioSharp.Memory;
using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// <see cref="IQueueIo"/> on a queue worker's io_uring. Completions are tagged with the chain
/// head in the low 16 bits of user_data; the worker's own polls use tags above that range.
/// Operations other threads complete arrive on <paramref name="port"/>, whose eventfd the
/// worker polls on the same ring.
/// </summary>
internal sealed unsafe class IoUringQueueIo(IoUring ring, CompletionPort port) : IQueueIo
{
    public const ulong KickTag = 1UL << 62;
    public const ulong ControlTag = 2UL << 62;
    public const ulong CompletionTag = 3UL << 62;

    public CompletionPort Completions => port;
    public const ulong TimerTag = 1UL << 61;
    /// <summary>The <see cref="CallWatchdog"/>'s timeout (timespec slot 1; the limits' timer has slot 0).</summary>
    public const ulong WatchdogTag = TimerTag + 1;
    /// <summary>The call eventfd's write the worker queues before it waits; it completes only when it fails.</summary>
    public const ulong CallTag = TimerTag + 2;

    public static bool IsIo(ulong userData) => userData <= ushort.MaxValue;

    public bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag) =>
        ring.QueueReadV(fd, iov, count, offset, tag) || (SubmitQueued() && ring.QueueReadV(fd, iov, count, offset, tag));

    public bool TryStartWrite(int fd, IoVec* iov, int count, ulong offset, ushort tag) =>
        ring.QueueWriteV(fd, iov, count, offset, tag) || (SubmitQueued() && ring.QueueWriteV(fd, iov, count, offset, tag));

    public bool TryStartFlush(int fd, ushort tag) =>
        ring.QueueFDataSync(fd, tag) || (SubmitQueued() && ring.QueueFDataSync(fd, tag));

    /// <summary>The submission queue is full: hand it to the kernel (which frees it) and try once more.</summary>
    private bool SubmitQueued()
    {
        ring.SubmitAndWait(wait: false);
        return true;
    }
}
