using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// Our front-end and virtio-blk driver against real vhost-user-blk back-ends: qemu-storage-daemon
/// and our own server. What reaches the image is checked with qemu's tools and byte by byte.
/// </summary>
public sealed class FrontendInteropTests
{
    private const ulong DiskSize = 32 << 20;

    public static TheoryData<PeerKind> Peers => new() { PeerKind.Qsd, PeerKind.Vblk };

    private static (VhostUserFrontendTransport Transport, BlkDriver Driver) Open(BlkPeer peer, int queueSize = 128, int queues = 1)
    {
        var transport = VhostUserFrontendTransport.Connect(peer.SocketPath, new VhostUserFrontendOptions { MemorySize = 48 << 20 });
        try
        {
            return (transport, BlkDriver.Start(transport, new BlkDriverOptions { QueueSize = queueSize, NumQueues = queues }));
        }
        catch
        {
            transport.Dispose();
            throw;
        }
    }

    private static void Close((VhostUserFrontendTransport Transport, BlkDriver Driver) s)
    {
        s.Driver.Dispose();
        s.Transport.Dispose();
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task Seeded_writes_at_many_offsets_reach_the_raw_image_byte_for_byte(PeerKind kind)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, DiskSize);
        var model = new byte[DiskSize];
        var rng = new Random(20240611);

        using (var peer = BlkPeer.ExportFile(kind, dir, image))
        {
            var s = Open(peer);
            try
            {
                Assert.Equal(DiskSize, s.Driver.Capacity);
                // Edges first: the first sector, the last sector, a write across the driver's chunk size.
                var writes = new List<(ulong Offset, int Length)>
                {
                    (0, 512),
                    (DiskSize - 512, 512),
                    (DiskSize - 128 * 1024, 128 * 1024),
                    (3 * 65536 - 4096, 3 * 65536 + 1024),
                    (5 << 20, 1 << 20),
                };
                for (var i = 0; i < 60; i++)
                {
                    var length = rng.Next(1, 600) * 512;
                    var offset = (ulong)rng.NextInt64(0, (long)(DiskSize - (ulong)length) / 512) * 512;
                    writes.Add((offset, length));
                }
                foreach (var (offset, length) in writes)
                {
                    var data = new byte[length];
                    rng.NextBytes(data);
                    await s.Driver.WriteAsync(offset, data);
                    data.CopyTo(model.AsSpan((int)offset));
                }
                // Many requests in flight at once, on disjoint sectors.
                var parallel = new List<Task>();
                for (var i = 0; i < 64; i++)
                {
                    var offset = 20UL * 1024 * 1024 + (ulong)i * 8192;
                    var data = new byte[4096];
                    rng.NextBytes(data);
                    data.CopyTo(model.AsSpan((int)offset));
                    parallel.Add(s.Driver.WriteAsync(offset, data).AsTask());
                }
                await Task.WhenAll(parallel);
                // Uniform regions for qemu-io's pattern check.
                await s.Driver.WriteAsync(8 << 20, Filled(64 * 1024, 0x5a));
                Filled(64 * 1024, 0x5a).CopyTo(model.AsSpan(8 << 20));
                await s.Driver.WriteAsync(DiskSize - 4096, Filled(4096, 0xc3));
                Filled(4096, 0xc3).CopyTo(model.AsSpan((int)(DiskSize - 4096)));
                await s.Driver.FlushAsync();

                // Read everything back through the front-end, in odd-sized pieces.
                var back = new byte[DiskSize];
                for (var offset = 0; offset < back.Length;)
                {
                    var n = Math.Min(back.Length - offset, 512 * rng.Next(1, 700));
                    await s.Driver.ReadAsync((ulong)offset, back.AsMemory(offset, n));
                    offset += n;
                }
                AssertSame(model, back, "read back through the front-end");
            }
            finally
            {
                Close(s);
            }
        }

