using VirtioSharp.Devices;
using VirtioSharp.Memory;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// Builds a ring's device half in the negotiated format (VIRTIO_F_RING_PACKED or not) and turns
/// its position into the SET/GET_VRING_BASE value. vhost-user.rst: a split ring's base is the next
/// available index (the used index is read from the ring); a packed ring's carries the next
/// available slot in bits 0-14 and the Driver Ring Wrap Counter in bit 15, and the next used slot
/// and the Device Ring Wrap Counter in bits 16-30 and 31 (neither is in guest memory).
/// </summary>
internal static unsafe class VringFormat
{
    /// <summary>A packed ring's base before any request: slot 0 with both counters at 1 (2.8.1).</summary>
    public const uint PackedInitialBase = 0x8000_8000;

    public static bool IsPacked(ulong features) => VirtioFeatures.Has(features, VirtioFeatures.RingPacked);

    /// <summary>The bytes each part of a ring of <paramref name="size"/> spans: descriptors, driver area, device area.</summary>
    public static (ulong Descriptors, ulong Driver, ulong Device) PartSizes(bool packed, int size) => packed
        ? (PackedQueueLayout.DescriptorRingSize(size), PackedRing.EventSuppressionSize, PackedRing.EventSuppressionSize)
        : (SplitQueueLayout.DescriptorTableSize(size), SplitQueueLayout.AvailRingSize(size), SplitQueueLayout.UsedRingSize(size));

    /// <summary>Whether a SET_VRING_BASE value fits the format.</summary>
    public static bool BaseFits(bool packed, uint value) => packed || value <= ushort.MaxValue;

    /// <summary>Builds the queue over front-end virtual addresses, resuming at <paramref name="vringBase"/>.</summary>
    public static IDeviceQueue? Create(bool packed, int index, int size, GuestMemory memory, VringAddress a, bool eventIdx, bool indirect,
        uint vringBase, out ushort usedIndex, out string? error)
    {
        if (packed)
        {
            var avail = (ushort)vringBase;
            // A front-end that sends only the low half stopped with nothing in flight: used = avail.
            usedIndex = vringBase >> 16 != 0 ? (ushort)(vringBase >> 16) : avail;
            return PackedDeviceQueue.Create(index, size, memory, a.Descriptor, a.Available, a.Used, eventIdx, indirect, out error,
                availState: avail, addressesAreUser: true, usedState: usedIndex);
        }
        // vhost-user.rst, SET_VRING_BASE: a split ring's used index is the one in the ring in memory,
        // read by the queue only once the ring's alignment and place are checked.
        var split = SplitDeviceQueue.Create(index, size, memory, a.Descriptor, a.Available, a.Used, eventIdx, indirect, out error,
            startIndex: (ushort)vringBase, addressesAreUser: true, usedFromRing: true);
        usedIndex = split?.UsedIndex ?? (ushort)vringBase;
        return split;
    }

    /// <summary>Where a stopped ring stands, as GET_VRING_BASE reports it and SET_VRING_BASE resumes it.</summary>
    public static uint BaseOf(IDeviceQueue queue) => queue is PackedDeviceQueue p
        ? p.LastAvailIndex | (uint)p.UsedIndex << 16
        : queue.LastAvailIndex;

    /// <summary>The base in words for logs.</summary>
    public static string Describe(bool packed, uint vringBase) => packed
        ? $"avail slot {vringBase & 0x7fff} wrap {(vringBase >> 15) & 1}, used slot {(vringBase >> 16) & 0x7fff} wrap {vringBase >> 31}"
        : $"available index {vringBase}";
}
