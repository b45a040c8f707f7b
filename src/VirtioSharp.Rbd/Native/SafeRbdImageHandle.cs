using System.Runtime.InteropServices;

namespace VirtioSharp.Rbd.Native;

/// <summary>An open rbd_image_t. It holds a reference on its I/O context, so the pool and cluster outlive it.</summary>
internal sealed class SafeRbdImageHandle : SafeHandle
{
    private SafeIoCtxHandle? _ioctx;

    public SafeRbdImageHandle() : base(0, ownsHandle: true) { }

    public override bool IsInvalid => handle == 0;

    /// <summary>The raw handle for the per-request calls; the owner keeps this SafeHandle open while any is outstanding.</summary>
    internal nint Raw => handle;

    /// <summary>Opens <paramref name="name"/> (at <paramref name="snapshot"/>); the negative errno when it cannot (-ENOENT: no such image or snapshot).</summary>
    internal static int TryOpen(SafeIoCtxHandle ioctx, string name, string? snapshot, bool readOnly, out SafeRbdImageHandle? image)
    {
        image = null;
        var added = false;
        ioctx.DangerousAddRef(ref added);
        var result = readOnly
            ? RbdInterop.RbdOpenReadOnly(ioctx, name, out var raw, snapshot)
            : RbdInterop.RbdOpen(ioctx, name, out raw, snapshot);
        if (result < 0)
        {
            ioctx.DangerousRelease();
            return result;
        }
        image = new SafeRbdImageHandle { _ioctx = ioctx };
        image.SetHandle(raw);
        return 0;
    }

    protected override bool ReleaseHandle()
    {
        var result = RbdInterop.RbdClose(handle);
        _ioctx?.DangerousRelease();
        return result >= 0;
    }
}
