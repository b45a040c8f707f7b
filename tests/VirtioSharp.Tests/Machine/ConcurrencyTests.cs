using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Machine;

/// <summary>
/// Many callers on the thread pool with the ring full (depth = queue size), each writing its own
/// region and reading it back, through the whole machine with one and two queues (5.2.2).
/// </summary>
public sealed class ConcurrencyTests
{
    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(1, false)]
    [InlineData(2, false)]
    public async Task Sixteen_tasks_with_a_full_ring_each_read_back_what_they_wrote(int queues, bool indirect)
    {
        const int Tasks = 16;
        const int QueueSize = 32;
        const int Region = 64 * 1024;
        const int Chunk = 4096;
        const int Rounds = 40;
        var accept = BlkDriver.SupportedFeatures & ~(indirect ? 0 : VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc));
        var backend = new MemoryBackend(Tasks * Region);
        using var rig = new MachineRig(backend, queueSize: QueueSize, numQueues: queues, maxTransfer: Chunk,
            driver: new BlkDriverOptions { AcceptFeatures = accept });
        var driver = rig.Driver;
        Assert.Equal(queues, driver.QueueCount);
        // With indirect descriptors every request takes one descriptor, so the whole ring is in use.
        Assert.Equal(indirect ? QueueSize : QueueSize / 3, driver.Depth);

        var maxInFlight = 0;
        var tasks = Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            var rnd = new Random(t);
            var baseOffset = (ulong)t * Region;
            var expected = new byte[Region];
            for (var round = 0; round < Rounds; round++)
            {
                rnd.NextBytes(expected);
                // Every chunk of the region in flight at once.
                var writes = Enumerable.Range(0, Region / Chunk)
                    .Select(c => driver.WriteAsync(baseOffset + (ulong)(c * Chunk), expected.AsMemory(c * Chunk, Chunk)).AsTask())
                    .ToArray();
                InterlockedMax(ref maxInFlight, driver.Outstanding);
                await Task.WhenAll(writes);

                var back = new byte[Region];
                var reads = Enumerable.Range(0, Region / Chunk)
                    .Select(c => driver.ReadAsync(baseOffset + (ulong)(c * Chunk), back.AsMemory(c * Chunk, Chunk)).AsTask())
                    .ToArray();
                await Task.WhenAll(reads);
                if (!back.AsSpan().SequenceEqual(expected))
                    throw new Xunit.Sdk.XunitException($"task {t} round {round}: read back differs");
            }
            return expected;
        })).ToArray();
        var finals = await Task.WhenAll(tasks);

        for (var t = 0; t < Tasks; t++)
            Assert.True(backend.Contents((ulong)t * Region, Region).SequenceEqual(finals[t]), $"region {t} on disk differs");
        Assert.Equal(Tasks * Rounds * 2L * (Region / Chunk), rig.Device.Stats.Total);
        Assert.True(maxInFlight > 1, "requests never overlapped");
        rig.AssertHealthy();
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while (value > (seen = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
