using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int SO_TYPE = 3;
    internal const int SO_ACCEPTCONN = 30;

    /// <summary>getsockopt(2).</summary>
    [LibraryImport(Libc, EntryPoint = "getsockopt", SetLastError = true)]
    internal static unsafe partial int GetSockOpt(SafeFdHandle socket, int level, int name, void* value, uint* length);
}
