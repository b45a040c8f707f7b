using VirtioSharp.Block;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Block;

/// <summary>
/// Per-queue scratch follows the ring the driver set up, not the largest ring the spec allows
/// (2.7: 32768 entries): a chain holds at most queue-size buffers (2.7.5.3.1), and that is all
/// the I/O vectors a request can need.
/// </summary>
public sealed class BlkDeviceScratchTests
{
    [Fact]
    public void A_device_sets_nothing_aside_for_rings_it_has_not_seen()
    {
        using var backend = new NullBackend(1 << 20);
        var before = GC.GetAllocatedBytesForCurrentThread();
        _ = new BlkDevice(backend, new BlkDeviceOptions { NumQueues = 64, QueueSize = 128 });
        var made = GC.GetAllocatedBytesForCurrentThread() - before;
        // 64 queues of 32768 I/O vectors would be 32 MiB; what is left is config, stats and the small pools.
        Assert.True(made < 1 << 20, $"a 64-queue device allocated {made} bytes before any ring started");
    }

    [Fact]
    public void A_chain_as_long_as_its_ring_is_served_when_a_queue_moves_to_a_larger_ring_2_7_5_3_1()
    {
        using var h = new BlkHarness(new MemoryBackend(1 << 20), queueSize: 64);
        var data = new byte[512 * 62];
        new Random(5).NextBytes(data);
        Assert.Equal((byte)BlkStatus.Ok, h.Run(Buf.R(h.Header(BlkRequestType.Out, 8), 16), Buf.R(h.Ring.Put(data), (uint)data.Length),
            Buf.W(h.StatusByte(), 1)).Status);

        // Queue 0 first drains a ring of 4 entries: a 4-buffer chain, its whole length.
        using (var small = new RingBuilder(4))
        {
            var status = small.Alloc(1);
            var header = small.Alloc(16);
            new BlkRequestHeader((uint)BlkRequestType.In, 0, 8).Write(small.Span(header, 16));
            var into = small.Alloc(1024);
            small.Offer(small.Chain(Buf.R(header, 16), Buf.W(into, 512), Buf.W(into + 512, 512), Buf.W(status, 1)));
            h.Device.ProcessQueue(small.Device());
            Assert.Equal((byte)BlkStatus.Ok, small.Span(status, 1)[0]);
            Assert.Equal(data.AsSpan(0, 1024).ToArray(), small.Span(into, 1024).ToArray());
        }

        // Then the 64-entry ring again, with a chain of 64 buffers: header, 62 data buffers, status.
        var buffers = new List<Buf> { Buf.R(h.Header(BlkRequestType.In, 8), 16) };
        var first = h.Data(512 * 62);
        for (var i = 0; i < 62; i++)
            buffers.Add(Buf.W(first + (ulong)i * 512, 512));
        buffers.Add(Buf.W(h.StatusByte(), 1));
        var read = h.Run([.. buffers]);
        Assert.Equal(((byte)BlkStatus.Ok, 512u * 62 + 1), (read.Status, read.UsedLength));
        Assert.Equal(data, h.Ring.Span(first, data.Length).ToArray());
    }
}