        // The back-end is gone; the image is ours to inspect.
        AssertSame(model, File.ReadAllBytes(image), "raw image file");
        var reference = dir.File("reference.raw");
        File.WriteAllBytes(reference, model);
        var (code, output) = QemuTools.Run("qemu-img", "compare", "-f", "raw", "-F", "raw", image, reference);
        Assert.True(code == 0, $"qemu-img compare: {output}");
        foreach (var (pattern, offset, length) in new (int Pattern, ulong Offset, ulong Length)[] { (0x5a, 8UL << 20, 65536UL), (0xc3, DiskSize - 4096, 4096UL) })
        {
            (code, output) = QemuTools.Run("qemu-io", "-f", "raw", "-c", $"read -P 0x{pattern:x2} {offset} {length}", image);
            Assert.True(code == 0 && !output.Contains("verification failed", StringComparison.OrdinalIgnoreCase), $"qemu-io: {output}");
        }
        (code, output) = QemuTools.Run("qemu-io", "-f", "raw", "-c", $"read -P 0x5a {(8 << 20) - 512} 1024", image);
        Assert.Contains("verification failed", output, StringComparison.OrdinalIgnoreCase); // the check can fail
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task A_null_device_reads_zeroes_and_accepts_writes(PeerKind kind)
    {
        using var dir = new TempDir();
        const ulong size = 1UL << 30;
        using var peer = BlkPeer.ExportNull(kind, dir, size);
        var s = Open(peer);
        try
        {
            Assert.Equal(size, s.Driver.Capacity);
            var buffer = Filled(256 * 1024, 0xff);
            await s.Driver.WriteAsync(4096, buffer);
            foreach (var offset in new ulong[] { 0, 4096, size / 2 + 512, size - (ulong)buffer.Length })
            {
                Array.Fill(buffer, (byte)0xff);
                await s.Driver.ReadAsync(offset, buffer);
                Assert.All(buffer, b => Assert.Equal(0, b));
            }
            Assert.False(string.IsNullOrEmpty(await s.Driver.GetIdAsync()));
        }
        finally
        {
            Close(s);
        }
    }

