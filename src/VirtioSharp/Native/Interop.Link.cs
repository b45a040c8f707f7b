using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int EEXIST = 17;
    internal const int EADDRINUSE = 98;

    /// <summary>link(2): a second name for a file; fails with EEXIST rather than replace one.</summary>
    [LibraryImport(Libc, EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int Link(string existing, string created);
}
