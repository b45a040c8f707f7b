namespace VirtioSharp.VhostUser.Backend;

/// <summary>How a queue worker runs file I/O (`vblk serve --aio`).</summary>
public enum AioMode
{
    /// <summary>io_uring where the backend has a file descriptor and the kernel allows it; otherwise synchronous, with one log line saying why.</summary>
    Auto,
    /// <summary>
    /// io_uring: each queue keeps up to <see cref="Block.BlkDevice.MaxAsyncPerQueue"/> reads and
    /// flushes in the host kernel at once and completes them in any order, and the worker sleeps
    /// on the kick and on those completions in one io_uring_enter(2). Writes stay synchronous
    /// (see BlkDevice). Refused at start when the kernel has no usable io_uring.
    /// </summary>
    IoUring,
    /// <summary>Each queue's worker calls preadv/pwritev/fdatasync itself: one request of a queue in the kernel at a time.</summary>
    Sync,
}
