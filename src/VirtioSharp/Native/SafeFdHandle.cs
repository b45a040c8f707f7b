using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>A file descriptor we own (eventfd, memfd, one received over a socket); closed exactly once.</summary>
internal sealed class SafeFdHandle : SafeHandle
{
    public SafeFdHandle() : base(-1, ownsHandle: true) { }

    public SafeFdHandle(int fd, bool ownsHandle = true) : base(-1, ownsHandle) => SetHandle(fd);

    public override bool IsInvalid => handle < 0;

    /// <summary>The descriptor number, for poll sets and messages; valid while this handle is alive.</summary>
    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Interop.Close((int)handle) == 0;
}
