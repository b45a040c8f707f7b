using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Queues;

/// <summary>
/// The per-request path of both ring formats allocates nothing: add and publish (driver), take,
/// return and publish used (device), reap (driver), through the interfaces the block driver and
/// device use, over many laps of the ring.
/// </summary>
public sealed class RingAllocationTests
{
    [Theory]
    [InlineData(VirtqueueFormat.Split, true, 1)]
    [InlineData(VirtqueueFormat.Split, false, 32)]
    [InlineData(VirtqueueFormat.Packed, true, 1)]
    [InlineData(VirtqueueFormat.Packed, false, 32)]
    public void A_request_through_the_ring_allocates_nothing(VirtqueueFormat format, bool eventIdx, int batch)
    {
        const int size = 128; // packed: 3-slot requests do not divide it, so lists wrap around the ring's end
        using var ram = new GuestRam(0, 1 << 20);
        var alloc = new GuestAllocator(ram.Memory, 0, ram.Size);
        IDriverQueue driver;
        IDeviceQueue device;
        if (format == VirtqueueFormat.Split)
        {
            var d = SplitDriverQueue.Allocate(0, size, alloc, eventIdx);
            driver = d;
            device = SplitDeviceQueue.Create(0, size, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, eventIdx, true, out var e) ?? throw new InvalidOperationException(e);
        }
        else
        {
            var d = PackedDriverQueue.Allocate(0, size, alloc, eventIdx);
            driver = d;
            device = PackedDeviceQueue.Create(0, size, ram.Memory, d.DescriptorTable, d.DriverArea, d.DeviceArea, eventIdx, true, out var e) ?? throw new InvalidOperationException(e);
        }
        DriverBuffer[] chain = [new(alloc.Allocate(16), 16, false), new(alloc.Allocate(4096, 4096), 4096, true), new(alloc.Allocate(1), 1, true)];

        var interrupts = 0L;
        // No Assert inside: only the ring's own code runs between the two counts.
        long Requests(int n)
        {
            long done = 0;
            while (done < n)
            {
                for (var i = 0; i < batch; i++)
                {
                    if (!driver.TryAdd(chain, out _))
                        throw new InvalidOperationException("the ring ran out of descriptors");
                }
                driver.Publish();
                var k = 0;
                while (device.TryPop(out var c) == PopResult.Chain)
                {
                    // Both ways of returning a chain: at once, and with the batch (as the drain loop does).
                    if ((k++ & 1) == 0)
                        device.AddUsedToBatch(c.Head, 4097);
                    else
                        device.AddUsed(c.Head, 4097);
                }
                if (device.PublishUsed())
                    interrupts++;
                while (driver.TryTakeUsed(out _, out var length, out _))
                {
                    if (length != 4097)
                        throw new InvalidOperationException($"used length {length}");
                    done++;
                }
                if (driver.EnableInterrupts()) // as a driver going back to sleep does
                    throw new InvalidOperationException("used buffers left behind");
            }
            return done;
        }

        Requests(2_000); // first calls: JIT, type loading
        var before = GC.GetAllocatedBytesForCurrentThread();
        var done = Requests(100_000);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(100_000, done);
        Assert.True(interrupts > 0);
        Assert.Equal(0, allocated);
    }
}