    [Theory]
    [InlineData(PeerKind.Qsd, false)]
    [InlineData(PeerKind.Qsd, true)]
    [InlineData(PeerKind.Vblk, true)]
    public async Task Flush_and_discard_behave_as_the_export_says(PeerKind kind, bool unmap)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, DiskSize);
        using var peer = BlkPeer.ExportFile(kind, dir, image, unmap: unmap);
        var s = Open(peer);
        try
        {
            var f = s.Driver.Features;
            Assert.True(VirtioFeatures.Has(f, BlkFeatures.Flush), "both back-ends offer FLUSH for a writable raw file");
            Assert.True(VirtioFeatures.Has(f, BlkFeatures.Discard), "both back-ends offer DISCARD for a writable raw file");
            Assert.False(s.Driver.ReadOnly);

            var data = new byte[2 << 20];
            new Random(5).NextBytes(data);
            await s.Driver.WriteAsync(4 << 20, data);
            await s.Driver.FlushAsync();
            var before = QemuTools.AllocatedBlocks(image);

            await s.Driver.DiscardAsync(4 << 20, 1 << 20);
            await s.Driver.FlushAsync();
            var after = QemuTools.AllocatedBlocks(image);
            var back = new byte[1 << 20];
            await s.Driver.ReadAsync(4 << 20, back);
            if (unmap)
            {
                // discard=unmap (ours always): the range is deallocated and reads as zeroes.
                Assert.True(after <= before - 2048, $"discard freed {before - after} blocks of 2048");
                Assert.All(back, b => Assert.Equal(0, b));
            }
            else
            {
                // qemu's default discard=ignore: the request succeeds and nothing changes.
                Assert.Equal(before, after);
                Assert.Equal(data.AsSpan(0, 1 << 20).ToArray(), back);
            }

            // WRITE_ZEROES always zeroes, unmapping or not.
            Assert.True(VirtioFeatures.Has(f, BlkFeatures.WriteZeroes));
            await s.Driver.WriteZeroesAsync(5 << 20, 512 * 1024);
            back = new byte[512 * 1024];
            await s.Driver.ReadAsync(5 << 20, back);
            Assert.All(back, b => Assert.Equal(0, b));
        }
        finally
        {
            Close(s);
        }
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task A_read_only_export_refuses_every_change_and_still_reads_and_flushes(PeerKind kind)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        File.WriteAllBytes(image, Filled((int)(4 << 20), 0x77));
        using var peer = BlkPeer.ExportFile(kind, dir, image, writable: false);
        var s = Open(peer);
        try
        {
            Assert.True(s.Driver.ReadOnly, "VIRTIO_BLK_F_RO is offered and negotiated");
            var back = new byte[8192];
            await s.Driver.ReadAsync(4096, back);
            Assert.All(back, b => Assert.Equal(0x77, b));
            await Assert.ThrowsAsync<BlkException>(() => s.Driver.WriteAsync(0, new byte[4096]).AsTask());
            await Assert.ThrowsAsync<BlkException>(() => s.Driver.DiscardAsync(0, 4096).AsTask());
            await Assert.ThrowsAsync<BlkException>(() => s.Driver.WriteZeroesAsync(0, 4096).AsTask());
            if (VirtioFeatures.Has(s.Driver.Features, BlkFeatures.Flush))
                await s.Driver.FlushAsync();
            else
                await Assert.ThrowsAsync<BlkException>(() => s.Driver.FlushAsync().AsTask());
        }
        finally
        {
            Close(s);
        }
        Assert.All(File.ReadAllBytes(image), b => Assert.Equal(0x77, b));
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task Stopping_drains_in_flight_requests_and_a_second_front_end_can_connect(PeerKind kind)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, DiskSize);
        using var peer = BlkPeer.ExportFile(kind, dir, image);
        var s = Open(peer, queueSize: 64);
        var data = Filled(64 * 1024, 0x3c);
        var inFlight = new List<Task>();
        for (var i = 0; i < 48; i++)
            inFlight.Add(s.Driver.WriteAsync((ulong)i * 65536, data).AsTask());
        // Stop at once: the transport waits for the back-end to return every request before GET_VRING_BASE.
        Close(s);
        foreach (var t in inFlight)
        {
            var done = await Task.WhenAny(t, Task.Delay(10_000));
            Assert.Same(t, done);
        }
        var completed = inFlight.Count(t => t.IsCompletedSuccessfully);
        Assert.Equal(inFlight.Count, completed);

        s = Open(peer);
        try
        {
            var back = new byte[data.Length];
            await s.Driver.ReadAsync(47 * 65536, back);
            Assert.Equal(data, back);
        }
        finally
        {
            Close(s);
        }
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task Two_queues_carry_requests_side_by_side(PeerKind kind)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, DiskSize);
        using var peer = BlkPeer.ExportFile(kind, dir, image, numQueues: 2);
        var s = Open(peer, queues: 2);
        try
        {
            Assert.Equal(2, s.Driver.QueueCount);
            Assert.Equal(2, s.Driver.Config.NumQueues);
            if (s.Transport.BackendQueueCount is { } n)
                Assert.True(n >= 2, $"GET_QUEUE_NUM says {n}");
            // Requests from many threads land on both queues (the driver picks by CPU).
            var tasks = Enumerable.Range(0, 256).Select(i => Task.Run(async () =>
            {
                var data = new byte[4096];
                new Random(i).NextBytes(data);
                await s.Driver.WriteAsync((ulong)i * 8192, data);
                var back = new byte[4096];
                await s.Driver.ReadAsync((ulong)i * 8192, back);
                Assert.Equal(data, back);
            })).ToArray();
            await Task.WhenAll(tasks);
        }
        finally
        {
            Close(s);
        }
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task Ring_indices_wrap_past_65536_requests(PeerKind kind)
    {
        using var dir = new TempDir();
        using var peer = BlkPeer.ExportNull(kind, dir, 64 << 20);
        var s = Open(peer, queueSize: 16);
        try
        {
            // 70,000 requests through a 16-entry ring: the 16-bit avail and used indices wrap once.
            var buffer = s.Transport.Allocator.Allocate(4096 * 8, 4096);
            var workers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
            {
                for (var i = 0; i < 70_000 / 8; i++)
                {
                    var status = await s.Driver.SubmitDirectAsync(BlkRequestType.In, (ulong)((i * 8 + w) % 16384) * 8, buffer + (ulong)w * 4096, 4096);
                    Assert.Equal(BlkStatus.Ok, status);
                }
            })).ToArray();
            await Task.WhenAll(workers);
            Assert.Null(s.Driver.Failure);
        }
        finally
        {
            Close(s);
        }
    }

    [Theory]
    [MemberData(nameof(Peers))]
    public async Task A_data_buffer_ending_at_the_last_byte_of_shared_memory_works(PeerKind kind)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, DiskSize);
        using var peer = BlkPeer.ExportFile(kind, dir, image);
        var s = Open(peer);
        try
        {
            var memory = s.Transport.Memory;
            var end = s.Transport.MemorySize;
            var remaining = s.Transport.Allocator.Remaining;
            Assert.True(remaining >= 8192);
            var address = s.Transport.Allocator.Allocate(remaining, 4096);
            Assert.Equal(end, address + remaining);
            var last = end - 8192; // the final 8 KiB of the memfd
            var data = new byte[8192];
            new Random(9).NextBytes(data);
            data.CopyTo(memory.GetSpan(last, 8192));
            Assert.Equal(BlkStatus.Ok, await s.Driver.SubmitDirectAsync(BlkRequestType.Out, 100, last, 8192));
            memory.GetSpan(last, 8192).Clear();
            Assert.Equal(BlkStatus.Ok, await s.Driver.SubmitDirectAsync(BlkRequestType.In, 100, last, 8192));
            Assert.Equal(data, memory.GetSpan(last, 8192).ToArray());
        }
        finally
        {
            Close(s);
        }
    }

    private static byte[] Filled(int length, byte value)
    {
        var b = new byte[length];
        Array.Fill(b, value);
        return b;
    }

    private static void AssertSame(byte[] expected, byte[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var at = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(at == expected.Length, $"{what}: first difference at byte {at} (0x{at:x}): expected 0x{(at < expected.Length ? expected[at] : 0):x2}, got 0x{(at < actual.Length ? actual[at] : 0):x2}");
    }
}
