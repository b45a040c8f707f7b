using System.Buffers.Binary;
using VirtioSharp.Native;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// A ring resumed from the used index in guest memory (vhost-user.rst, SET_VRING_BASE) reads that
/// index only after the ring passed its checks (2.7: 16/2/4 alignment, wholly inside guest
/// memory). The used ring's page is made inaccessible, so any early read would fault.
/// </summary>
public sealed class SplitDeviceQueueUsedIndexTests
{
    private const ulong GuestBase = 0x8000_0000;
    private const int Size = 16;

    private static SplitDeviceQueue? Create(GuardedGuestRam ram, ulong used, out string? error) =>
        SplitDeviceQueue.Create(0, Size, ram.Memory, GuestBase, GuestBase + 0x1000, used, eventIdx: false, indirect: false,
            out error, startIndex: 3, usedFromRing: true);

    [Fact]
    public void A_misaligned_or_outside_used_ring_is_refused_without_touching_it_2_7()
    {
        using var ram = new GuardedGuestRam(GuestBase, 64 << 10, guardSize: 16 << 10);
        var page = (nuint)Environment.SystemPageSize;
        var usedPage = ram.HostAddress(0) + 0x4000;
        Assert.Equal(0, Interop.MProtect(usedPage, page, Interop.PROT_NONE));

        Assert.Null(Create(ram, GuestBase + 0x4000 + 2, out var misaligned));
        Assert.Contains("break the 16/2/4 alignment of 2.7", misaligned);
        Assert.Null(Create(ram, ram.GuestEnd - 8, out var outside)); // aligned, but runs past the region into the guard
        Assert.Contains("is not inside guest memory", outside);
    }

    [Fact]
    public void A_sound_ring_resumes_from_the_used_index_in_memory()
    {
        using var ram = new GuardedGuestRam(GuestBase, 64 << 10, guardSize: 16 << 10);
        BinaryPrimitives.WriteUInt16LittleEndian(ram.Region(0)[(0x3000 + 2)..], 7); // 2.7.8: idx after flags
        var queue = Create(ram, GuestBase + 0x3000, out var error);
        Assert.True(queue is not null, error);
        Assert.Equal((3, 7), (queue.LastAvailIndex, queue.UsedIndex));
    }
}
