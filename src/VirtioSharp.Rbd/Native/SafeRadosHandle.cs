using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

/// <summary>A rados_t cluster handle; released with rados_shutdown after every I/O context made from it is gone.</summary>
internal sealed class SafeRadosHandle : SafeHandle
{
    public SafeRadosHandle() : base(0, ownsHandle: true) { }

    public override bool IsInvalid => handle == 0;

    internal static SafeRadosHandle Create(string clusterName, string entity)
    {
        var result = RbdInterop.RadosCreate2(out var cluster, clusterName, entity, 0);
        if (result < 0)
            throw new RbdException($"cannot make a Ceph client as '{entity}'", result);
        var safe = new SafeRadosHandle();
        safe.SetHandle(cluster);
        return safe;
    }

    protected override bool ReleaseHandle()
    {
        RbdInterop.RadosShutdown(handle);
        return true;
    }
}
