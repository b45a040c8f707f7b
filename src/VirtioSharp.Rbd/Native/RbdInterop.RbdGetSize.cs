using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rbd_get_size: the image's (or the open snapshot's) size in bytes, refreshed when the header changed.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_get_size")]
    internal static partial int RbdGetSize(SafeRbdImageHandle image, out ulong size);
}
