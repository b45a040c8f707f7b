using VirtioSharp.Memory;

namespace VirtioSharp.Devices;

/// <summary>
/// What a queue's worker lends its device so one queue can have many requests in flight: the
/// worker's kernel ring for file I/O (io_uring; absent on some workers) and a
/// <see cref="CompletionPort"/> for operations that other threads complete. The device starts
/// an operation tagged with the head of its chain; the worker later hands the result to
/// <see cref="IVirtioDevice.CompleteIo"/> on its own thread. The iovec array and every buffer it
/// names stay valid until then, and a worker never stops, or lets guest memory be unmapped,
/// while an operation is outstanding.
/// </summary>
public unsafe interface IQueueIo
{
    /// <summary>Starts preadv on the worker's ring; false when it cannot be taken now or there is no ring.</summary>
    bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag);

    /// <summary>Starts fdatasync on the worker's ring; false when it cannot be taken now or there is no ring.</summary>
    bool TryStartFlush(int fd, ushort tag);

    /// <summary>Where other threads post completions for this queue; null when the worker takes none.</summary>
    CompletionPort? Completions => null;
}
