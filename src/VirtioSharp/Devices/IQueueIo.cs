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

    /// <summary>
    /// Starts pwritev on the worker's ring; false when it cannot be taken now or there is no ring.
    /// Only for a descriptor whose writes the kernel can run concurrently (O_DIRECT): buffered
    /// writes to one file are serialised in the kernel and gain nothing from the ring.
    /// </summary>
    bool TryStartWrite(int fd, IoVec* iov, int count, ulong offset, ushort tag) => false;

    /// <summary>Starts fdatasync on the worker's ring; false when it cannot be taken now or there is no ring.</summary>
    bool TryStartFlush(int fd, ushort tag);

    /// <summary>Where other threads post completions for this queue; null when the worker takes none.</summary>
    CompletionPort? Completions => null;

    /// <summary>
    /// Asks the worker to call <see cref="IReadableWatcher.Readable"/> on its own thread each time
    /// <paramref name="fd"/> becomes readable or hangs up, beside its other waits, until the watcher declines or
    /// the worker stops (<see cref="IReadableWatcher.Released"/>, on the worker's thread, in both
    /// cases). The worker takes the completions posted to <see cref="Completions"/> right after each
    /// call. False when the worker cannot watch (no kernel ring, every watch slot taken).
    /// </summary>
    bool TryWatch(int fd, IReadableWatcher watcher) => false;
}

/// <summary>
/// Something a queue's worker serves on its own thread when a descriptor becomes readable
/// (<see cref="IQueueIo.TryWatch"/>): a storage client that receives its replies there instead of
/// on a thread of its own.
/// </summary>
public interface IReadableWatcher
{
    /// <summary>
    /// The descriptor may be readable (a spare call is possible); false: stop watching.
    /// <paramref name="events"/>: the poll(2) events seen (POLLIN, POLLRDHUP, POLLHUP, POLLERR),
    /// or -1 when not known; after a hang-up the descriptor must be read until its end, since
    /// no later wake-up will say so again.
    /// </summary>
    bool Readable(int events);

    /// <summary>The worker no longer watches (it stops, or <see cref="Readable"/> said so). Called once.</summary>
    void Released();
}
