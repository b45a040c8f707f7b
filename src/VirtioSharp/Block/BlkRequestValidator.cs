using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.Block;

/// <summary>
/// Decides the status a parsed request earns before any I/O is done (5.2.6.2): types, ranges,
/// the device's limits, and in strict mode every driver requirement it can see. The segments of
/// a DISCARD or WRITE_ZEROES request are copied out of guest memory here, once, and checked on
/// the copy; <see cref="Segments"/> hands that copy to whoever runs the request.
/// </summary>
internal sealed class BlkRequestValidator
{
    private readonly BlkDevice _device;
    private readonly BlkDiscardSegment[][] _segmentScratch; // per queue: segments copied out of guest memory once
    private readonly ulong _capacitySectors;
    private readonly bool _readOnly;

    public BlkRequestValidator(BlkDevice device, int numQueues, int maxSegments, ulong capacitySectors, bool readOnly)
    {
        _device = device;
        _capacitySectors = capacitySectors;
        _readOnly = readOnly;
        _segmentScratch = new BlkDiscardSegment[numQueues][];
        for (var i = 0; i < _segmentScratch.Length; i++)
            _segmentScratch[i] = new BlkDiscardSegment[maxSegments];
    }

    private BreachReporter Breaches => _device.Breaches;
    private BlkConfig Config => _device.Config;
    private ulong DeviceFeatures => _device.DeviceFeatures;
    private bool Negotiated(int bit) => _device.Negotiated(bit);

    /// <summary>The first <paramref name="count"/> segments of <paramref name="queue"/>'s last validated request.</summary>
    public ReadOnlySpan<BlkDiscardSegment> Segments(int queue, int count) => _segmentScratch[queue].AsSpan(0, count);

    /// <summary>5.2.6.2: decides the status a request earns before any I/O is done.</summary>
    public BlkStatus Validate(int queue, ref BlkRequest req)
    {
        var type = (BlkRequestType)req.Header.Type;
        if (Breaches.Strict)
            CheckStrict(queue, ref req, type);
        switch (type)
        {
            case BlkRequestType.In:
                req.DataLength = req.WritableData;
                return CheckRange(queue, ref req);
            case BlkRequestType.Out:
                req.DataLength = req.ReadableData;
                if (_readOnly)
                {
                    // 5.2.6.2: IOERR for a write to a read-only device, and write nothing.
                    Breaches.Report("5.2.6.2", queue, req.Head, "no write to a device that offers VIRTIO_BLK_F_RO", $"OUT at sector {req.Header.Sector}");
                    return BlkStatus.IoErr;
                }
                return CheckRange(queue, ref req);
            case BlkRequestType.Flush:
            case BlkRequestType.GetId:
                return BlkStatus.Ok;
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                return ValidateSegments(queue, ref req, type);
            default:
                return BlkStatus.Unsupp;
        }
    }

    /// <summary>
    /// Strict mode only: driver requirements of 5.2.6.1 that do not change the answer
    /// (the device can serve the request) but that a driver author wants to hear about.
    /// </summary>
    private void CheckStrict(int queue, ref BlkRequest req, BlkRequestType type)
    {
        int head = req.Head;
        switch (type)
        {
            case BlkRequestType.In:
            case BlkRequestType.GetId:
                if (req.ReadableData != 0)
                    Breaches.Report("5.2.6", queue, head, $"only the 16-byte header device-readable in a {TypeName(type)} request", $"{req.ReadableData} more device-readable bytes");
                if (type == BlkRequestType.GetId && req.WritableData != BlkLayout.IdBytes)
                    Breaches.Report("5.2.6.1", queue, head, "a GET_ID data buffer of 20 bytes", $"{req.WritableData} bytes");
                break;
            default:
                // Requests whose data the device reads: the status byte is the only writable byte.
                if (req.WritableData != 0)
                    Breaches.Report("5.2.6", queue, head, $"the status byte as the only device-writable byte of a {TypeName(type)} request", $"{req.WritableData} device-writable bytes before it");
                break;
        }
        if (type == BlkRequestType.Flush && req.Header.Sector != 0)
            Breaches.Report("5.2.6.1", queue, head, "sector 0 in a FLUSH request", $"sector {req.Header.Sector}");
        if (type == BlkRequestType.Flush && req.ReadableData != 0)
            Breaches.Report("5.2.6.1", queue, head, "no data in a FLUSH request (SHOULD NOT)", $"{req.ReadableData} bytes of data");
    }

    private static string TypeName(BlkRequestType t) => t switch
    {
        BlkRequestType.In => "IN",
        BlkRequestType.Out => "OUT",
        BlkRequestType.Flush => "FLUSH",
        BlkRequestType.GetId => "GET_ID",
        BlkRequestType.Discard => "DISCARD",
        BlkRequestType.WriteZeroes => "WRITE_ZEROES",
        _ => $"type {(uint)t}",
    };

