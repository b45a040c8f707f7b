using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int MSG_CTRUNC = 0x8;
    internal const int MSG_CMSG_CLOEXEC = 0x40000000;

    /// <summary>recvmsg(2): bytes plus SCM_RIGHTS descriptors.</summary>
    [LibraryImport(Libc, EntryPoint = "recvmsg", SetLastError = true)]
    internal static unsafe partial nint RecvMsg(SafeFdHandle fd, MsgHdr* message, int flags);
}

internal static partial class Interop
{
    internal const int MSG_DONTWAIT = 0x40;

    /// <summary>recvmsg(2) on a socket owned by a <see cref="System.Net.Sockets.Socket"/> (NBD: replies straight into guest memory).</summary>
    [LibraryImport(Libc, EntryPoint = "recvmsg", SetLastError = true)]
    internal static unsafe partial nint RecvMsg(System.Net.Sockets.SafeSocketHandle fd, MsgHdr* message, int flags);
}
