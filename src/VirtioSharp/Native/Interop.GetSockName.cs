using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>getsockname(2) into a Unix socket address (other families fill its first bytes and say so in Family).</summary>
    [LibraryImport(Libc, EntryPoint = "getsockname", SetLastError = true)]
    internal static unsafe partial int GetSockName(SafeFdHandle socket, SockAddrUn* address, uint* length);
}
