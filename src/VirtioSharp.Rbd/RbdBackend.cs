using System.Runtime.InteropServices;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Rbd.Native;

namespace VirtioSharp.Rbd;

/// <summary>
/// A Ceph RBD image through librbd. Reads and writes go straight between guest memory and
/// librbd (rbd_aio_readv / rbd_aio_writev on the request's iovecs, no bounce buffer); FLUSH is
/// rbd_aio_flush, DISCARD rbd_aio_discard, WRITE_ZEROES rbd_aio_write_zeroes. Many requests
/// per queue are in flight at once (<see cref="TryStart"/>): librbd's completion callback, one
/// static function, posts (tag, result) to the queue's <see cref="CompletionPort"/> through the
/// tag's native cookie, so nothing is allocated per request. A request the cluster does not
/// answer within <see cref="RbdOptions.IoTimeoutSeconds"/> fails (librados returns
/// -ETIMEDOUT), which the guest sees as VIRTIO_BLK_S_IOERR; the worker never waits longer.
/// </summary>
public sealed unsafe class RbdBackend : IAsyncBlockBackend
{
    private readonly RbdImage _image;
    private readonly nint _raw;
    private readonly RbdResizeWatch? _resize;

    private RbdBackend(RbdImage image, ulong capacity, ILogSink? log)
    {
        _image = image;
        _raw = image.Handle.Raw;
        Capacity = capacity;
        if (image.Spec.Snapshot is null) // a snapshot never changes size
            _resize = RbdResizeWatch.TryStart(image, capacity, log);
    }

    /// <summary>Connects and opens the image; an <see cref="RbdException"/> with one clear line when it cannot.</summary>
    public static RbdBackend Open(RbdImageSpec spec, RbdOptions options, ILogSink? log = null)
    {
        var image = RbdImage.Open(spec, options);
        try
        {
            var size = image.CurrentSize();
            if (size < 0)
                throw new RbdException($"cannot read the size of image '{spec}'", (int)size);
            // 5.2.4: capacity is in 512-byte sectors; a ragged tail is not exposed.
            var capacity = (ulong)size & ~(ulong)(BlkLayout.SectorSize - 1);
            if (capacity == 0)
                throw new RbdException($"image '{spec}' is {size} bytes; it must hold at least one 512-byte sector");
            return new RbdBackend(image, capacity, log);
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    public ulong Capacity { get; }
    public uint BlockSize => 512;
    public bool ReadOnly => _image.ReadOnly;
    public bool SupportsDiscard => !ReadOnly;
    public bool SupportsWriteZeroes => !ReadOnly;
    public string Description => $"rbd {_image.Spec}";

    /// <summary>The image's size now, as librbd last saw it (after a resize it differs from <see cref="Capacity"/>).</summary>
    public long CurrentSize() => _image.CurrentSize();

    public bool TryStart(in BlkIo op, IQueueIo io)
    {
        if (io.Completions is not { } port)
            return false;
        if (ReadOnly && op.Kind is BlkIoKind.Write or BlkIoKind.Discard or BlkIoKind.WriteZeroes)
            return false;
        if (RbdInterop.RbdAioCreateCompletion(port.NativeCookie(op.Tag), &OnComplete, out var c) < 0)
            return false;
        var started = op.Kind switch
        {
            BlkIoKind.Read => RbdInterop.RbdAioReadV(_raw, op.Iov, op.IovCount, op.Offset, c),
            // Without librbd's cache a write completes once the OSDs have it: FUA needs nothing more.
            BlkIoKind.Write => RbdInterop.RbdAioWriteV(_raw, op.Iov, op.IovCount, op.Offset, c),
            BlkIoKind.Flush => RbdInterop.RbdAioFlush(_raw, c),
            BlkIoKind.Discard => RbdInterop.RbdAioDiscard(_raw, op.Offset, op.Length, c),
            // 5.2.6.2: without the unmap flag the range stays allocated.
            _ => RbdInterop.RbdAioWriteZeroes(_raw, op.Offset, op.Length, c,
                (op.Flags & BlkIoFlags.MayUnmap) != 0 ? 0 : RbdInterop.WriteZeroesThickProvision, 0),
        };
        if (started < 0)
        {
            // Never started, so the callback will not run: the device does the request itself.
            RbdInterop.RbdAioRelease(c);
            return false;
        }
        return true;
    }

    /// <summary>
    /// librbd's completion callback, on one of its threads: takes the result, drops our
    /// reference to the completion (librbd holds its own until the callback returns) and wakes
    /// the queue's worker. Nothing in it may throw.
    /// </summary>
    [UnmanagedCallersOnly]
    private static void OnComplete(nint completion, nint cookie)
    {
        var result = RbdInterop.RbdAioGetReturnValue(completion);
        RbdInterop.RbdAioRelease(completion);
        CompletionPort.PostCookie(cookie, result > int.MaxValue ? int.MaxValue : (int)result);
    }

    public bool Read(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        var waiter = RbdWaiter.Current;
        var c = waiter.NewCompletion();
        if (c == 0)
            return false;
        int started;
        fixed (IoVec* p = iov)
            started = RbdInterop.RbdAioReadV(_raw, p, iov.Length, offset, c);
        return Finish(waiter, c, started, Total(iov));
    }

    public bool Write(ulong offset, ReadOnlySpan<IoVec> iov)
    {
        if (ReadOnly)
            return false;
        var waiter = RbdWaiter.Current;
        var c = waiter.NewCompletion();
        if (c == 0)
            return false;
        int started;
        fixed (IoVec* p = iov)
            started = RbdInterop.RbdAioWriteV(_raw, p, iov.Length, offset, c);
        return Finish(waiter, c, started, 0);
    }

    public bool Flush()
    {
        var waiter = RbdWaiter.Current;
        var c = waiter.NewCompletion();
        return c != 0 && Finish(waiter, c, RbdInterop.RbdAioFlush(_raw, c), 0);
    }

    public bool Discard(ulong offset, ulong length)
    {
        if (ReadOnly)
            return false;
        var waiter = RbdWaiter.Current;
        var c = waiter.NewCompletion();
        return c != 0 && Finish(waiter, c, RbdInterop.RbdAioDiscard(_raw, offset, length, c), 0);
    }

    public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap)
    {
        if (ReadOnly)
            return false;
        var waiter = RbdWaiter.Current;
        var c = waiter.NewCompletion();
        // 5.2.6.2: without the unmap flag the range stays allocated.
        return c != 0 && Finish(waiter, c, RbdInterop.RbdAioWriteZeroes(_raw, offset, (nuint)length, c,
            mayUnmap ? 0 : RbdInterop.WriteZeroesThickProvision, 0), 0);
    }

    private static ulong Total(ReadOnlySpan<IoVec> iov)
    {
        ulong total = 0;
        foreach (var v in iov)
            total += v.Length;
        return total;
    }

    /// <summary>Waits for a started operation; true when it succeeded, and for a read, filled all <paramref name="expected"/> bytes.</summary>
    private static bool Finish(RbdWaiter waiter, nint completion, int started, ulong expected)
    {
        if (started < 0)
        {
            RbdWaiter.Abandon(completion);
            return false;
        }
        var result = waiter.Wait(completion);
        return result >= 0 && (expected == 0 || (ulong)result == expected);
    }

    public void Dispose()
    {
        _resize?.Dispose();
        _image.Dispose(); // rbd_close waits for anything still in flight
    }
}
