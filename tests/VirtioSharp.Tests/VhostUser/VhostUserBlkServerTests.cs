using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

public class VhostUserBlkServerTests
{
    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void WriteThenReadRoundTripsThroughTheBackend()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0);

        var data = Pattern(8192, 1);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 16, data));
        Assert.Equal(data, ((MemoryBackend)server.Backend).Contents(16 * 512, data.Length).ToArray());

        var back = new byte[data.Length];
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.In, 16, back));
        Assert.Equal(data, back);
        Assert.Contains(server.Log.Lines, l => l.Message.StartsWith("features agreed:", StringComparison.Ordinal));
        Assert.Contains(server.Log.Lines, l => l.Message.Contains("queue 0: started", StringComparison.Ordinal));
    }

    [Fact]
    public void EveryQueueHasItsOwnWorkerAndCallDescriptor()
    {
        using var server = new TestServer(numQueues: 2);
        using var fe = server.Connect();
        fe.Negotiate();
        Assert.Equal(2UL, fe.GetU64(VhostUserRequest.GetQueueNum));
        fe.SetMemTable();
        var q0 = fe.SetupQueue(0);
        var q1 = fe.SetupQueue(1, size: 32, eventIdx: false);
        for (var i = 0; i < 50; i++)
        {
            var a = Pattern(512, i);
            var b = Pattern(1024, 1000 + i);
            Assert.Equal(BlkStatus.Ok, q0.Request(BlkRequestType.Out, (ulong)i, a));
            Assert.Equal(BlkStatus.Ok, q1.Request(BlkRequestType.Out, 1000 + (ulong)i * 2, b));
        }
        var check = new byte[1024];
        Assert.Equal(BlkStatus.Ok, q0.Request(BlkRequestType.In, 1000 + 49 * 2, check));
        Assert.Equal(Pattern(1024, 1049), check);
    }

    [Fact]
    public void ConfigSpaceAndGetIdComeFromTheDevice()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        var request = new byte[ConfigSpaceHeader.Length + BlkLayout.ConfigSize];
        new ConfigSpaceHeader(0, BlkLayout.ConfigSize, 0).Write(request);
        fe.Send(VhostUserRequest.GetConfig, request);
        var reply = fe.Receive()!.Value;
        Assert.Equal(request.Length, reply.Payload.Length);
        var config = BlkConfig.Parse(reply.Payload.AsSpan(ConfigSpaceHeader.Length));
        Assert.Equal(TestServer.DiskSize / 512, config.Capacity);
        Assert.Equal((ushort)2, config.NumQueues);

        fe.SetMemTable();
        var q = fe.SetupQueue(0);
        var id = new byte[20];
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.GetId, 0, id));
        Assert.StartsWith("virtiosharp", System.Text.Encoding.ASCII.GetString(id), StringComparison.Ordinal);
    }

    [Fact]
    public void RingsStayDisabledUntilSetVringEnableWhenProtocolFeaturesAreAgreed()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0, enable: false);
        new BlkRequestHeader((uint)BlkRequestType.Flush, 0, 0).Write(fe.Memory.GetSpan(q.Header, 16));
        Assert.True(q.Driver.TryAdd([new(q.Header, 16, false), new(q.Status, 1, true)], out var head));
        q.Driver.Publish();
        q.Kick.Signal();
        Thread.Sleep(100);
        Assert.False(q.Driver.TryTakeUsed(out _, out _, out _)); // disabled: not processed

        fe.Do(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 1));
        Assert.Equal(1u, q.WaitUsed(head));
        Assert.Equal(1, server.Device.Stats.Requests(BlkRequestType.Flush));
    }

    [Fact]
    public void GetVringBaseStopsTheRingAndRestartKeepsTheIndices()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: 16);
        for (var i = 0; i < 40; i++) // wraps a 16-entry ring
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, (ulong)i, Pattern(512, i)));
        fe.Do(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 0));
        Assert.Equal((ushort)40, fe.GetVringBase(0));
        server.WaitForLog("queue 0: stopped at available index 40");

        // Restart as QEMU does: base, addresses, a new kick, enable.
        fe.Do(VhostUserRequest.SetVringBase, TestFrontEnd.State(0, 40));
        fe.SendAddr(q);
        fe.Do(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0), q.Kick.Handle);
        fe.Do(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 1));
        var back = new byte[512];
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.In, 39, back));
        Assert.Equal(Pattern(512, 39), back);
    }

    [Fact]
    public void A_packed_ring_stops_and_resumes_where_it_stood_with_both_wrap_counters()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate(packed: true);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: 7, packed: true); // 2.8.10.1: not a power of two
        server.WaitForLog("queue 0: started: packed ring, size 7, avail slot 0 wrap 1, used slot 0 wrap 1");
        // 41 requests of 3 slots: 123 slots, 17 laps of 7 and 4 more: both counters flipped 17 times.
        for (var i = 0; i < 41; i++)
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, (ulong)i, Pattern(512, i)));
        fe.Do(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 0));
        // vhost-user.rst: bits 0-14 the next avail slot, 15 its wrap counter; 16-30 and 31 the same for used.
        Assert.Equal(0x0004_0004u, fe.GetVringBaseValue(0));
        server.WaitForLog("queue 0: stopped at avail slot 4 wrap 0, used slot 4 wrap 0");

        // A new memory table, then a restart as QEMU does it: base, addresses, a new kick, enable.
        fe.SetMemTable();
        fe.Do(VhostUserRequest.SetVringBase, TestFrontEnd.State(0, 0x0004_0004));
        fe.SendAddr(q);
        fe.Do(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0), q.Kick.Handle);
        fe.Do(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 1));
        var back = new byte[512];
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.In, (ulong)(i * 2), back));
            Assert.Equal(Pattern(512, i * 2), back);
        }
        Assert.True(server.Device.Breaches.Total == 0, string.Join("\n", server.Log.Lines.Select(l => l.Message)));
    }

    [Fact]
    public void NewMemoryTableWhileRunningKeepsTheQueueGoing()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 1, Pattern(4096, 7)));

        // The same RAM again, while the ring runs (QEMU does this on every start and on hot-plug).
        fe.SetMemTable();
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 200, Pattern(4096, 8)));

        // Hot-plug: a second region from another memfd; put the data buffer there.
        using var extra = MemFd.Create("hotplug", 1 << 20);
        using var extraMap = Mapping.Map(extra, 0, 1 << 20);
        var region = new MemoryRegionDescription(0x8000_0000, 1 << 20, (ulong)extraMap.Address, 0);
        fe.Do(VhostUserRequest.AddMemReg, TestFrontEnd.SingleRegion(region), extra);
        server.WaitForLog("memory region added");

        var memory = fe.Memory;
        new BlkRequestHeader((uint)BlkRequestType.In, 0, 1).Write(memory.GetSpan(q.Header, 16));
        Assert.True(q.Driver.TryAdd([new(q.Header, 16, false), new(0x8000_0000 + 4096, 4096, true), new(q.Status, 1, true)], out var head));
        if (q.Driver.Publish())
            q.Kick.Signal();
        Assert.Equal(4097u, q.WaitUsed(head));
        Assert.Equal(Pattern(4096, 7), extraMap.AsSpan().Slice(4096, 4096).ToArray());

        fe.Do(VhostUserRequest.RemMemReg, TestFrontEnd.SingleRegion(region));
        server.WaitForLog("memory region removed");
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 300, Pattern(512, 9)));
    }

    [Fact]
    public void AMemoryFileThatCanShrinkIsNamedOncePerConnection()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable(); // sealed RAM, as QEMU's memory-backend-memfd
        var q = fe.SetupQueue(0);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, Pattern(512, 1)));
        Assert.DoesNotContain(server.Log.Lines, l => l.Message.Contains("F_SEAL_SHRINK", StringComparison.Ordinal));

        using var unsealed = MemFd.Create("unsealed", 1 << 20);
        Assert.False(MemFd.IsSizeSealed(unsealed));
        Assert.True(MemFd.IsSizeSealed(fe.Ram));
        using var map = Mapping.Map(unsealed, 0, 1 << 20);
        var region = new MemoryRegionDescription(0x8000_0000, 1 << 20, (ulong)map.Address, 0);
        fe.Do(VhostUserRequest.AddMemReg, TestFrontEnd.SingleRegion(region), unsealed);
        fe.Do(VhostUserRequest.RemMemReg, TestFrontEnd.SingleRegion(region));
        fe.Do(VhostUserRequest.AddMemReg, TestFrontEnd.SingleRegion(region), unsealed);

        var warnings = server.Log.Lines.Where(l => l.Level == LogLevel.Warning && l.Message.Contains("F_SEAL_SHRINK", StringComparison.Ordinal)).ToList();
        var warning = Assert.Single(warnings);
        Assert.Contains("0x80000000", warning.Message, StringComparison.Ordinal);
        Assert.Contains("SIGBUS", warning.Message, StringComparison.Ordinal);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.In, 0, new byte[512])); // still serving
    }

    [Fact]
    public void ASealedMemfdRefusesToChangeSize()
    {
        using var fd = MemFd.Create("sealed", 1 << 16, sealSize: true);
        Assert.True(MemFd.IsSizeSealed(fd));
        Assert.NotEqual(0, Interop.FTruncate(fd, 4096));
        Assert.Equal(1, Marshal.GetLastPInvokeError()); // EPERM
        Assert.NotEqual(0, Interop.FTruncate(fd, 1 << 20));

        using var plain = MemFd.Create("plain", 1 << 16);
        Assert.False(MemFd.IsSizeSealed(plain));
        Assert.Equal(0, Interop.FTruncate(plain, 4096));
    }

    [Fact]
    public void DriverWithoutVersion1IsServedWithAWarning()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate(version1: false);
        fe.SetMemTable();
        var q = fe.SetupQueue(0);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, Pattern(512, 3)));
        var warnings = server.Log.Lines.Where(l => l.Level == LogLevel.Warning && l.Message.Contains("VIRTIO_F_VERSION_1 (feature bit 32)", StringComparison.Ordinal)).ToList();
        Assert.Single(warnings);
    }

    [Fact]
    public void RingsStartEnabledWithoutProtocolFeatures()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate(protocolFeatures: false);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, enable: false);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, Pattern(512, 4)));
    }

    [Fact]
    public void FrontEndCanReconnectAndFindItsData()
    {
        using var server = new TestServer();
        var data = Pattern(4096, 11);
        using (var fe = server.Connect())
        {
            fe.Negotiate();
            fe.SetMemTable();
            Assert.Equal(BlkStatus.Ok, fe.SetupQueue(0).Request(BlkRequestType.Out, 100, data));
        }
        TestServer.Eventually(() => server.Server.SessionsEnded == 1, "the first connection to end");
        server.WaitForLog("front-end disconnected");
        server.WaitForLog("flushed memory");

        using var again = server.Connect();
        again.Negotiate();
        again.SetMemTable();
        var back = new byte[4096];
        Assert.Equal(BlkStatus.Ok, again.SetupQueue(0).Request(BlkRequestType.In, 100, back));
        Assert.Equal(data, back);
        Assert.Equal(2, server.Server.Connections);
    }

    [Fact]
    public void A_front_end_that_reconnects_at_once_is_served_not_refused()
    {
        using var server = new TestServer();
        for (var k = 0; k < 50; k++)
        {
            using var fe = server.Connect(); // the previous connection's thread may still be ending
            Assert.NotEqual(0UL, fe.Negotiate());
        }
        Assert.Equal(0, server.Server.Refused);
        Assert.Equal(50, server.Server.Connections);
    }

    [Fact]
    public void SecondSimultaneousFrontEndIsRefused()
    {
        using var server = new TestServer();
        using var first = server.Connect();
        first.Negotiate();
        using var second = server.Connect();
        Assert.True(second.WaitClosed());
        server.WaitForLog("refused a second front-end");
        Assert.Equal(1, server.Server.Refused);

        first.SetMemTable();
        Assert.Equal(BlkStatus.Ok, first.SetupQueue(0).Request(BlkRequestType.Out, 0, Pattern(512, 5)));
    }

    [Fact]
    public void CorruptRingStopsTheQueueAndSignalsTheErrorDescriptor()
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: 16);
        using var err = EventFd.Create();
        fe.Do(VhostUserRequest.SetVringErr, TestFrontEnd.U64(0), err.Handle);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, Pattern(512, 6)));

        // avail idx jumps more than the queue size ahead (2.7.13.3).
        var availIdx = fe.Memory.GetSpan(q.DriverArea + 2, 2);
        BinaryPrimitives.WriteUInt16LittleEndian(availIdx, (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(availIdx) + 100));
        q.Kick.Signal();
        Assert.True(err.Wait(TestFrontEnd.Timeout));
        server.WaitForLog("queue 0: stopped, device needs reset");

        // The connection and the server live on.
        Assert.Equal(2UL, fe.GetU64(VhostUserRequest.GetQueueNum));
    }

    [Fact]
    public void StopFlushesTheImageAndRemovesTheSocket()
    {
        var backend = new CountingBackend(new MemoryBackend(TestServer.DiskSize));
        var server = new TestServer(backend: backend);
        using (var fe = server.Connect())
        {
            fe.Negotiate();
            fe.SetMemTable();
            Assert.Equal(BlkStatus.Ok, fe.SetupQueue(0).Request(BlkRequestType.Out, 0, Pattern(512, 1)));
            var before = backend.Flushes;
            server.Server.Stop();
            Assert.True(backend.Flushes > before);
            Assert.True(fe.WaitClosed());
        }
        Assert.False(File.Exists(server.SocketPath));
        server.Dispose();
    }

    [Fact]
    public void StaleSocketFileIsReplacedAndLiveOneRefused()
    {
        using var server = new TestServer();
        var path = server.SocketPath;
        using var other = new VirtioSharp.VhostUser.Backend.VhostUserBlkServer(server.Device, path);
        var e = Assert.Throws<IOException>(other.Start);
        Assert.Contains("in use", e.Message, StringComparison.Ordinal);

        server.Server.Stop();
        // A socket file left behind with nobody listening:
        using (UnixFdSocket.Listen(path)) { }
        Assert.Equal(SocketPathState.Stale, UnixFdSocket.Probe(path));
        using var fresh = new VirtioSharp.VhostUser.Backend.VhostUserBlkServer(server.Device, path, server.Log);
        fresh.Start();
        server.WaitForLog("removed stale socket");
        using var fe = TestFrontEnd.Connect(path);
        fe.Negotiate();
        Assert.Equal(2UL, fe.GetU64(VhostUserRequest.GetQueueNum));
    }

    [Fact]
    public void PathThatIsNotASocketIsNeverReplaced()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vs-{Guid.NewGuid():N}.img"[..24]);
        File.WriteAllBytes(path, [1, 2, 3]);
        try
        {
            using var backend = new MemoryBackend(1 << 20);
            var device = new BlkDevice(backend);
            using var server = new VirtioSharp.VhostUser.Backend.VhostUserBlkServer(device, path);
            var e = Assert.Throws<IOException>(server.Start);
            Assert.Contains("not a socket", e.Message, StringComparison.Ordinal);
            Assert.Equal([1, 2, 3], File.ReadAllBytes(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private sealed class CountingBackend(IBlockBackend inner) : IBlockBackend
    {
        private int _flushes;
        public int Flushes => Volatile.Read(ref _flushes);
        public ulong Capacity => inner.Capacity;
        public uint BlockSize => inner.BlockSize;
        public bool ReadOnly => inner.ReadOnly;
        public bool SupportsDiscard => inner.SupportsDiscard;
        public bool SupportsWriteZeroes => inner.SupportsWriteZeroes;
        public string Description => inner.Description;
        public bool Read(ulong offset, ReadOnlySpan<IoVec> iov) => inner.Read(offset, iov);
        public bool Write(ulong offset, ReadOnlySpan<IoVec> iov) => inner.Write(offset, iov);
        public bool Flush()
        {
            Interlocked.Increment(ref _flushes);
            return inner.Flush();
        }
        public bool Discard(ulong offset, ulong length) => inner.Discard(offset, length);
        public bool WriteZeroes(ulong offset, ulong length, bool mayUnmap) => inner.WriteZeroes(offset, length, mayUnmap);
        public void Dispose() => inner.Dispose();
    }
}
