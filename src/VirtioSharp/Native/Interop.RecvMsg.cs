using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>recvmsg(2): a message and any SCM_RIGHTS file descriptors that came with it.</summary>
    [LibraryImport(Libc, EntryPoint = "recvmsg", SetLastError = true)]
    internal static unsafe partial nint RecvMsg(SafeHandle socket, MsgHdr* message, int flags);
}
