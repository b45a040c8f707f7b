using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rados_ioctx_create: an I/O context on pool <paramref name="pool"/>; -ENOENT when there is no such pool.</summary>
    [LibraryImport(Librados, EntryPoint = "rados_ioctx_create", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RadosIoCtxCreate(SafeRadosHandle cluster, string pool, out nint ioctx);

    /// <summary>rados_ioctx_destroy.</summary>
    [LibraryImport(Librados, EntryPoint = "rados_ioctx_destroy")]
    internal static partial void RadosIoCtxDestroy(nint ioctx);
}
