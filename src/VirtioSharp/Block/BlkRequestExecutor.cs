using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Block;

/// <summary>
/// Runs a validated request synchronously against the <see cref="IBlockBackend"/>: reads and
/// writes straight between the backend and guest memory, flush, GET_ID, and the segments of
/// DISCARD and WRITE_ZEROES. Returns the status; the caller writes the status byte.
/// </summary>
internal sealed unsafe class BlkRequestExecutor(BlkDevice device, IBlockBackend backend, byte[] serial, BlkRequestValidator validator)
{
    public BlkStatus Execute(ref BlkRequest req, IoVec[] iov)
    {
        var trace = device.Trace;
        switch ((BlkRequestType)req.Header.Type)
        {
            case BlkRequestType.In:
                {
                    var n = BlkRequest.BuildIoVec(ref req, iov, writable: true, req.DataLength);
                    if (trace is { Active: true })
                        TraceTransfer(trace, ref req, write: false, n);
                    if (!backend.Read(req.Queue, req.Header.Sector << BlkLayout.SectorShift, iov.AsSpan(0, n)))
                        return BlkStatus.IoErr;
                    req.Written = (uint)req.DataLength;
                    return BlkStatus.Ok;
                }
            case BlkRequestType.Out:
                {
                    var n = BlkRequest.BuildIoVec(ref req, iov, writable: false, req.DataLength);
                    if (trace is { Active: true })
                        TraceTransfer(trace, ref req, write: true, n);
                    if (!backend.Write(req.Queue, req.Header.Sector << BlkLayout.SectorShift, iov.AsSpan(0, n)))
                        return BlkStatus.IoErr;
                    // 5.2.6.2: FLUSH offered but not negotiated means every write is stable at completion.
                    if (!device.Negotiated(BlkFeatures.Flush) && !backend.Flush())
                        return BlkStatus.IoErr;
                    return BlkStatus.Ok;
                }
            case BlkRequestType.Flush:
                if (trace is { Active: true })
                    trace.Event(RingEvents.Backend(req.Queue, req.Head, "flush", 0, 0, backend.FlushIgnored is { } ignored
                        ? $"flush acknowledged without syncing the {backend.Description} ({ignored})"
                        : $"backend flush of the {backend.Description}"));
                return backend.Flush() ? BlkStatus.Ok : BlkStatus.IoErr;
            case BlkRequestType.GetId:
                {
                    var n = BlkRequest.BuildIoVec(ref req, iov, writable: true, Math.Min(req.WritableData, BlkLayout.IdBytes));
                    var copied = 0;
                    for (var i = 0; i < n; i++)
                    {
                        serial.AsSpan(copied, (int)iov[i].Length).CopyTo(new Span<byte>((void*)iov[i].Base, (int)iov[i].Length));
                        copied += (int)iov[i].Length;
                    }
                    req.Written = (uint)copied;
                    return BlkStatus.Ok;
                }
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                return ExecuteSegments(ref req, (BlkRequestType)req.Header.Type);
            default:
                return BlkStatus.Unsupp;
        }
    }

    /// <summary>Narrates a read or write going straight between the backend and guest RAM.</summary>
    private void TraceTransfer(ITraceSink trace, ref BlkRequest req, bool write, int iovecs)
    {
        var offset = req.Header.Sector << BlkLayout.SectorShift;
        var what = write ? "write" : "read";
        trace.Event(RingEvents.Backend(req.Queue, req.Head, what, offset, req.DataLength,
            $"backend {what}: {req.DataLength} bytes at offset {offset} of the {backend.Description}, straight {(write ? "from" : "into")} guest RAM ({iovecs} iovec{(iovecs == 1 ? "" : "s")})"));
    }

    /// <summary>Runs the segments ValidateSegments copied out and checked.</summary>
    private BlkStatus ExecuteSegments(ref BlkRequest req, BlkRequestType type)
    {
        var discard = type == BlkRequestType.Discard;
        var segments = validator.Segments(req.Queue, (int)(req.ReadableData / BlkLayout.DiscardSegmentSize));
        foreach (var seg in segments)
        {
            var offset = seg.Sector << BlkLayout.SectorShift;
            var length = (ulong)seg.NumSectors << BlkLayout.SectorShift;
            if (device.Trace is { Active: true } trace)
                trace.Event(RingEvents.Backend(req.Queue, req.Head, discard ? "discard" : "write-zeroes", offset, length, $"backend {(discard ? "discard (punch hole)" : "write-zeroes")}: {length} bytes at offset {offset}"));
            var ok = discard ? backend.Discard(offset, length) : backend.WriteZeroes(offset, length, (seg.Flags & BlkLayout.SegmentFlagUnmap) != 0);
            if (!ok)
                return BlkStatus.IoErr; // 5.2.6.1: after IOERR the driver assumes nothing about the segments
        }
        return BlkStatus.Ok;
    }
}
