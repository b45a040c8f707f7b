using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

internal static partial class RbdInterop
{
    /// <summary>rados_conf_read_file: reads a ceph.conf; a null path searches the default places ($CEPH_CONF, /etc/ceph/ceph.conf, ...).</summary>
    [LibraryImport(Librados, EntryPoint = "rados_conf_read_file", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RadosConfReadFile(SafeRadosHandle cluster, string? path);

    /// <summary>rados_conf_set: sets one option before connecting.</summary>
    [LibraryImport(Librados, EntryPoint = "rados_conf_set", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int RadosConfSet(SafeRadosHandle cluster, string option, string value);

    /// <summary>rados_conf_get: the value of one option as text (NUL-terminated in <paramref name="buffer"/>).</summary>
    [LibraryImport(Librados, EntryPoint = "rados_conf_get", StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int RadosConfGet(SafeRadosHandle cluster, string option, byte* buffer, nuint length);
}
