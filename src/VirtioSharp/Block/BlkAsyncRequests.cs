using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>
/// Requests a queue keeps in flight on an <see cref="IAsyncBlockBackend"/>: starts a validated
/// request there (its iovecs in a pinned <see cref="BlkInFlight"/> slot) and, when the worker
/// hands back its result, writes the status byte and the used element. Each queue's part is used
/// by that queue's worker only.
/// </summary>
internal sealed unsafe class BlkAsyncRequests
{
    private readonly BlkDevice _device;
    private readonly IBlockBackend _backend;
    private readonly IAsyncBlockBackend? _async;
    private readonly BlkRequestValidator _validator;
    private readonly BlkInFlight?[] _inFlight; // per queue, made by its worker on first asynchronous use
    private readonly int _iovPerSlot;

    public BlkAsyncRequests(BlkDevice device, IBlockBackend backend, BlkRequestValidator validator, int numQueues, int iovPerSlot)
    {
        _device = device;
        _backend = backend;
        _async = backend as IAsyncBlockBackend;
        _validator = validator;
        _inFlight = new BlkInFlight?[numQueues];
        _iovPerSlot = iovPerSlot;
    }

    /// <summary>The backend can keep requests in flight.</summary>
    public bool Supported => _async != null;

    /// <summary>
    /// Starts a validated request on an <see cref="IAsyncBlockBackend"/>, which completes it later
    /// through <paramref name="io"/>. False leaves the request to <see cref="BlkRequestExecutor.Execute"/>: what the
    /// backend refuses (the file backend takes reads and flushes only: a buffered write lands in
    /// the page cache without waiting for the disk, and io_uring runs buffered writes to one file
    /// on its worker threads one at a time, so handing them over buys no concurrency and costs a
    /// hand-off, docs/benchmarks.md, section 2.1), GET_ID, discard and write-zeroes of more than
    /// one segment, more data buffers than a slot holds, or no free slot.
    /// </summary>
    public bool TryStart(int queue, ref BlkRequest req, IQueueIo io)
    {
        if (_async is not { } backend)
            return false;
        var type = (BlkRequestType)req.Header.Type;
        var offset = req.Header.Sector << BlkLayout.SectorShift;
        var length = req.DataLength;
        var flags = BlkIoFlags.None;
        BlkIoKind kind;
        int span;
        switch (type)
        {
            case BlkRequestType.In:
                kind = BlkIoKind.Read;
                span = req.Buffers.Length - req.ReadableCount;
                break;
            case BlkRequestType.Out:
                kind = BlkIoKind.Write;
                span = req.ReadableCount - req.FirstReadable;
                // 5.2.6.2: FLUSH offered but not negotiated means every write is stable at completion.
                if (!_device.Negotiated(BlkFeatures.Flush))
                    flags = BlkIoFlags.Fua;
                break;
            case BlkRequestType.Flush:
                kind = BlkIoKind.Flush;
                span = 0;
                offset = 0;
                length = 0;
                break;
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                {
                    // One segment, already copied out of guest memory and checked by ValidateSegments.
                    if (req.ReadableData != BlkLayout.DiscardSegmentSize)
                        return false;
                    var seg = _validator.Segments(queue, 1)[0];
                    kind = type == BlkRequestType.Discard ? BlkIoKind.Discard : BlkIoKind.WriteZeroes;
                    if ((seg.Flags & BlkLayout.SegmentFlagUnmap) != 0)
                        flags = BlkIoFlags.MayUnmap;
                    offset = seg.Sector << BlkLayout.SectorShift;
                    length = (ulong)seg.NumSectors << BlkLayout.SectorShift;
                    span = 0;
                    break;
                }
            default:
                return false;
        }
        if (type != BlkRequestType.Flush && (length == 0 || length > int.MaxValue))
            return false;
        if (span > _iovPerSlot)
            return false;
        var inFlight = _inFlight[queue] ??= new BlkInFlight(_device.MaxQueueSize, Math.Min((int)_device.MaxQueueSize, BlkDevice.MaxAsyncPerQueue), _iovPerSlot);
        if (!inFlight.TryRent(req.Head, out var slot))
            return false;
        var count = kind switch
        {
            BlkIoKind.Read => BlkRequest.BuildIoVec(ref req, inFlight.IovSpan(slot), writable: true, length),
            BlkIoKind.Write => BlkRequest.BuildIoVec(ref req, inFlight.IovSpan(slot), writable: false, length),
            _ => 0,
        };
        var op = new BlkIo
        {
            Kind = kind,
            Flags = flags,
            Tag = req.Head,
            Queue = queue,
            Offset = offset,
            Length = (uint)length,
            Iov = inFlight.IovPointer(slot),
            IovCount = count,
        };
        // Tracked before the start: another thread may post the completion before TryStart returns.
        inFlight.Track(req.Head, new BlkInFlight.Entry
        {
            Status = req.Status,
            Offset = offset,
            Length = kind == BlkIoKind.Read || kind == BlkIoKind.Write ? (uint)length : 0,
            Type = (uint)type,
            Slot = slot,
            IovCount = count,
            Started = req.Started,
        });
        if (backend.TryStart(op, io))
            return true;
        inFlight.TryTake(req.Head, out _);
        inFlight.Release(slot);
        return false;
    }

