using System.Globalization;
using System.Text;
using VirtioSharp.Rbd.Native;

namespace VirtioSharp.Rbd;

/// <summary>
/// An open RBD image and the cluster connection behind it. Opening turns each way it can fail
/// (no configuration, monitors out of reach, a refused key, no such pool, image or snapshot)
/// into an <see cref="RbdException"/> with one line that says which.
/// </summary>
internal sealed class RbdImage : IDisposable
{
    private const int ENOENT = 2;
    private const int EPERM = 1;
    private const int EACCES = 13;
    private const int ETIMEDOUT = 110;
    private const int EROFS = 30;

    private readonly SafeRadosHandle _cluster;
    private readonly SafeIoCtxHandle _ioctx;

    private RbdImage(SafeRadosHandle cluster, SafeIoCtxHandle ioctx, SafeRbdImageHandle image, RbdImageSpec spec, bool readOnly)
    {
        _cluster = cluster;
        _ioctx = ioctx;
        Handle = image;
        Spec = spec;
        ReadOnly = readOnly;
    }

    public SafeRbdImageHandle Handle { get; }
    public RbdImageSpec Spec { get; }
    public bool ReadOnly { get; }

    public static RbdImage Open(RbdImageSpec spec, RbdOptions options)
    {
        options.Validate();
        if (options.ConfPath is not null && !File.Exists(options.ConfPath))
            throw new RbdException($"Ceph configuration '{options.ConfPath}' does not exist");
        var entity = "client." + options.Id;
        var cluster = SafeRadosHandle.Create("ceph", entity);
        SafeIoCtxHandle? ioctx = null;
        try
        {
            var result = RbdInterop.RadosConfReadFile(cluster, options.ConfPath);
            if (result < 0)
                throw options.ConfPath is null
                    ? new RbdException("no Ceph configuration found (give --ceph-conf FILE or set CEPH_CONF)")
                    : new RbdException($"cannot read Ceph configuration '{options.ConfPath}'", result);
            // Our own lines stay one line: librados logs nothing to stderr.
            Set(cluster, "log_to_stderr", "false");
            Set(cluster, "err_to_stderr", "false");
            var connect = options.ConnectTimeoutSeconds.ToString(CultureInfo.InvariantCulture);
            Set(cluster, "client_mount_timeout", connect);
            Set(cluster, "rados_mon_op_timeout", connect);
            Set(cluster, "rados_osd_op_timeout", options.IoTimeoutSeconds.ToString(CultureInfo.InvariantCulture));

            result = RbdInterop.RadosConnect(cluster);
            if (result < 0)
                throw ConnectError(cluster, entity, options, result);

            result = SafeIoCtxHandle.TryCreate(cluster, spec.Pool, out ioctx);
            if (result == -ENOENT)
                throw new RbdException($"pool '{spec.Pool}' does not exist");
            if (result < 0)
                throw new RbdException($"cannot open pool '{spec.Pool}'", result);

            var readOnly = options.ReadOnly || spec.Snapshot is not null;
            result = SafeRbdImageHandle.TryOpen(ioctx!, spec.Image, spec.Snapshot, readOnly, out var image);
            if (result < 0)
                throw OpenError(ioctx!, spec, result);
            return new RbdImage(cluster, ioctx!, image!, spec, readOnly);
        }
        catch
        {
            ioctx?.Dispose();
            cluster.Dispose();
            throw;
        }
    }

    /// <summary>The image's current size in bytes; a negative errno when it cannot be read.</summary>
    public long CurrentSize()
    {
        var result = RbdInterop.RbdGetSize(Handle, out var size);
        return result < 0 ? result : (long)Math.Min(size, long.MaxValue);
    }

    private static void Set(SafeRadosHandle cluster, string option, string value)
    {
        var result = RbdInterop.RadosConfSet(cluster, option, value);
        if (result < 0)
            throw new RbdException($"cannot set Ceph option {option}={value}", result);
    }

    private static unsafe string Get(SafeRadosHandle cluster, string option)
    {
        var buffer = stackalloc byte[512];
        return RbdInterop.RadosConfGet(cluster, option, buffer, 512) < 0
            ? "?"
            : Encoding.UTF8.GetString(buffer, new ReadOnlySpan<byte>(buffer, 512).IndexOf((byte)0) is var n and >= 0 ? n : 512);
    }

    private static RbdException ConnectError(SafeRadosHandle cluster, string entity, RbdOptions options, int result)
    {
        var monitors = Get(cluster, "mon_host");
        return -result switch
        {
            ETIMEDOUT => new RbdException($"no answer from the Ceph monitors ({monitors}) within {options.ConnectTimeoutSeconds} s"),
            EACCES or EPERM => new RbdException($"the Ceph monitors ({monitors}) refused {entity}: wrong key or no such user"),
            ENOENT => new RbdException($"no key for {entity} (no keyring found, or it lacks {entity}) or no monitor address in the configuration"),
            _ => new RbdException($"cannot connect to the Ceph monitors ({monitors}) as {entity}", result),
        };
    }

    private static RbdException OpenError(SafeIoCtxHandle ioctx, RbdImageSpec spec, int result)
    {
        if (result == -ENOENT && spec.Snapshot is not null
            && SafeRbdImageHandle.TryOpen(ioctx, spec.Image, null, true, out var plain) == 0)
        {
            plain!.Dispose();
            return new RbdException($"image '{spec.Image}' in pool '{spec.Pool}' has no snapshot '{spec.Snapshot}'");
        }
        return -result switch
        {
            ENOENT => new RbdException($"image '{spec.Image}' does not exist in pool '{spec.Pool}'"),
            EACCES or EPERM => new RbdException($"not allowed to open image '{spec}' (check the user's caps)"),
            EROFS => new RbdException($"image '{spec}' is read-only here (try --read-only)"),
            _ => new RbdException($"cannot open image '{spec}'", result),
        };
    }

    public void Dispose()
    {
        Handle.Dispose();
        _ioctx.Dispose();
        _cluster.Dispose();
    }
}
