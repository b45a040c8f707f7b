using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// The two ring halves on two threads, sharing memory as a guest and a device do. The driver
/// reaps until the used ring looks empty and then sleeps until interrupted; the device
/// interrupts only when <see cref="SplitDeviceQueue.PublishUsed"/> says the driver asked for it
/// (2.7.7). A lost notification shows up as a driver asleep with requests out and no interrupt
/// coming. This is a stress test: the store-load races the barriers of 2.7.13.4 and 2.7.14 close
/// have windows of a few instructions, so passing it does not prove them; failing it is a bug.
/// </summary>
public sealed class CrossThreadNotificationTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void No_used_buffer_notification_is_lost_between_threads_2_7_7(bool eventIdx)
    {
        const int Requests = 300_000;
        using var ring = new RingBuilder(64, 1 << 20);
        var driver = ring.Driver(eventIdx);
        var device = ring.Device(eventIdx: eventIdx);
        var buffer = ring.Alloc(16);
        using var interrupt = new SemaphoreSlim(0);
        using var kick = new SemaphoreSlim(0);
        var stop = false;
        Exception? deviceError = null;

        var deviceThread = new Thread(() =>
        {
            try
            {
                while (!Volatile.Read(ref stop))
                {
                    kick.Wait(50);
                    device.DisableNotifications();
                    do
                    {
                        PopResult r;
                        while ((r = device.TryPop(out var chain)) == PopResult.Chain)
                        {
                            device.AddUsed(chain.Head, 16);
                            if (device.PublishUsed())
                                interrupt.Release();
                        }
                        if (r == PopResult.RingCorrupt)
                            throw new InvalidOperationException($"ring corrupt: {device.LastRingError}");
                    }
                    while (device.EnableNotifications());
                }
            }
            catch (Exception e)
            {
                deviceError = e;
            }
        })
        { IsBackground = true };
        deviceThread.Start();

        var completed = 0;
        var submitted = 0;
        try
        {
            while (completed < Requests)
            {
                while (submitted < Requests && driver.TryAdd([new DriverBuffer(buffer, 16, true)], out _))
                    submitted++;
                if (driver.Publish())
                    kick.Release();
                // Reap until the used ring looks empty, then sleep until interrupted, as an
                // interrupt handler does: no second look at the ring after the last element.
                while (driver.TryTakeUsed(out _, out var len, out _))
                {
                    Assert.Equal(16u, len);
                    completed++;
                }
                if (submitted > completed && !interrupt.Wait(TimeSpan.FromSeconds(5)))
                    Assert.Fail($"no interrupt for 5 s with {submitted - completed} requests out, device at avail {device.LastAvailIndex} of {ring.AvailIdx}, used idx {ring.UsedIdx}, used_event {ring.UsedEvent}");
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
            kick.Release();
            deviceThread.Join();
        }
        Assert.Null(deviceError);
        Assert.Equal(Requests, completed);
    }
}
