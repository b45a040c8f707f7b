using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int MSG_NOSIGNAL = 0x4000;

    /// <summary>sendmsg(2): bytes plus SCM_RIGHTS descriptors.</summary>
    [LibraryImport(Libc, EntryPoint = "sendmsg", SetLastError = true)]
    internal static unsafe partial nint SendMsg(SafeFdHandle fd, MsgHdr* message, int flags);
}

internal static partial class Interop
{
    /// <summary>sendmsg(2) on a socket owned by a <see cref="System.Net.Sockets.Socket"/> (NBD: header and data in one call).</summary>
    [LibraryImport(Libc, EntryPoint = "sendmsg", SetLastError = true)]
    internal static unsafe partial nint SendMsg(System.Net.Sockets.SafeSocketHandle fd, MsgHdr* message, int flags);
}
