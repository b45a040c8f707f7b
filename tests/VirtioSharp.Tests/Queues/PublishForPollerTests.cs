using VirtioSharp.Memory;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// The polling paths of both ring formats: publishing without a notification decision
/// (PublishForPoller, PublishUsedForPoller), and the split halves reading the other side's index
/// only once the entries known from the last read are taken, which must still catch an index a
/// hostile peer moved too far (2.7.13.3, 2.7.8).
/// </summary>
public sealed class PublishForPollerTests
{
    [Theory]
    [InlineData(VirtqueueFormat.Split)]
    [InlineData(VirtqueueFormat.Packed)]
    public void Buffers_published_for_a_poller_reach_the_device_and_come_back(VirtqueueFormat format)
    {
        const int size = 16;
        using var ram = new GuestRam(0, 1 << 20);
        var alloc = new GuestAllocator(ram.Memory, 0, ram.Size);
        IDriverQueue driver;
        IDeviceQueue device;
        if (format == VirtqueueFormat.Split)
        {
            var d = SplitDriverQueue.Allocate(0, size, alloc, eventIdx: true);
            driver = d;
            device = SplitDeviceQueue.Create(0, size, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, true, true, out var e) ?? throw new InvalidOperationException(e);
        }
        else
        {
            var d = PackedDriverQueue.Allocate(0, size, alloc, eventIdx: true);
            driver = d;
            device = PackedDeviceQueue.Create(0, size, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, true, true, out var e) ?? throw new InvalidOperationException(e);
        }
        driver.DisableInterrupts();
        device.DisableNotifications();
        DriverBuffer[] buffer = [new(alloc.Allocate(64), 64, true)];

        // Three laps of the ring, five buffers at a time: both wrap counters flip (packed).
        var heads = new List<ushort>();
        for (var round = 0; round < 10; round++)
        {
            heads.Clear();
            for (var i = 0; i < 5; i++)
            {
                Assert.True(driver.TryAdd(buffer, out var head));
                heads.Add(head);
            }
            driver.PublishForPoller();
            Assert.False(driver.Publish()); // the batch was published: nothing is left to decide on

            for (var i = 0; i < 5; i++)
            {
                Assert.Equal(PopResult.Chain, device.TryPop(out var chain));
                Assert.Equal(64u, chain.Buffers[0].Length);
                device.AddUsed(chain.Head, (uint)(10 + i));
            }
            Assert.Equal(PopResult.Empty, device.TryPop(out _));
            device.PublishUsedForPoller();
            Assert.False(device.PublishUsed()); // nothing used since

            for (var i = 0; i < 5; i++)
            {
                Assert.True(driver.TryTakeUsed(out var head, out var length, out var error), $"round {round}, buffer {i}: {error}");
                Assert.Equal(heads[i], head);
                Assert.Equal((uint)(10 + i), length);
            }
            Assert.False(driver.TryTakeUsed(out _, out _, out var none));
            Assert.Equal(UsedError.None, none);
        }
        Assert.Equal(size, driver.FreeDescriptors);
    }

    [Fact]
    public void Used_elements_added_to_a_batch_move_used_idx_once_at_the_end_of_the_batch_2_7_8_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(eventIdx: true);
        var heads = new[] { ring.Chain(Buf.W(ring.Alloc(4), 4)), ring.Chain(Buf.W(ring.Alloc(4), 4)), ring.Chain(Buf.W(ring.Alloc(4), 4)) };
        ring.Offer(heads);
        ring.UsedEvent = 0; // the driver wants an interrupt once the first element is used

        Assert.Equal(PopResult.Chain, q.TryPop(out var c0));
        q.AddUsedToBatch(c0.Head, 1);
        Assert.Equal(PopResult.Chain, q.TryPop(out var c1));
        q.AddUsedToBatch(c1.Head, 2);
        // The elements are in the ring, and the driver cannot see them yet: idx has not moved.
        Assert.Equal(((uint)heads[0], 1u), ring.UsedElement(0));
        Assert.Equal(((uint)heads[1], 2u), ring.UsedElement(1));
        Assert.Equal(0, ring.UsedIdx);
        Assert.Equal(0, q.InFlight);
        Assert.Equal(2, q.UsedIndex);

