using System.Runtime.CompilerServices;

namespace VirtioSharp.Queues;

/// <summary>Flags, sizes and flag arithmetic of the packed virtqueue (spec 2.8).</summary>
public static class PackedRing
{
    public const int MaxQueueSize = 32768;          // 2.8: packed virtqueues support up to 2^15 entries
    public const int DescriptorSize = 16;           // 2.8.13: struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }
    public const int EventSuppressionSize = 4;      // 2.8.14: struct pvirtq_event_suppress { le16 desc; le16 flags; }

    public const ushort DescFNext = 1;              // 2.8.6 VIRTQ_DESC_F_NEXT
    public const ushort DescFWrite = 2;             // 2.8.3 VIRTQ_DESC_F_WRITE
    public const ushort DescFIndirect = 4;          // 2.8.7 VIRTQ_DESC_F_INDIRECT
    public const ushort DescFAvail = 1 << 7;        // 2.8.1 VIRTQ_DESC_F_AVAIL
    public const ushort DescFUsed = 1 << 15;        // 2.8.1 VIRTQ_DESC_F_USED

    public const ushort EventFlagsEnable = 0;       // 2.8.10 RING_EVENT_FLAGS_ENABLE
    public const ushort EventFlagsDisable = 1;      // 2.8.10 RING_EVENT_FLAGS_DISABLE
    public const ushort EventFlagsDesc = 2;         // 2.8.10 RING_EVENT_FLAGS_DESC (only with VIRTIO_F_EVENT_IDX)
    public const ushort EventFlagsMask = 3;         // 2.8.14: desc_event_flags is 2 bits; the rest is reserved
    public const ushort EventWrapBit = 1 << 15;     // 2.8.14: desc_event_wrap, above the 15-bit desc_event_off

    /// <summary>2.8.10.1: Queue Size need not be a power of two; at most 2^15.</summary>
    public static bool IsValidSize(int size) => size is >= 1 and <= MaxQueueSize;

    /// <summary>2.8.1 / 2.8.21.1: an available descriptor has AVAIL equal to the Driver Ring Wrap Counter and USED its inverse.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort AvailFlags(bool wrap) => wrap ? DescFAvail : DescFUsed;

    /// <summary>2.8.1: a used descriptor has AVAIL and USED both equal to the Device Ring Wrap Counter.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort UsedFlags(bool wrap) => wrap ? (ushort)(DescFAvail | DescFUsed) : (ushort)0;

    /// <summary>2.8.1: the AVAIL and USED bits of a descriptor's flags.</summary>
    public const ushort DescFAvailUsed = DescFAvail | DescFUsed;

    /// <summary>2.8.1: made available in the lap whose wrap counter is <paramref name="wrap"/> (AVAIL equal to it, USED not).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAvail(ushort flags, bool wrap) => (flags & DescFAvailUsed) == AvailFlags(wrap);

    /// <summary>2.8.1: marked used in the lap whose wrap counter is <paramref name="wrap"/> (AVAIL and USED both equal to it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsUsed(ushort flags, bool wrap) => (flags & DescFAvailUsed) == UsedFlags(wrap);

    /// <summary>2.8.14: the desc field of an event suppression structure: 15-bit offset and the wrap counter in bit 15.</summary>
    public static ushort OffWrap(int offset, bool wrap) => (ushort)(offset | (wrap ? EventWrapBit : 0));

    /// <summary>
    /// 2.8.10 with VIRTIO_F_EVENT_IDX: the other side asked (RING_EVENT_FLAGS_DESC) to hear about the
    /// descriptor at <paramref name="offWrap"/>. True when that descriptor lies among the
    /// <paramref name="count"/> slots just written, which end before slot <paramref name="next"/> in the
    /// lap whose wrap counter is <paramref name="wrap"/>. Positions of the lap before count from -size.
    /// </summary>
    public static bool NeedEvent(ushort offWrap, int next, bool wrap, int count, int size)
    {
        if (count <= 0)
            return false;
        int off = offWrap & ~EventWrapBit;
        var offWrapBit = (offWrap & EventWrapBit) != 0;
        var e = offWrapBit == wrap ? off : off - size;
        return e >= next - count && e < next;
    }

    /// <summary>Describes the AVAIL/USED bits in the spec's words (for traces and breach reports).</summary>
    public static string DescribeFlags(ushort flags)
    {
        var parts = new List<string>(5);
        if ((flags & DescFNext) != 0) parts.Add("NEXT");
        if ((flags & DescFWrite) != 0) parts.Add("WRITE");
        if ((flags & DescFIndirect) != 0) parts.Add("INDIRECT");
        parts.Add((flags & DescFAvail) != 0 ? "AVAIL=1" : "AVAIL=0");
        parts.Add((flags & DescFUsed) != 0 ? "USED=1" : "USED=0");
        return string.Join("|", parts);
    }
}

/// <summary>One packed descriptor as read from the ring (2.8.13: addr, len, id, flags), kept as a copy.</summary>
public readonly record struct PackedDescriptor(ulong Address, uint Length, ushort Id, ushort Flags);

/// <summary>
/// Byte layout of one packed virtqueue placed contiguously (2.8.10.1: descriptor ring 16-aligned,
/// each event suppression structure 4-aligned and 4 bytes). The three parts are what virtio-mmio
/// calls QueueDesc, QueueDriver (driver event suppression) and QueueDevice (device event suppression).
/// </summary>
public readonly record struct PackedQueueLayout(int QueueSize, ulong DescriptorRingOffset, ulong DriverEventOffset, ulong DeviceEventOffset, ulong TotalSize)
{
    public const int DescriptorRingAlignment = 16;
    public const int EventSuppressionAlignment = 4;

    public static ulong DescriptorRingSize(int n) => (ulong)PackedRing.DescriptorSize * (ulong)n;

    public static PackedQueueLayout For(int queueSize)
    {
        if (!PackedRing.IsValidSize(queueSize))
            throw new ArgumentOutOfRangeException(nameof(queueSize), $"queue size {queueSize} is not in 1..32768 (2.8)");
        var ring = DescriptorRingSize(queueSize);
        return new PackedQueueLayout(queueSize, 0, ring, ring + PackedRing.EventSuppressionSize, ring + 2 * PackedRing.EventSuppressionSize);
    }
}
