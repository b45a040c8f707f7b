using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// 2.7.13.3: idx "always increments, and wraps naturally at 65536". Drives the driver and device
/// halves directly (one thread, no machine) through far more than 65,536 requests.
/// </summary>
public sealed class IndexWrapTests
{
    private static readonly (RingStep Step, int Weight)[] Mix =
    [
        (RingStep.Add, 30), (RingStep.Publish, 12), (RingStep.Pop, 20), (RingStep.DeviceSleep, 4),
        (RingStep.Complete, 18), (RingStep.PublishUsed, 8), (RingStep.Take, 18), (RingStep.DriverSleep, 4),
    ];

    private static RingStep Pick(Random rnd)
    {
        var total = Mix.Sum(m => m.Weight);
        var x = rnd.Next(total);
        foreach (var (step, weight) in Mix)
        {
            if (x < weight)
                return step;
            x -= weight;
        }
        return RingStep.Add;
    }

    // Random interleavings of both sides' steps, with the notification model checked after each one.
    [Theory]
    [InlineData(2, true, 70_000)]
    [InlineData(4, false, 70_000)]
    [InlineData(4, true, 70_000)]
    public void Random_interleavings_wrap_past_65536_and_lose_nothing_2_7_13_3(int size, bool eventIdx, int requests)
    {
        using var pair = new QueuePair(size, eventIdx);
        var rnd = new Random(size * 7919 + (eventIdx ? 1 : 0));
        while (pair.Completed < requests)
            pair.Step(Pick(rnd), rnd.Next(1 << 16));
        pair.Drain();

        Assert.True(pair.Added >= requests);
        Assert.Equal(pair.Added, pair.Completed);
        Assert.True(pair.Notifications > 0 && pair.Interrupts > 0);
        Assert.Equal((ushort)pair.Added, pair.Device.LastAvailIndex); // the device's 16-bit view wrapped with it
    }

    // Batches as a real driver and device run them: fill the ring, publish, drain, complete in
    // random order, interrupt, reap, sleep. 200,000 requests wrap both indices three times.
    [Theory]
    [InlineData(1, false, 70_000)]
    [InlineData(4, true, 200_000)]
    [InlineData(16, false, 200_000)]
    [InlineData(256, true, 200_000)]
    public void Batched_traffic_wraps_past_65536_three_times_2_7_13_3(int size, bool eventIdx, int requests)
    {
        using var pair = new QueuePair(size, eventIdx);
        var rnd = new Random(size);
        while (pair.Completed < requests)
        {
            while (pair.Add(1 + rnd.Next(Math.Min(3, size)), rnd.Next(3)))
            {
            }
            pair.Step(RingStep.Publish, 0);
            while (pair.Device.InFlight < pair.Outstanding && !pair.DeviceAsleep)
                pair.Step(RingStep.Pop, 0);
            pair.Step(RingStep.DeviceSleep, 0);
            while (pair.Device.InFlight > 0)
                pair.Step(RingStep.Complete, rnd.Next());
            pair.Step(RingStep.PublishUsed, 0);
            while (pair.Outstanding > 0 && !pair.DriverAsleep)
                pair.Step(RingStep.Take, 0);
            pair.Step(RingStep.DriverSleep, 0);
        }
        pair.Drain();

        Assert.True(pair.Completed >= requests);
        Assert.Equal(pair.Added, pair.Completed);
        Assert.Equal((ushort)pair.Added, pair.Device.LastAvailIndex);
        Assert.True(pair.Notifications > 0 && pair.Interrupts > 0);
    }

    [Fact]
    public void A_full_ring_is_told_apart_from_an_empty_one_at_every_wrap_2_7_13()
    {
        // Queue size 32768: a full ring puts avail idx exactly 32768 ahead, still distinguishable from empty.
        using var ring = new RingBuilder(32768, 2 << 20);
        var driver = ring.Driver();
        var device = ring.Device();
        var buf = ring.Alloc(16);
        for (var round = 0; round < 5; round++) // 5 * 32768 > 2 * 65536
        {
            for (var i = 0; i < 32768; i++)
                Assert.True(driver.TryAdd([new DriverBuffer(buf, 16, true)], out _));
            driver.Publish();
            Assert.Equal(0, driver.FreeDescriptors);
            for (var i = 0; i < 32768; i++)
            {
                Assert.Equal(PopResult.Chain, device.TryPop(out var chain));
                device.AddUsed(chain.Head, 16);
            }
            Assert.Equal(PopResult.Empty, device.TryPop(out _));
            device.PublishUsed();
            for (var i = 0; i < 32768; i++)
                Assert.True(driver.TryTakeUsed(out _, out _, out _));
            Assert.False(driver.TryTakeUsed(out _, out _, out var error));
            Assert.Equal(UsedError.None, error);
            Assert.Equal(32768, driver.FreeDescriptors);
        }
        Assert.Equal(unchecked((ushort)(5 * 32768)), ring.AvailIdx);
        Assert.Equal(unchecked((ushort)(5 * 32768)), ring.UsedIdx);
    }
}