        Assert.True(q.PublishUsed()); // moves idx over both, then decides (used_event 0 was passed)
        Assert.Equal(2, ring.UsedIdx);
        Assert.False(q.PublishUsed());

        // An element returned at once after one left to the batch moves idx over both.
        Assert.Equal(PopResult.Chain, q.TryPop(out var c2));
        q.AddUsedToBatch(c2.Head, 3);
        Assert.Equal(2, ring.UsedIdx);
        q.PublishUsedForPoller();
        Assert.Equal(3, ring.UsedIdx);
        Assert.Equal(((uint)heads[2], 3u), ring.UsedElement(2));
    }

    [Fact]
    public void AddUsed_after_elements_added_to_a_batch_moves_used_idx_over_all_of_them_2_7_8_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var heads = new[] { ring.Chain(Buf.W(ring.Alloc(4), 4)), ring.Chain(Buf.W(ring.Alloc(4), 4)) };
        ring.Offer(heads);
        Assert.Equal(PopResult.Chain, q.TryPop(out var c0));
        Assert.Equal(PopResult.Chain, q.TryPop(out var c1));
        q.AddUsedToBatch(c0.Head, 4);
        q.AddUsed(c1.Head, 4);
        Assert.Equal(2, ring.UsedIdx);
        q.PublishUsedForPoller();
        Assert.Equal(2, ring.UsedIdx);
        Assert.Equal(((uint)heads[1], 4u), ring.UsedElement(1));
    }

    [Fact]
    public void The_device_takes_the_entries_it_knows_then_finds_avail_idx_too_far_ahead_2_7_13_3()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var a = ring.Chain(Buf.W(ring.Alloc(1), 1));
        var b = ring.Chain(Buf.W(ring.Alloc(1), 1));
        ring.Offer(a, b);

        Assert.Equal(PopResult.Chain, q.TryPop(out var first)); // reads avail idx 2
        Assert.Equal(a, first.Head);
        ring.AvailIdx = 11; // ten ahead of the device's position in a ring of 8
        Assert.Equal(PopResult.Chain, q.TryPop(out var second)); // known from the read of 2
        Assert.Equal(b, second.Head);
        Assert.Equal(PopResult.RingCorrupt, q.TryPop(out _));
        Assert.Equal(RingError.AvailIndexTooFarAhead, q.LastRingError);
        Assert.Equal(11, q.LastRingErrorValue);
        Assert.Equal(2, q.LastAvailIndex);
    }

    [Fact]
    public void The_driver_takes_the_elements_it_knows_then_finds_used_idx_too_far_ahead_2_7_8()
    {
        using var ring = new RingBuilder(8);
        var driver = ring.Driver();
        var device = ring.Device();
        DriverBuffer[] buffer = [new(ring.Alloc(16), 16, true)];
        Assert.True(driver.TryAdd(buffer, out _));
        Assert.True(driver.TryAdd(buffer, out _));
        driver.PublishForPoller();
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(PopResult.Chain, device.TryPop(out var chain));
            device.AddUsed(chain.Head, 16);
        }

        Assert.True(driver.TryTakeUsed(out _, out _, out _)); // reads used idx 2
        ring.UsedIdx = 20; // eighteen ahead of the driver's position in a ring of 8
        Assert.True(driver.TryTakeUsed(out _, out _, out var error)); // known from the read of 2
        Assert.Equal(UsedError.None, error);
        Assert.False(driver.TryTakeUsed(out _, out _, out error));
        Assert.Equal(UsedError.UsedIndexTooFarAhead, error);
    }
}
