using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rados_connect: authenticates with the monitors and fetches the maps (waits up to client_mount_timeout).</summary>
    [LibraryImport(Librados, EntryPoint = "rados_connect")]
    internal static partial int RadosConnect(SafeRadosHandle cluster);

    /// <summary>rados_shutdown: disconnects and frees the cluster handle (also after a failed connect).</summary>
    [LibraryImport(Librados, EntryPoint = "rados_shutdown")]
    internal static partial void RadosShutdown(nint cluster);
}
