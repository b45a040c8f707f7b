using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rados_create2: a cluster handle for <paramref name="clusterName"/> ("ceph") as entity <paramref name="name"/> ("client.admin").</summary>
    [LibraryImport(Librados, EntryPoint = "rados_create2", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RadosCreate2(out nint cluster, string clusterName, string name, ulong flags);
}