    private BlkStatus CheckRange(int queue, ref BlkRequest req)
    {
        // 5.2.6.1: data length of IN/OUT is a multiple of 512.
        if ((req.DataLength & (BlkLayout.SectorSize - 1)) != 0)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, "IN/OUT data length a multiple of 512", $"{req.DataLength} bytes");
            return BlkStatus.IoErr;
        }
        // 2.7.8: the used length is 32 bits. A longer transfer is refused, never cut short.
        if (req.DataLength > uint.MaxValue - 1)
        {
            Breaches.Report("2.7.8", queue, req.Head, "a transfer whose length fits the 32-bit used length", $"{req.DataLength} bytes");
            return BlkStatus.IoErr;
        }
        // 5.2.3: with VIRTIO_BLK_F_SIZE_MAX offered, no data segment is longer than size_max.
        if (Config.SizeMax != 0 && (DeviceFeatures & VirtioFeatures.Bit(BlkFeatures.SizeMax)) != 0
            && BlkRequest.LongestDataSegment(ref req) is var longest && longest > Config.SizeMax)
        {
            Breaches.Report("5.2.3", queue, req.Head, $"data segments of at most size_max {Config.SizeMax} bytes", $"a segment of {longest} bytes");
            return BlkStatus.IoErr;
        }
        // 5.2.6.1: no read or write beyond capacity (overflow-safe).
        var sectors = req.DataLength >> BlkLayout.SectorShift;
        if (req.Header.Sector > _capacitySectors || sectors > _capacitySectors - req.Header.Sector)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, $"sectors within capacity {_capacitySectors}", $"sector {req.Header.Sector} + {sectors}");
            return BlkStatus.IoErr;
        }
        return BlkStatus.Ok;
    }

    private BlkStatus ValidateSegments(int queue, ref BlkRequest req, BlkRequestType type)
    {
        var discard = type == BlkRequestType.Discard;
        var feature = discard ? BlkFeatures.Discard : BlkFeatures.WriteZeroes;
        if (!Negotiated(feature) || _readOnly)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, $"{BlkFeatures.Name(feature)} negotiated before {TypeName(type)} requests", "the feature not negotiated");
            return BlkStatus.Unsupp;
        }
        var bytes = req.ReadableData;
        if (bytes == 0 || bytes % BlkLayout.DiscardSegmentSize != 0)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, "data a non-empty multiple of 16-byte segments", $"{bytes} bytes");
            return BlkStatus.IoErr;
        }
        var count = bytes / BlkLayout.DiscardSegmentSize;
        var maxSeg = discard ? Config.MaxDiscardSeg : Config.MaxWriteZeroesSeg;
        if (count > maxSeg)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, $"at most {maxSeg} {TypeName(type)} segments (config {(discard ? "max_discard_seg" : "max_write_zeroes_seg")})", $"{count} segments");
            return BlkStatus.IoErr;
        }
        // Each segment is read from guest memory once; everything after works on the copy, so
        // the driver cannot change a segment between its check and its use.
        var segments = _segmentScratch[queue].AsSpan(0, (int)count);
        Span<byte> raw = stackalloc byte[BlkLayout.DiscardSegmentSize];
        for (var s = 0; s < segments.Length; s++)
        {
            BlkRequest.CopyReadable(ref req, (ulong)s * BlkLayout.DiscardSegmentSize, raw);
            segments[s] = BlkDiscardSegment.Read(raw);
        }
        // 5.2.6.2: unknown flags -> UNSUPP; unmap on a discard -> UNSUPP. Every segment is
        // checked before any is executed, so a refused request has changed nothing.
        for (var s = 0; s < segments.Length; s++)
        {
            var flags = segments[s].Flags;
            if ((flags & ~BlkLayout.SegmentFlagUnmap) != 0 || (discard && flags != 0))
            {
                Breaches.Report((flags & ~BlkLayout.SegmentFlagUnmap) != 0 ? "5.2.6.2" : "5.2.6.1", req.Queue, req.Head,
                    discard ? "discard segment flags 0 (no unmap)" : "write-zeroes segment flags 0 or unmap", $"flags 0x{flags:x} in segment {s}");
                return BlkStatus.Unsupp;
            }
        }
        var maxSectors = discard ? Config.MaxDiscardSectors : Config.MaxWriteZeroesSectors;
        for (var s = 0; s < segments.Length; s++)
        {
            var seg = segments[s];
            if (seg.NumSectors > maxSectors || seg.Sector > _capacitySectors || seg.NumSectors > _capacitySectors - seg.Sector)
            {
                Breaches.Report("5.2.6.1", req.Queue, req.Head, $"segment within capacity {_capacitySectors} and at most {maxSectors} sectors (config {(discard ? "max_discard_sectors" : "max_write_zeroes_sectors")})",
                    $"sector {seg.Sector} + {seg.NumSectors} in segment {s}");
                return BlkStatus.IoErr;
            }
        }
        req.DataLength = 0;
        return BlkStatus.Ok;
    }
}
