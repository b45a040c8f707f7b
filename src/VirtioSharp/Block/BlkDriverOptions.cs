using VirtioSharp.Diagnostics;

namespace VirtioSharp.Block;

/// <summary>Which virtqueue format the driver asks for.</summary>
public enum RingChoice
{
    /// <summary>Split virtqueues (2.7) only.</summary>
    Split,
    /// <summary>Packed virtqueues (2.8) when the device offers VIRTIO_F_RING_PACKED, split otherwise.</summary>
    PreferPacked,
    /// <summary>Packed virtqueues (2.8); a device without VIRTIO_F_RING_PACKED is refused.</summary>
    RequirePacked,
}

public sealed record BlkDriverOptions
{
    /// <summary>Virtqueue format to negotiate (VIRTIO_F_RING_PACKED, bit 34).</summary>
    public RingChoice Ring { get; init; } = RingChoice.Split;
    /// <summary>Queue size to ask for (capped at the device's maximum).</summary>
    public int QueueSize { get; init; } = 256;
    /// <summary>Queues to use (capped at the device's num_queues).</summary>
    public int NumQueues { get; init; } = 1;
    /// <summary>Largest transfer one request carries through the driver's own buffers; larger calls are split.</summary>
    public int MaxTransfer { get; init; } = 64 * 1024;
    /// <summary>Features the driver is willing to accept (default: all it understands).</summary>
    public ulong AcceptFeatures { get; init; } = BlkDriver.SupportedFeatures;
    /// <summary>
    /// Run a caller's continuation on the thread that reaps the used ring, instead of the thread
    /// pool. For a caller that only submits again (a benchmark with a polling completion thread):
    /// one thread then submits and reaps, with no hand-off. A continuation that blocks stalls its
    /// queue, and one that disposes the driver must first leave that thread (await Task.Yield()).
    /// </summary>
    public bool InlineCompletions { get; init; }
    public ITraceSink? Trace { get; init; }
    public ILogSink? Log { get; init; }
}
