using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>
/// An eventfd(2): an 8-byte counter one side adds to and the other drains. vhost-user uses
/// them as kick (driver to device), call (device to driver) and error notifiers.
/// Signal and read do not allocate.
/// </summary>
public sealed unsafe class EventFd : IDisposable
{
    private EventFd(SafeFdHandle handle) => Handle = handle;
    private int _nonBlocking; // 0: not asked yet, 1: O_NONBLOCK, 2: blocking or unknown

    public SafeFdHandle Handle { get; }
    public int Fd => Handle.Fd;

    /// <summary>Creates a close-on-exec eventfd, non-blocking unless asked otherwise.</summary>
    public static EventFd Create(bool nonBlocking = true)
    {
        var flags = Interop.EFD_CLOEXEC | (nonBlocking ? Interop.EFD_NONBLOCK : 0);
        return new EventFd(SafeFdHandle.FromResult(Interop.EventFd(0, flags), "eventfd"));
    }

    /// <summary>Takes ownership of an eventfd received from a peer.</summary>
    public static EventFd Adopt(SafeFdHandle handle) => new(handle);

    /// <summary>
    /// True when <paramref name="handle"/> is an eventfd: its /proc/self/fd link reads
    /// <c>anon_inode:[eventfd]</c>. A peer may send anything; only an eventfd reads and polls as one.
    /// </summary>
    public static bool IsEventFd(SafeFdHandle handle)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return new FileInfo($"/proc/self/fd/{handle.Fd}").LinkTarget == "anon_inode:[eventfd]";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
    }

    /// <summary>
    /// Whether the descriptor's file has O_NONBLOCK (asked once, fcntl F_GETFL). A peer's eventfd
    /// carries the flags its creator chose; false when the question fails.
    /// </summary>
    public bool IsNonBlocking
    {
        get
        {
            if (_nonBlocking == 0)
            {
                int flags;
                try
                {
                    flags = Interop.Fcntl(Handle, Interop.F_GETFL);
                }
                catch (ObjectDisposedException)
                {
                    flags = -1;
                }
                _nonBlocking = flags >= 0 && (flags & Interop.O_NONBLOCK) != 0 ? 1 : 2;
            }
            return _nonBlocking == 1;
        }
    }

    /// <summary>Adds <paramref name="value"/> to the counter. False if the descriptor is closed or the counter is full.</summary>
    public bool Signal(ulong value = 1)
    {
        try
        {
            while (true)
            {
                if (Interop.Write(Handle, &value, sizeof(ulong)) == sizeof(ulong))
                    return true;
                if (Marshal.GetLastPInvokeError() != Errno.EINTR)
                    return false;
            }
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>Reads and clears the counter. False when it was zero (non-blocking) or the descriptor failed.</summary>
    public bool TryRead(out ulong value)
    {
        ulong v = 0;
        try
        {
            while (true)
            {
                if (Interop.Read(Handle, &v, sizeof(ulong)) == sizeof(ulong))
                {
                    value = v;
                    return true;
                }
                if (Marshal.GetLastPInvokeError() != Errno.EINTR)
                {
                    value = 0;
                    return false;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            value = 0;
            return false;
        }
    }

    /// <summary>Waits until the counter is non-zero; false on timeout. Does not read it.</summary>
    public bool Wait(int timeoutMs) => FdPoll.WaitReadable(Handle, timeoutMs);

    public void Dispose() => Handle.Dispose();
}
