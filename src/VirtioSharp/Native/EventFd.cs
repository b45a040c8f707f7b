using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>
/// An eventfd (eventfd(2)): an 8-byte counter shared by file descriptor. vhost-user uses one per
/// queue direction: the front-end writes the kick, the back-end writes the call.
/// </summary>
internal sealed unsafe class EventFd : IDisposable
{
    public EventFd(bool nonBlocking = false)
    {
        var fd = Interop.EventFd(0, Interop.EFD_CLOEXEC | (nonBlocking ? Interop.EFD_NONBLOCK : 0));
        if (fd < 0)
            throw new IOException($"eventfd failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
        Handle = new SafeFdHandle(fd);
    }

    /// <summary>Wraps an eventfd received from a peer.</summary>
    public EventFd(SafeFdHandle handle) => Handle = handle;

    public SafeFdHandle Handle { get; }
    public int Fd => Handle.Fd;

    /// <summary>Adds one to the counter, waking a reader. False if the descriptor is unusable (closed, EBADF).</summary>
    public bool Signal()
    {
        ulong one = 1;
        while (true)
        {
            var n = Interop.Write(Handle, &one, sizeof(ulong));
            if (n == sizeof(ulong))
                return true;
            var errno = Marshal.GetLastPInvokeError();
            if (n < 0 && errno == Errno.EINTR)
                continue;
            // EAGAIN: the counter is saturated, so the reader will wake anyway.
            return n < 0 && errno == Errno.EAGAIN;
        }
    }

    /// <summary>
    /// Waits until the counter is non-zero, for at most <paramref name="timeoutMs"/> (-1: forever).
    /// Use this rather than a blocking read: the peer shares the descriptor and may have made it non-blocking.
    /// </summary>
    public bool Wait(int timeoutMs = -1) => FdWait.Readable(Fd, timeoutMs);

    /// <summary>Reads and clears the counter. Returns 0 when nothing was pending (or on error).</summary>
    public ulong Consume()
    {
        ulong value = 0;
        while (true)
        {
            var n = Interop.Read(Handle, &value, sizeof(ulong));
            if (n == sizeof(ulong))
                return value;
            if (n < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR)
                continue;
            return 0;
        }
    }

    public void Dispose() => Handle.Dispose();
}
