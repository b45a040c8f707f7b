using VirtioSharp.Diagnostics;

namespace VirtioSharp.Block;

public sealed record BlkDeviceOptions
{
    public int NumQueues { get; init; } = 1;
    public int QueueSize { get; init; } = 256;
    /// <summary>GET_ID answer; at most 20 bytes (5.2.6).</summary>
    public string Serial { get; init; } = "virtiosharp";
    /// <summary>Expose the disk read-only even if the backend could write.</summary>
    public bool ReadOnly { get; init; }
    /// <summary>Largest single segment (VIRTIO_BLK_F_SIZE_MAX).</summary>
    public uint SizeMax { get; init; } = 1 << 20;
    /// <summary>Most data segments per request (VIRTIO_BLK_F_SEG_MAX); 0 = min(queue size, 128) - 2.</summary>
    public uint SegMax { get; init; }
    public uint MaxDiscardSectors { get; init; } = 1 << 22;
    public uint MaxDiscardSegments { get; init; } = 32;
    public uint MaxWriteZeroesSectors { get; init; } = 1 << 22;
    public uint MaxWriteZeroesSegments { get; init; } = 32;
    public bool OfferEventIdx { get; init; } = true;
    public bool OfferIndirect { get; init; } = true;
    /// <summary>Offer VIRTIO_F_RING_PACKED (2.8): the driver may then choose packed virtqueues.</summary>
    public bool OfferPacked { get; init; } = true;
    public StrictMode Strict { get; init; } = StrictMode.Off;
    /// <summary>Requests and bytes per second this disk may serve; requests beyond wait in their ring.</summary>
    public BlkLimits? Limits { get; init; }
    public ILogSink? Log { get; init; }
    public ITraceSink? Trace { get; init; }

    public void Validate()
    {
        if (NumQueues is < 1 or > 64)
            throw new ArgumentOutOfRangeException(nameof(NumQueues), $"num-queues must be 1..64, not {NumQueues}");
        if (!Queues.SplitRing.IsValidSize(QueueSize) || QueueSize < 4)
            throw new ArgumentOutOfRangeException(nameof(QueueSize), $"queue size must be a power of two in 4..32768, not {QueueSize}");
        if (System.Text.Encoding.ASCII.GetByteCount(Serial) > BlkLayout.IdBytes)
            throw new ArgumentOutOfRangeException(nameof(Serial), $"serial '{Serial}' is longer than {BlkLayout.IdBytes} bytes");
    }
}
