using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// Both halves of a split ring while their sides poll (2.7.7, 2.7.10): a polling device leaves the
/// driver's notifications off across drains, a polling driver asks for no interrupt while it
/// takes used buffers, and each side turns them back on before it sleeps without missing work.
/// </summary>
public sealed class PollingSuppressionTests
{
    private static DriverBuffer W(ulong a, uint n) => new(a, n, true);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_polled_device_queue_keeps_notifications_off_while_it_reports_new_chains_2_7_10(bool eventIdx)
    {
        using var ring = new RingBuilder(8);
        var driver = ring.Driver(eventIdx);
        var device = ring.Device(eventIdx);
        device.DisableNotifications();
        device.Polled = true;

        Assert.False(device.EnableNotifications()); // nothing available, and notifications stay off
        Assert.True(driver.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.False(driver.Publish()); // the driver is told not to notify
        Assert.True(device.EnableNotifications()); // the new chain is reported
        Assert.Equal(PopResult.Chain, device.TryPop(out _));
        Assert.False(device.EnableNotifications());
        Assert.True(driver.TryAdd([W(0x4000_2000, 8)], out _));
        Assert.False(driver.Publish()); // still off after a drain's EnableNotifications

        device.Polled = false; // the worker is about to sleep
        Assert.True(device.EnableNotifications()); // the second chain, seen behind the fence
        Assert.Equal(PopResult.Chain, device.TryPop(out _));
        Assert.False(device.EnableNotifications());
        Assert.True(driver.TryAdd([W(0x4000_3000, 8)], out _));
        Assert.True(driver.Publish()); // notifications are on again
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_polling_driver_is_not_interrupted_for_what_it_takes_and_is_again_once_it_stops_2_7_7(bool eventIdx)
    {
        using var ring = new RingBuilder(8);
        var driver = ring.Driver(eventIdx);
        var device = ring.Device(eventIdx);
        driver.StartPolling();
        Assert.True(driver.Polling);

        for (var i = 0; i < 20; i++) // past the queue size: the indices wrap the ring
        {
            Assert.True(driver.TryAdd([W(0x4000_1000, 8)], out _));
            driver.Publish();
            Assert.Equal(PopResult.Chain, device.TryPop(out var chain));
            device.AddUsed(chain.Head, 8);
            Assert.False(device.PublishUsed()); // 2.7.7.2: no interrupt for a polling driver
            Assert.True(driver.TryTakeUsed(out _, out _, out _));
        }

        // A buffer used after the driver's last look, just as it stops polling: reported, so it
        // takes it instead of sleeping.
        Assert.True(driver.TryAdd([W(0x4000_1000, 8)], out _));
        driver.Publish();
        Assert.Equal(PopResult.Chain, device.TryPop(out var last));
        device.AddUsed(last.Head, 8);
        Assert.False(device.PublishUsed());
        Assert.True(driver.StopPolling());
        Assert.False(driver.Polling);
        Assert.True(driver.TryTakeUsed(out _, out _, out _));
        Assert.False(driver.EnableInterrupts());

        // Interrupts on: the next used buffer interrupts the sleeping driver.
        Assert.True(driver.TryAdd([W(0x4000_1000, 8)], out _));
        driver.Publish();
        Assert.Equal(PopResult.Chain, device.TryPop(out var next));
        device.AddUsed(next.Head, 8);
        Assert.True(device.PublishUsed());
    }

    [Fact]
    public void With_EVENT_IDX_a_polling_driver_puts_used_event_one_behind_what_it_took_2_7_7_2()
    {
        using var ring = new RingBuilder(8);
        var driver = ring.Driver(eventIdx: true);
        var device = ring.Device(eventIdx: true);
        Assert.True(driver.TryAdd([W(0x4000_1000, 8)], out _));
        driver.Publish();
        Assert.Equal(PopResult.Chain, device.TryPop(out var chain));
        device.AddUsed(chain.Head, 8);
        device.PublishUsed();
        Assert.True(driver.TryTakeUsed(out _, out _, out _));
        Assert.Equal(1, ring.UsedEvent);

        driver.StartPolling();
        Assert.Equal(0, ring.UsedEvent);
        Assert.Equal(0, ring.AvailFlags); // 2.7.7.1: flags stay 0 with EVENT_IDX
        Assert.False(driver.StopPolling());
        Assert.Equal(1, ring.UsedEvent); // the next element the driver has not seen
    }
}
