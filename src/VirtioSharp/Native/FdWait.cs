using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>Waiting for a descriptor with poll(2), whatever its blocking mode (a peer can set O_NONBLOCK on a shared descriptor).</summary>
internal static unsafe class FdWait
{
    /// <summary>
    /// Waits until <paramref name="fd"/> is readable, hung up or in error, for at most
    /// <paramref name="timeoutMs"/> (-1: forever). True if it became ready, false on timeout.
    /// </summary>
    public static bool Readable(int fd, int timeoutMs)
    {
        var pfd = new Interop.PollFd { Fd = fd, Events = Interop.POLLIN | Interop.POLLRDHUP };
        var deadline = timeoutMs < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMs;
        while (true)
        {
            var wait = timeoutMs < 0 ? -1 : (int)Math.Max(0, deadline - Environment.TickCount64);
            var n = Interop.Poll(&pfd, 1, wait);
            if (n > 0)
                return true;
            if (n == 0)
                return false;
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Errno.EINTR)
                throw new IOException($"poll failed: {Errno.Describe(errno)}");
        }
    }
}
