using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int SHUT_RDWR = 2;

    /// <summary>shutdown(2).</summary>
    [LibraryImport(Libc, EntryPoint = "shutdown", SetLastError = true)]
    internal static partial int Shutdown(SafeFdHandle fd, int how);
}
