using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>pwrite(2) from one buffer.</summary>
    [LibraryImport(Libc, EntryPoint = "pwrite", SetLastError = true)]
    internal static unsafe partial nint PWrite(int fd, void* buffer, nuint count, long offset);
}
