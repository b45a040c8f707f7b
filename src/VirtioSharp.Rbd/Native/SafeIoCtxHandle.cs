using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

/// <summary>A rados_ioctx_t on one pool. It holds a reference on its cluster handle, so the cluster outlives it.</summary>
internal sealed class SafeIoCtxHandle : SafeHandle
{
    private SafeRadosHandle? _cluster;

    public SafeIoCtxHandle() : base(0, ownsHandle: true) { }

    public override bool IsInvalid => handle == 0;

    /// <summary>Opens <paramref name="pool"/>; the negative errno when it cannot (-ENOENT: no such pool).</summary>
    internal static int TryCreate(SafeRadosHandle cluster, string pool, out SafeIoCtxHandle? ioctx)
    {
        ioctx = null;
        var added = false;
        cluster.DangerousAddRef(ref added);
        var result = RbdInterop.RadosIoCtxCreate(cluster, pool, out var raw);
        if (result < 0)
        {
            cluster.DangerousRelease();
            return result;
        }
        ioctx = new SafeIoCtxHandle { _cluster = cluster };
        ioctx.SetHandle(raw);
        return 0;
    }

    protected override bool ReleaseHandle()
    {
        RbdInterop.RadosIoCtxDestroy(handle);
        _cluster?.DangerousRelease();
        return true;
    }
}
