using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Machine;

/// <summary>
/// More than 65,536 requests through the whole machine (driver, MMIO, device thread, IRQ thread),
/// so the 16-bit available and used indices wrap (2.7.13.3) under real concurrency.
/// </summary>
public sealed class MachineWrapTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_hundred_and_forty_thousand_requests_wrap_the_ring_indices_2_7_13_3(bool eventIdx)
    {
        const int Requests = 140_000; // both indices wrap twice
        const int Workers = 8;
        var accept = BlkDriver.SupportedFeatures & ~(eventIdx ? 0 : VirtioFeatures.Bit(VirtioFeatures.RingEventIdx));
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 8, maxTransfer: 4096,
            driver: new BlkDriverOptions { AcceptFeatures = accept });
        Assert.Equal(eventIdx, VirtioFeatures.Has(rig.Driver.Features, VirtioFeatures.RingEventIdx));
        var driver = rig.Driver;

        var workers = Enumerable.Range(0, Workers).Select(w => Task.Run(async () =>
        {
            var sector = new byte[512];
            var back = new byte[512];
            var offset = (ulong)w * 512;
            for (var i = 0; i < Requests / Workers / 2; i++)
            {
                BitConverter.TryWriteBytes(sector, i);
                sector[511] = (byte)w;
                await driver.WriteAsync(offset, sector);
                await driver.ReadAsync(offset, back);
                if (!back.AsSpan().SequenceEqual(sector))
                    throw new Xunit.Sdk.XunitException($"worker {w} request {i}: read back differs");
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.True(rig.Device.Stats.Total >= Requests);
        Assert.True(rig.Device.Stats.Total > ushort.MaxValue + 1);
        rig.AssertHealthy();
    }
}
