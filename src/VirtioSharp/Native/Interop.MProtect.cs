using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int PROT_NONE = 0x0;

    /// <summary>mprotect(2): changes the access of whole pages of a mapping we own.</summary>
    [LibraryImport(Libc, EntryPoint = "mprotect", SetLastError = true)]
    internal static partial int MProtect(nint address, nuint length, int protection);
}
