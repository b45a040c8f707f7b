using VirtioSharp.Memory;

namespace VirtioSharp.Tests.Memory;

/// <summary>
/// Guest-physical address translation: every guest-supplied range is checked against the regions
/// with overflow-safe arithmetic, including the last byte of each region (2.7.5: addr is guest-physical).
/// </summary>
public sealed class GuestMemoryTests
{
    [Fact]
    public void A_range_ending_at_the_last_byte_of_a_region_translates_and_one_byte_more_does_not()
    {
        using var ram = new GuestRam(0x10000, 0x4000);
        var m = ram.Memory;
        Assert.True(m.TryTranslate(0x10000, 0x4000, out var start));
        Assert.True(m.TryTranslate(0x13fff, 1, out var last));
        Assert.Equal(start + 0x3fff, last);
        Assert.True(m.TryTranslate(0x13000, 0x1000, out _));
        Assert.False(m.TryTranslate(0x13000, 0x1001, out _));
        Assert.False(m.TryTranslate(0x14000, 1, out _));
        Assert.False(m.TryTranslate(0xffff, 1, out _));
        Assert.False(m.TryTranslate(0xffff, 2, out _)); // straddles the start
    }

    [Theory]
    [InlineData(ulong.MaxValue, 1UL)]
    [InlineData(ulong.MaxValue, 2UL)]
    [InlineData(0x10000UL, ulong.MaxValue)]
    [InlineData(0x12000UL, ulong.MaxValue - 0x1000)] // address + length wraps back into the region
    [InlineData(0x10001UL, 0x4000UL)]
    public void Ranges_that_wrap_or_overrun_are_refused(ulong address, ulong length)
    {
        using var ram = new GuestRam(0x10000, 0x4000);
        Assert.False(ram.Memory.TryTranslate(address, length, out var host));
        Assert.Equal(0, host);
        Assert.Throws<ArgumentOutOfRangeException>(() => ram.Memory.GetPointer(address, length));
    }

    [Fact]
    public void A_range_across_two_adjacent_regions_is_refused()
    {
        using var a = new GuestRam(0x10000, 0x1000);
        using var b = new GuestRam(0x11000, 0x1000);
        var m = new GuestMemory(a.Memory.Regions[0], b.Memory.Regions[0]);
        Assert.True(m.TryTranslate(0x10fff, 1, out _));
        Assert.True(m.TryTranslate(0x11000, 1, out var inB));
        Assert.Equal(b.Memory.Regions[0].HostAddress, inB);
        Assert.False(m.TryTranslate(0x10fff, 2, out _)); // host memory is not contiguous across regions
    }

    [Fact]
    public void Overlapping_or_empty_regions_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new GuestMemory(new GuestRegion(0x1000, 0x2000, 0x100000), new GuestRegion(0x2000, 0x1000, 0x200000)));
        Assert.Throws<ArgumentException>(() => new GuestMemory(new GuestRegion(0x1000, 0, 0x100000)));
        Assert.Throws<ArgumentException>(() => new GuestMemory(new GuestRegion(ulong.MaxValue - 10, 0x100, 0x100000)));
        // Same guest-physical layout but overlapping front-end (user) addresses.
        Assert.Throws<ArgumentException>(() => new GuestMemory(new GuestRegion(0x1000, 0x1000, 0x100000, 0x9000), new GuestRegion(0x2000, 0x1000, 0x200000, 0x9800)));
    }

    [Fact]
    public void User_addresses_translate_within_their_own_region()
    {
        using var ram = new GuestRam(0x10000, 0x1000);
        var r = ram.Memory.Regions[0];
        var m = new GuestMemory(new GuestRegion(0x10000, 0x1000, r.HostAddress, 0x7f00_0000));
        Assert.True(m.TryTranslateUser(0x7f00_0fff, 1, out var host));
        Assert.Equal(r.HostAddress + 0xfff, host);
        Assert.True(m.TryUserToGuest(0x7f00_0010, 16, out var gpa));
        Assert.Equal(0x10010UL, gpa);
        Assert.False(m.TryTranslateUser(0x7f00_0fff, 2, out _));
        Assert.False(m.TryTranslateUser(0x10000, 1, out _)); // a guest-physical address is not a user one here
    }

    [Fact]
    public void The_allocator_aligns_zeroes_and_refuses_to_overrun_its_range()
    {
        using var ram = new GuestRam(0x10000, 0x4000);
        ram.Memory.GetSpan(0x10000, 0x4000).Fill(0xcc);
        var alloc = new GuestAllocator(ram.Memory, 0x10000, 0x2000);

        var a = alloc.Allocate(10, 16);
        var b = alloc.Allocate(100, 4096);
        Assert.Equal(0x10000UL, a);
        Assert.Equal(0x11000UL, b);
        Assert.All(ram.Memory.GetSpan(b, 100).ToArray(), x => Assert.Equal(0, x));
        Assert.Throws<InsufficientMemoryException>(() => alloc.Allocate(0x1000, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => alloc.Allocate(1, 3));
        Assert.Throws<ArgumentException>(() => new GuestAllocator(ram.Memory, 0x13000, 0x2000));
    }
}
