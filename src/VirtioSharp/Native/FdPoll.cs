using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>poll(2) over a few descriptors, without allocating.</summary>
public static unsafe class FdPoll
{
    /// <summary>
    /// Waits until one of <paramref name="fds"/> is readable (or hung up), or the timeout passes
    /// (-1: forever). Returns the number of ready descriptors; EINTR is retried.
    /// The caller keeps the descriptors open for the duration of the call.
    /// </summary>
    public static int Wait(Span<PollFd> fds, int timeoutMs)
    {
        fixed (PollFd* p = fds)
        {
            while (true)
            {
                var n = Interop.Poll(p, (nuint)fds.Length, timeoutMs);
                if (n >= 0)
                    return n;
                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                    throw new NativeCallException("poll", errno);
            }
        }
    }

    /// <summary>Waits for one descriptor to become readable; false on timeout.</summary>
    public static bool WaitReadable(SafeFdHandle fd, int timeoutMs)
    {
        var added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            Span<PollFd> set = [new PollFd(fd.Fd)];
            return Wait(set, timeoutMs) > 0;
        }
        finally
        {
            if (added)
                fd.DangerousRelease();
        }
    }
}
