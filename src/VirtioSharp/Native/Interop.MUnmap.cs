using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>munmap(2). Only <see cref="Mapping"/> calls it.</summary>
    [LibraryImport(Libc, EntryPoint = "munmap", SetLastError = true)]
    internal static partial int MUnmap(nint address, nuint length);
}
