using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Queues;

/// <summary>2.7: part sizes and alignments of a split virtqueue; 2.7.2: the legacy layout.</summary>
public sealed class SplitQueueLayoutTests
{
    public static TheoryData<int> LegalSizes()
    {
        var data = new TheoryData<int>();
        for (var n = 1; n <= 32768; n *= 2)
            data.Add(n);
        return data;
    }

    // 2.7 table: descriptor table 16-aligned, 16*n; available ring 2-aligned, 6+2n; used ring 4-aligned, 6+8n.
    [Theory]
    [MemberData(nameof(LegalSizes))]
    public void Modern_layout_2_7_sizes_offsets_and_alignments(int n)
    {
        var l = SplitQueueLayout.For(n);

        Assert.Equal(n, l.QueueSize);
        Assert.Equal(16UL * (ulong)n, SplitQueueLayout.DescriptorTableSize(n));
        Assert.Equal(6 + 2UL * (ulong)n, SplitQueueLayout.AvailRingSize(n));
        Assert.Equal(6 + 8UL * (ulong)n, SplitQueueLayout.UsedRingSize(n));

        Assert.Equal(0UL, l.DescriptorTableOffset);
        Assert.Equal(16UL * (ulong)n, l.AvailRingOffset);
        var availEnd = l.AvailRingOffset + 6 + 2UL * (ulong)n;
        var expectedUsed = (availEnd + 3) / 4 * 4; // next 4-byte boundary
        Assert.Equal(expectedUsed, l.UsedRingOffset);
        Assert.Equal(expectedUsed + 6 + 8UL * (ulong)n, l.TotalSize);

        Assert.Equal(0UL, l.DescriptorTableOffset % 16);
        Assert.Equal(0UL, l.AvailRingOffset % 2);
        Assert.Equal(0UL, l.UsedRingOffset % 4);
        // The parts do not overlap and are packed (padding only for the used ring's alignment).
        Assert.True(l.AvailRingOffset >= l.DescriptorTableOffset + SplitQueueLayout.DescriptorTableSize(n));
        Assert.True(l.UsedRingOffset >= availEnd && l.UsedRingOffset - availEnd < 4);
    }

    // 2.7.2: legacy virtq_size(qsz) = ALIGN(16*qsz + 2*(3+qsz)) + ALIGN(2*3 + 8*qsz), Queue Align 4096.
    [Theory]
    [MemberData(nameof(LegalSizes))]
    public void Legacy_layout_2_7_2_matches_the_spec_formula(int n)
    {
        const ulong qalign = 4096 - 1;
        static ulong Align(ulong x) => (x + qalign) & ~qalign;
        var q = (ulong)n;
        var specTotal = Align(16 * q + 2 * (3 + q)) + Align(2 * 3 + 8 * q);

        var l = SplitQueueLayout.For(n, legacy: true);

        Assert.Equal(0UL, l.DescriptorTableOffset);
        Assert.Equal(16 * q, l.AvailRingOffset);
        Assert.Equal(Align(16 * q + 2 * (3 + q)), l.UsedRingOffset); // used ring starts on the next Queue Align boundary
        Assert.Equal(0UL, l.UsedRingOffset % 4096);
        Assert.Equal(specTotal, l.TotalSize);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(100)]
    [InlineData(1000)]
    [InlineData(32767)]
    [InlineData(32769)]
    [InlineData(65536)]
    [InlineData(int.MaxValue)]
    [InlineData(int.MinValue)]
    public void Illegal_sizes_are_rejected_2_7_power_of_two_at_most_32768(int n)
    {
        Assert.False(SplitRing.IsValidSize(n));
        Assert.Throws<ArgumentOutOfRangeException>(() => SplitQueueLayout.For(n));
        Assert.Throws<ArgumentOutOfRangeException>(() => SplitQueueLayout.For(n, legacy: true));

        using var ram = new GuestRam(0x1000, 1 << 20);
        Assert.Null(SplitDeviceQueue.Create(0, n, ram.Memory, 0x1000, 0x2000, 0x3000, false, false, out var error));
        Assert.Contains("2.7", error);
        Assert.Throws<ArgumentOutOfRangeException>(() => new SplitDriverQueue(0, n, ram.Memory, 0x1000, 0x2000, 0x3000, false));
    }

    [Fact]
    public void Exactly_sixteen_sizes_are_legal_2_7()
    {
        var legal = Enumerable.Range(0, 70000).Where(SplitRing.IsValidSize).ToArray();
        Assert.Equal(Enumerable.Range(0, 16).Select(i => 1 << i), legal);
    }

    // 2.7.1: each part's first byte is a multiple of its alignment; the device refuses rings that are not.
    [Theory]
    [InlineData(0x1008, 0x2000, 0x3000)] // descriptor table not 16-aligned
    [InlineData(0x1000, 0x2001, 0x3000)] // available ring not 2-aligned
    [InlineData(0x1000, 0x2000, 0x3002)] // used ring not 4-aligned
    public void Device_refuses_misaligned_parts_2_7_1(ulong desc, ulong avail, ulong used)
    {
        using var ram = new GuestRam(0x1000, 1 << 20);
        Assert.Null(SplitDeviceQueue.Create(0, 8, ram.Memory, desc, avail, used, false, false, out var error));
        Assert.Contains("alignment", error);
        // The smallest legal alignments are accepted.
        Assert.NotNull(SplitDeviceQueue.Create(0, 8, ram.Memory, 0x1010, 0x2002, 0x3004, false, false, out _));
    }

    [Fact]
    public void Device_accepts_rings_ending_at_the_last_byte_of_RAM_and_refuses_one_byte_more_2_7()
    {
        using var ram = new GuestRam(0x10000, 0x10000);
        const ulong end = 0x20000;
        const int n = 16;
        var descSize = SplitQueueLayout.DescriptorTableSize(n);   // 256, a multiple of 16
        var availSize = SplitQueueLayout.AvailRingSize(n);        // 38, even
        var usedSize = SplitQueueLayout.UsedRingSize(n);          // 134

        Assert.NotNull(SplitDeviceQueue.Create(0, n, ram.Memory, end - descSize, 0x11000, 0x12000, false, false, out _));
        Assert.Null(SplitDeviceQueue.Create(0, n, ram.Memory, end - descSize + 16, 0x11000, 0x12000, false, false, out var error));
        Assert.Contains("not inside guest memory", error);

        Assert.NotNull(SplitDeviceQueue.Create(0, n, ram.Memory, 0x10000, end - availSize, 0x12000, false, false, out _));
        Assert.Null(SplitDeviceQueue.Create(0, n, ram.Memory, 0x10000, end - availSize + 2, 0x12000, false, false, out _));

        Assert.NotNull(SplitDeviceQueue.Create(0, n, ram.Memory, 0x10000, 0x11000, (end - usedSize) & ~3UL, false, false, out _));
        Assert.Null(SplitDeviceQueue.Create(0, n, ram.Memory, 0x10000, 0x11000, ((end - usedSize) & ~3UL) + 4, false, false, out _));

        // Below the region, and an address whose end would wrap the 64-bit space.
        Assert.Null(SplitDeviceQueue.Create(0, n, ram.Memory, 0x0, 0x11000, 0x12000, false, false, out _));
        Assert.Null(SplitDeviceQueue.Create(0, n, ram.Memory, ulong.MaxValue - 15, 0x11000, 0x12000, false, false, out _));
    }
}
