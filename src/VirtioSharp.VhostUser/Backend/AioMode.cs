namespace VirtioSharp.VhostUser.Backend;

/// <summary>How a queue worker runs file I/O (`vblk serve --aio`).</summary>
public enum AioMode
{
    /// <summary>io_uring where the backend has a file descriptor and the kernel allows it; otherwise synchronous, with one log line saying why.</summary>
    Auto,
    /// <summary>
    /// io_uring: each queue keeps up to <see cref="Devices.IVirtioDevice.MaxQueueIoInFlight"/> reads
    /// and flushes in the host kernel at once and completes them in any order, and the worker sleeps
    /// on the kick and on those completions in one io_uring_enter(2). Which requests go there is the
    /// device's choice. Refused at start when the kernel has no usable io_uring.
    /// </summary>
    IoUring,
    /// <summary>Each queue's worker calls preadv/pwritev/fdatasync itself: one request of a queue in the kernel at a time.</summary>
    Sync,
}

/// <summary>Which way a queue worker runs, decided from <see cref="AioMode"/>, the device and the kernel's io_uring.</summary>
public static class AioChoice
{
    /// <summary>
    /// True: the worker waits in io_uring and starts reads and flushes there. False: it waits in
    /// poll(2) and the device does its I/O synchronously; <paramref name="why"/> says why when the
    /// mode asked for io_uring. <see cref="AioMode.IoUring"/> with a kernel that lacks something
    /// the worker uses is an <see cref="InvalidOperationException"/> naming it: a worker must
    /// never arm a poll the kernel ends at once, again and again.
    /// </summary>
    public static bool UseIoUring(AioMode mode, bool deviceDoesQueueIo, Native.IoUringSupport support, out string? why)
    {
        why = null;
        if (mode == AioMode.Sync || !deviceDoesQueueIo)
            return false;
        if (support.Missing is { } missing)
        {
            if (mode == AioMode.IoUring)
                throw new InvalidOperationException($"io_uring is required (--aio io_uring), but {missing}");
            why = missing;
            return false;
        }
        return true;
    }
}
