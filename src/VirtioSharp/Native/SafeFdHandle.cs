using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>
/// A Linux file descriptor we own. Closing goes through the SafeHandle reference count, so a
/// descriptor in use by a system call on another thread is closed only after that call returns,
/// and no error path can close it twice.
/// </summary>
public sealed class SafeFdHandle : SafeHandle
{
    public SafeFdHandle() : base(-1, ownsHandle: true) { }

    public SafeFdHandle(int fd, bool ownsHandle = true) : base(-1, ownsHandle) => SetHandle(fd);

    public override bool IsInvalid => handle == -1;

    /// <summary>The raw number, for logs and for poll; the caller keeps this handle alive while using it.</summary>
    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Interop.Close((int)handle) == 0;

    /// <summary>Wraps the result of a call that returns a new descriptor or -1 with errno.</summary>
    internal static SafeFdHandle FromResult(int fd, string call)
    {
        if (fd < 0)
            throw NativeCallException.FromLastError(call);
        return new SafeFdHandle(fd);
    }
}
