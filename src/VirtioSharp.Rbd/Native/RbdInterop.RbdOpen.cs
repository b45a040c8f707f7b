using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rbd_open: opens image <paramref name="name"/> for reading and writing (at snapshot <paramref name="snapshot"/> when not null).</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_open", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RbdOpen(SafeIoCtxHandle ioctx, string name, out nint image, string? snapshot);

    /// <summary>rbd_open_read_only: opens image <paramref name="name"/> without taking its lock (a snapshot is always read-only).</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_open_read_only", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RbdOpenReadOnly(SafeIoCtxHandle ioctx, string name, out nint image, string? snapshot);

    /// <summary>rbd_close: waits for the image's outstanding I/O, then closes it.</summary>
    [LibraryImport(Librbd, EntryPoint = "rbd_close")]
    internal static partial int RbdClose(nint image);
}
