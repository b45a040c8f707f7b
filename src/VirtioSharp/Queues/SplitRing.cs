namespace VirtioSharp.Queues;

/// <summary>Flags and sizes of the split virtqueue (spec 2.7).</summary>
public static class SplitRing
{
    public const int MaxQueueSize = 32768;          // 2.7: the maximum Queue Size value is 32768
    public const int DescriptorSize = 16;           // 2.7.5: struct virtq_desc
    public const int UsedElementSize = 8;           // 2.7.8: struct virtq_used_elem

    public const ushort DescFNext = 1;              // 2.7.5 VIRTQ_DESC_F_NEXT
    public const ushort DescFWrite = 2;             // 2.7.5 VIRTQ_DESC_F_WRITE
    public const ushort DescFIndirect = 4;          // 2.7.5 VIRTQ_DESC_F_INDIRECT

    public const ushort AvailFNoInterrupt = 1;      // 2.7.6 VIRTQ_AVAIL_F_NO_INTERRUPT
    public const ushort UsedFNoNotify = 1;          // 2.7.8 VIRTQ_USED_F_NO_NOTIFY

    /// <summary>2.7: Queue Size is a power of 2 between 1 and 32768.</summary>
    public static bool IsValidSize(int size) => size is >= 1 and <= MaxQueueSize && (size & (size - 1)) == 0;

    /// <summary>
    /// vring_need_event (2.7.7.2 / 2.7.10.2): true when <paramref name="eventIdx"/> lies in
    /// [old, new), i.e. the other side asked to be told once this index was passed.
    /// </summary>
    public static bool NeedEvent(ushort eventIdx, ushort newIdx, ushort oldIdx) =>
        (ushort)(newIdx - eventIdx - 1) < (ushort)(newIdx - oldIdx);
}

/// <summary>
/// Byte layout of one split virtqueue placed contiguously (2.7 alignment table: descriptor
/// table 16, available ring 2, used ring 4; legacy layout aligns the used ring to 4096, 2.7.2).
/// </summary>
public readonly record struct SplitQueueLayout(int QueueSize, ulong DescriptorTableOffset, ulong AvailRingOffset, ulong UsedRingOffset, ulong TotalSize)
{
    public const int DescriptorTableAlignment = 16;
    public const int AvailRingAlignment = 2;
    public const int UsedRingAlignment = 4;
    public const int LegacyQueueAlign = 4096;

    public static ulong DescriptorTableSize(int n) => (ulong)SplitRing.DescriptorSize * (ulong)n;
    /// <summary>flags, idx, ring[n], used_event.</summary>
    public static ulong AvailRingSize(int n) => 6 + 2 * (ulong)n;
    /// <summary>flags, idx, ring[n] of 8 bytes, avail_event.</summary>
    public static ulong UsedRingSize(int n) => 6 + 8 * (ulong)n;

    public static SplitQueueLayout For(int queueSize, bool legacy = false)
    {
        if (!SplitRing.IsValidSize(queueSize))
            throw new ArgumentOutOfRangeException(nameof(queueSize), $"queue size {queueSize} is not a power of two in 1..32768 (2.7)");
        ulong desc = 0;
        var avail = desc + DescriptorTableSize(queueSize);
        var usedAlign = legacy ? (ulong)LegacyQueueAlign : UsedRingAlignment;
        var used = AlignUp(avail + AvailRingSize(queueSize), usedAlign);
        var total = used + UsedRingSize(queueSize);
        if (legacy)
            total = AlignUp(total, LegacyQueueAlign);
        return new SplitQueueLayout(queueSize, desc, avail, used, total);
    }

    public static ulong AlignUp(ulong value, ulong alignment) => (value + alignment - 1) & ~(alignment - 1);
}
