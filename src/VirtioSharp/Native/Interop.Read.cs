using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>read(2).</summary>
    [LibraryImport(Libc, EntryPoint = "read", SetLastError = true)]
    internal static unsafe partial nint Read(SafeFdHandle fd, void* buffer, nuint count);
}