    /// <summary>Requests of <paramref name="queue"/> started on the asynchronous backend and not completed yet.</summary>
    public int InFlight(int queue) => (uint)queue < (uint)_inFlight.Length ? _inFlight[queue]?.Count ?? 0 : 0;

    public void Complete(IDeviceQueue queue, ushort tag, int result)
    {
        var inFlight = (uint)queue.Index < (uint)_inFlight.Length ? _inFlight[queue.Index] : null;
        if (inFlight is null || !inFlight.TryTake(tag, out var entry))
        {
            // Only our own tags come back; a stray one is a bug in the worker, not the guest's doing.
            _device.Log.Error($"queue {queue.Index}: a completion for head {tag}, which has no I/O in flight; ignored");
            return;
        }
        var type = (BlkRequestType)entry.Type;
        BlkStatus status;
        if (type == BlkRequestType.Flush)
            // As FileBackend.Flush: a file that cannot be synced (EINVAL) has nothing to make stable.
            status = result >= 0 || result == -Native.Errno.EINVAL ? BlkStatus.Ok : BlkStatus.IoErr;
        else if (result < 0)
            status = BlkStatus.IoErr;
        else if (type == BlkRequestType.In && (uint)result < entry.Length)
            status = FinishShortTransfer(inFlight, entry, (uint)result) ? BlkStatus.Ok : BlkStatus.IoErr;
        else
            status = BlkStatus.Ok;
        _async?.Completed(new BlkIo { Kind = KindOf(type), Tag = tag, Queue = queue.Index, Offset = entry.Offset, Length = entry.Length });
        inFlight.Release(entry.Slot);

        *entry.Status = (byte)status;
        var written = status == BlkStatus.Ok && type == BlkRequestType.In ? entry.Length + 1 : 1u;
        _device.Stats.Count(queue.Index, entry.Type, status, entry.Length, entry.Started);
        _device.Stats.CountAsync(queue.Index);
        queue.AddUsed(tag, written);
    }

    private static BlkIoKind KindOf(BlkRequestType type) => type switch
    {
        BlkRequestType.In => BlkIoKind.Read,
        BlkRequestType.Out => BlkIoKind.Write,
        BlkRequestType.Flush => BlkIoKind.Flush,
        BlkRequestType.Discard => BlkIoKind.Discard,
        _ => BlkIoKind.WriteZeroes,
    };

    /// <summary>
    /// A read that moved fewer bytes than asked (the end of a file that shrank): the rest goes
    /// through the backend synchronously, which zero-fills past the end of the file.
    /// </summary>
    private bool FinishShortTransfer(BlkInFlight inFlight, in BlkInFlight.Entry entry, uint done)
    {
        var iov = inFlight.IovSpan(entry.Slot)[..entry.IovCount];
        var skip = (nuint)done;
        var first = 0;
        while (first < iov.Length && skip >= iov[first].Length)
            skip -= iov[first++].Length;
        if (first == iov.Length)
            return true;
        iov[first] = new IoVec(iov[first].Base + (nint)skip, iov[first].Length - skip);
        var rest = iov[first..];
        var offset = entry.Offset + done;
        return _backend.Read(offset, rest);
    }
}
