using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>bind(2) to a Unix socket address.</summary>
    [LibraryImport(Libc, EntryPoint = "bind", SetLastError = true)]
    internal static unsafe partial int Bind(SafeFdHandle fd, SockAddrUn* address, uint length);
}
