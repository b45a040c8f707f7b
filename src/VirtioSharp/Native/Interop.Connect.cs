using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>connect(2) to a Unix socket address.</summary>
    [LibraryImport(Libc, EntryPoint = "connect", SetLastError = true)]
    internal static unsafe partial int Connect(SafeFdHandle fd, SockAddrUn* address, uint length);
}
