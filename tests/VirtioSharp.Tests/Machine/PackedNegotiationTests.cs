using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Driver;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Machine;

/// <summary>VIRTIO_F_RING_PACKED (bit 34, 6) between BlkDriver and BlkDevice over virtio-mmio (4.2.2).</summary>
public sealed class PackedNegotiationTests
{
    private static async Task RoundTrip(BlkDriver driver)
    {
        var data = new byte[3 * 4096];
        new Random(34).NextBytes(data);
        await driver.WriteAsync(8192, data);
        var back = new byte[data.Length];
        await driver.ReadAsync(8192, back);
        Assert.Equal(data, back);
        await driver.FlushAsync();
        Assert.Equal("virtiosharp", await driver.GetIdAsync());
    }

    [Fact]
    public async Task The_device_offers_packed_and_a_driver_that_prefers_it_gets_it_6()
    {
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 64, driver: new BlkDriverOptions { Ring = RingChoice.PreferPacked });
        Assert.True(VirtioFeatures.Has(rig.Device.DeviceFeatures, VirtioFeatures.RingPacked));
        Assert.True(VirtioFeatures.Has(rig.Machine.Device.NegotiatedFeatures, VirtioFeatures.RingPacked));
        Assert.Equal(VirtqueueFormat.Packed, rig.Driver.RingFormat);
        await RoundTrip(rig.Driver);
        rig.AssertHealthy();
        Assert.True(rig.Log.Contains("queue 0: packed"));
    }

    [Fact]
    public async Task A_ring_size_that_is_not_a_power_of_two_is_used_as_asked_2_8_10_1()
    {
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 128,
            driver: new BlkDriverOptions { Ring = RingChoice.RequirePacked }, driverQueueSize: 100);
        Assert.Equal(100, rig.Driver.QueueSize(0));
        await RoundTrip(rig.Driver);
        rig.AssertHealthy();
    }

    [Fact]
    public async Task The_default_driver_stays_on_split_rings_2_7()
    {
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 64);
        Assert.Equal(VirtqueueFormat.Split, rig.Driver.RingFormat);
        Assert.False(VirtioFeatures.Has(rig.Machine.Device.NegotiatedFeatures, VirtioFeatures.RingPacked));
        await RoundTrip(rig.Driver);
    }

    [Fact]
    public async Task A_device_told_not_to_offer_packed_gives_split_to_a_driver_that_prefers_packed()
    {
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 64, device: new BlkDeviceOptions { OfferPacked = false },
            driver: new BlkDriverOptions { Ring = RingChoice.PreferPacked });
        Assert.False(VirtioFeatures.Has(rig.Device.DeviceFeatures, VirtioFeatures.RingPacked));
        Assert.Equal(VirtqueueFormat.Split, rig.Driver.RingFormat);
        await RoundTrip(rig.Driver);
    }

    [Fact]
    public void A_driver_that_requires_packed_refuses_a_device_without_it()
    {
        var e = Assert.Throws<VirtioDeviceException>(() =>
            new MachineRig(new MemoryBackend(1 << 20), queueSize: 64, device: new BlkDeviceOptions { OfferPacked = false },
                driver: new BlkDriverOptions { Ring = RingChoice.RequirePacked }));
        Assert.Contains("VIRTIO_F_RING_PACKED", e.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Many_requests_in_parallel_wrap_a_small_packed_ring_through_the_machine_2_8_1(bool indirect)
    {
        var accept = BlkDriver.SupportedFeatures;
        if (!indirect)
            accept &= ~VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc);
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 8, maxTransfer: 4096,
            driver: new BlkDriverOptions { Ring = RingChoice.RequirePacked, AcceptFeatures = accept }, driverQueueSize: 7);
        var data = new byte[4096];
        var tasks = new List<Task>();
        for (var i = 0; i < 3000; i++)
        {
            data[0] = (byte)i;
            tasks.Add(rig.Driver.WriteAsync((ulong)(i % 64) * 4096, data.ToArray()).AsTask());
            if (tasks.Count == 16)
            {
                await Task.WhenAll(tasks);
                tasks.Clear();
            }
        }
        await Task.WhenAll(tasks);
        rig.AssertHealthy();
        Assert.Equal(3000, rig.Device.Stats.Requests(BlkRequestType.Out));
    }
}
