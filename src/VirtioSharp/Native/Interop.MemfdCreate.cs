using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const uint MFD_CLOEXEC = 0x0001;

    /// <summary>memfd_create(2): anonymous memory with a file descriptor that can be passed to another process.</summary>
    [LibraryImport(Libc, EntryPoint = "memfd_create", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int MemfdCreate(string name, uint flags);
}
