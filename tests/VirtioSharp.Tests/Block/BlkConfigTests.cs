using VirtioSharp.Block;

namespace VirtioSharp.Tests.Block;

public sealed class BlkConfigTests
{
    // 2.7.5.3.1: a driver keeps every chain within the queue size. It reads seg_max (5.2.4)
    // before it chooses a ring size, and QEMU's vhost-user-blk picks 128-entry rings by default,
    // so seg_max + header + status must fit 128 even when our maximum queue size is larger.
    [Theory]
    [InlineData(64, 62u)]
    [InlineData(128, 126u)]
    [InlineData(256, 126u)]
    [InlineData(1024, 126u)]
    public void Seg_max_keeps_header_segments_and_status_within_a_128_entry_ring(int queueSize, uint expected)
    {
        using var backend = new NullBackend(1 << 20);
        var device = new BlkDevice(backend, new BlkDeviceOptions { QueueSize = queueSize });
        Assert.Equal(expected, device.Config.SegMax);
        Assert.True(device.Config.SegMax + 2 <= Math.Min(queueSize, 128));
    }
}
