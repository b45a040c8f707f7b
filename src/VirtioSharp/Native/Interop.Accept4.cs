using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>accept4(2), without the peer address.</summary>
    [LibraryImport(Libc, EntryPoint = "accept4", SetLastError = true)]
    internal static partial int Accept4(SafeFdHandle fd, nint address, nint addressLength, int flags);
}
