using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD (vhost-user.rst, "Inflight I/O tracking", split rings):
/// the record is read here through the document's layout, byte by byte, not through our type.
/// QueueRegionSplit { u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx; DescStateSplit desc[]; }
/// DescStateSplit { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
/// </summary>
public class InflightTests
{
    private const ushort QueueSize = 16;
    private const int RegionSize = 16 + 16 * QueueSize + 48; // rounded up to 64 bytes

    /// <summary>The test's view of one queue region.</summary>
    private sealed class Record(Mapping map)
    {
        private Span<byte> B => map.AsSpan();
        public ulong Features => BinaryPrimitives.ReadUInt64LittleEndian(B);
        public ushort Version { get => BinaryPrimitives.ReadUInt16LittleEndian(B[8..]); set => BinaryPrimitives.WriteUInt16LittleEndian(B[8..], value); }
        public ushort DescNum { get => BinaryPrimitives.ReadUInt16LittleEndian(B[10..]); set => BinaryPrimitives.WriteUInt16LittleEndian(B[10..], value); }
        public ushort LastBatchHead { get => BinaryPrimitives.ReadUInt16LittleEndian(B[12..]); set => BinaryPrimitives.WriteUInt16LittleEndian(B[12..], value); }
        public ushort UsedIdx { get => BinaryPrimitives.ReadUInt16LittleEndian(B[14..]); set => BinaryPrimitives.WriteUInt16LittleEndian(B[14..], value); }
        public byte Inflight(int i) => B[16 + 16 * i];
        public void SetInflight(int i, byte v) => B[16 + 16 * i] = v;
        public ushort Next(int i) => BinaryPrimitives.ReadUInt16LittleEndian(B[(16 + 16 * i + 6)..]);
        public void SetNext(int i, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(B[(16 + 16 * i + 6)..], v);
        public ulong Counter(int i) => BinaryPrimitives.ReadUInt64LittleEndian(B[(16 + 16 * i + 8)..]);
        public void SetCounter(int i, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(B[(16 + 16 * i + 8)..], v);
    }

    /// <summary>A write of 512 bytes of <paramref name="fill"/> to <paramref name="sector"/>, made available (not kicked); its head and status address.</summary>
    private static (ushort Head, ulong Status) AddWrite(TestFrontEnd fe, TestQueue q, ulong sector, byte fill)
    {
        var header = fe.Allocator.Allocate(16);
        var data = fe.Allocator.Allocate(512);
        var status = fe.Allocator.Allocate(16);
        new BlkRequestHeader((uint)BlkRequestType.Out, 0, sector).Write(fe.Memory.GetSpan(header, 16));
        fe.Memory.GetSpan(data, 512).Fill(fill);
        fe.Memory.GetSpan(status, 1)[0] = 0xff;
        Assert.True(q.Driver.TryAdd([new(header, 16, false), new(data, 512, false), new(status, 1, true)], out var head));
        return (head, status);
    }

    private static List<ushort> TakeUsed(TestQueue q, int count)
    {
        var heads = new List<ushort>();
        var deadline = Environment.TickCount64 + TestFrontEnd.Timeout;
        while (heads.Count < count)
        {
            while (q.Driver.TryTakeUsed(out var head, out _, out var error))
            {
                Assert.Equal(UsedError.None, error);
                heads.Add(head);
            }
            if (heads.Count >= count)
                break;
            Assert.True(Environment.TickCount64 < deadline, $"only {heads.Count} of {count} requests came back");
            if (q.Call.Wait(50))
                q.Call.TryRead(out _);
        }
        return heads;
    }

    private static byte SectorByte(TestServer server, ulong sector) => ((MemoryBackend)server.Backend).Contents(sector * 512, 1)[0];

    [Fact]
    public void TheRecordFollowsEachRequestFromTakeToUsedInTheDocumentsLayout()
    {
        using var server = new TestServer(numQueues: 1, holdCompletionsMs: 400);
        using var fe = server.Connect();
        fe.Negotiate();
        Assert.True(VhostUserFeatures.Has(fe.ProtocolFeatures, VhostUserFeatures.InflightShmfd));
        var (fd, d) = fe.GetInflightFd(1, QueueSize);
        using var _ = fd;
        Assert.Equal((ulong)RegionSize, d.MmapSize);
        Assert.Equal((1, QueueSize), (d.NumQueues, d.QueueSize));
        Assert.True(MemFd.IsSizeSealed(fd));
        fe.SetInflightFd(fd, d);
        using var map = Mapping.Map(fd, 0, d.MmapSize);
        var record = new Record(map);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: QueueSize);
        Assert.Equal((ushort)1, record.Version); // initialised when the ring started
        Assert.Equal(QueueSize, record.DescNum);
        Assert.Equal(0UL, record.Features);

        var a = AddWrite(fe, q, 0, 0xa1);
        var b = AddWrite(fe, q, 8, 0xb2);
        q.Driver.Publish();
        q.Kick.Signal();
        // Taken, done, held back from the used ring: in flight, counters in the order taken.
        TestServer.Eventually(() => record.Inflight(a.Head) == 1 && record.Inflight(b.Head) == 1, "both requests recorded in flight");
        Assert.True(record.Counter(a.Head) < record.Counter(b.Head));
        Assert.Equal((ushort)0, record.UsedIdx);

        // Returned newest first: b, then a. Each one: next = last_batch_head, last_batch_head = i, used idx, inflight = 0, used_idx.
        Assert.Equal([b.Head, a.Head], TakeUsed(q, 2));
        TestServer.Eventually(() => record.UsedIdx == 2, "used_idx follows the ring");
        Assert.Equal(0, record.Inflight(a.Head));
        Assert.Equal(0, record.Inflight(b.Head));
        Assert.Equal(a.Head, record.LastBatchHead);
        Assert.Equal(b.Head, record.Next(a.Head));
        Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(a.Status, 1)[0]);
    }

    /// <summary>
    /// The first back-end takes three writes and never returns them (its completions are held,
    /// and it stops answering, as a killed process would). A second back-end gets the same area
    /// and the ring rewound to used idx, as QEMU does after a crash: it does the three again, in
    /// the order they were taken, before anything new.
    /// </summary>
    [Fact]
    public void RequestsInFlightWhenABackEndDiesAreDoneAgainByTheNextOneInTheOrderTaken()
    {
        using var dead = new TestServer(numQueues: 1, holdCompletionsMs: 60_000);
        using var next = new TestServer(numQueues: 1);
        using var fe = dead.Connect();
        fe.Negotiate();
        var (fd, d) = fe.GetInflightFd(1, QueueSize);
        using var _ = fd;
        fe.SetInflightFd(fd, d);
        using var map = Mapping.Map(fd, 0, d.MmapSize);
        var record = new Record(map);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: QueueSize);
        var writes = new[] { AddWrite(fe, q, 0, 1), AddWrite(fe, q, 8, 2), AddWrite(fe, q, 16, 3) };
        q.Driver.Publish();
        q.Kick.Signal();
        TestServer.Eventually(() => writes.All(w => record.Inflight(w.Head) == 1), "three requests in flight");
        // The first back-end goes quiet: its ring disabled, its connection left open (a clean
        // disconnect would return what it holds).
        fe.Do(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 0));
        using var deadChannel = fe.ConnectAgain(next.SocketPath);

        fe.Negotiate();
        fe.SetInflightFd(fd, d);
        fe.SetMemTable();
        fe.ResumeQueue(q, baseIndex: 0); // used idx: QEMU's rewind
        Assert.Equal(writes.Select(w => w.Head), TakeUsed(q, 3));
        next.WaitForLog("queue 0: inflight record: 3 requests in flight when the last back-end stopped");
        Assert.Equal(3, next.Device.Stats.Requests(BlkRequestType.Out));
        Assert.Equal([1, 2, 3], new[] { SectorByte(next, 0), SectorByte(next, 8), SectorByte(next, 16) });
        Assert.All(writes, w => Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(w.Status, 1)[0]));
        Assert.All(writes, w => Assert.Equal(0, record.Inflight(w.Head)));
        Assert.Equal((ushort)3, record.UsedIdx);

        // New requests follow, from avail index 3.
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 24, new byte[512]));
        Assert.Equal(4, next.Device.Stats.Requests(BlkRequestType.Out));
    }

    /// <summary>Three requests taken (B, A, C by counter); C's used element published and the back-end killed before its record caught up.</summary>
    private static (Record Record, TestQueue Queue, ushort A, ushort B, ushort C) CrashedRecord(TestFrontEnd fe, Mapping map)
    {
        var record = new Record(map);
        record.Version = 1;
        record.DescNum = QueueSize;
        var q = TestQueue.Create(fe, 0, QueueSize, eventIdx: true);
        var b = AddWrite(fe, q, 8, 0xb);
        var a = AddWrite(fe, q, 0, 0xa);
        var c = AddWrite(fe, q, 16, 0xc);
        q.Driver.Publish();
        record.SetCounter(b.Head, 3);
        record.SetCounter(a.Head, 5);
        record.SetCounter(c.Head, 7);
        foreach (var h in new[] { a.Head, b.Head, c.Head })
            record.SetInflight(h, 1);
        // C used: next, last_batch_head, then used idx 0 -> 1; killed before inflight = 0 and used_idx.
        record.SetNext(c.Head, 0);
        record.LastBatchHead = c.Head;
        fe.Memory.GetSpan(c.Status, 1)[0] = (byte)BlkStatus.Ok;
        var used = fe.Memory.GetSpan(q.DeviceArea, 4 + 8 * QueueSize);
        BinaryPrimitives.WriteUInt32LittleEndian(used[4..], c.Head);
        BinaryPrimitives.WriteUInt32LittleEndian(used[8..], 1);
        BinaryPrimitives.WriteUInt16LittleEndian(used[2..], 1);
        return (record, q, a.Head, b.Head, c.Head);
    }

    private static (SafeFdHandle Fd, Mapping Map) OwnArea(ulong size = RegionSize, bool seal = true)
    {
        var fd = MemFd.Create("test-inflight", size, sealSize: seal);
        return (fd, Mapping.Map(fd, 0, size));
    }

    [Fact]
    public void AUsedElementPublishedBeforeTheCrashIsNotDoneTwiceAndTheRestFollowTheirCounters()
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate();
        var (fd, map) = OwnArea();
        using var _ = fd;
        using var __ = map;
        var (record, q, a, b, c) = CrashedRecord(fe, map);
        using var ___ = q;
        fe.SetInflightFd(fd, new InflightDescription(RegionSize, 0, 1, QueueSize));
        fe.SetMemTable();
        fe.ResumeQueue(q, baseIndex: 1); // QEMU rewinds to used idx

        Assert.Equal([c, b, a], TakeUsed(q, 3)); // C from before the crash, then B (counter 3), A (5)
        server.WaitForLog("2 requests in flight when the last back-end stopped, 1 already used (last batch repaired)");
        Assert.Equal(2, server.Device.Stats.Requests(BlkRequestType.Out));
        Assert.Equal(0, SectorByte(server, 16)); // C not written again
        Assert.Equal((byte)0xa, SectorByte(server, 0));
        Assert.Equal((byte)0xb, SectorByte(server, 8));
        Assert.Equal((ushort)3, record.UsedIdx);
        Assert.Equal(0, record.Inflight(c));
    }

    public static TheoryData<string, string> BadRecords => new()
    {
        { "version", "version 2" },
        { "desc_num", "desc_num 8" },
        { "flag", "inflight flag 2" },
        { "counter-zero", "counter 0 is zero" },
        { "counter-shared", "shared with another entry" },
        { "batch-head", "the last batch list reaches head 300" },
        { "batch-size", "more than the ring holds" },
        { "beyond-ring", "in flight but the ring has only 8 heads" },
    };

    /// <summary>A record that cannot be trusted is ignored with one line; nothing from it is replayed and the ring serves on.</summary>
    [Theory]
    [MemberData(nameof(BadRecords))]
    public void ARecordThatCannotBeTrustedIsIgnoredAndTheRingServesOn(string damage, string logged)
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate();
        var (fd, map) = OwnArea();
        using var _ = fd;
        using var __ = map;
        var (record, q, a, b, c) = CrashedRecord(fe, map);
        using var ___ = q;
        int ringSize = QueueSize; // "beyond-ring": a smaller ring over the same memory
        switch (damage)
        {
            case "version": record.Version = 2; break;
            case "desc_num": record.DescNum = 8; break;
            case "flag": record.SetInflight(a, 2); break;
            case "counter-zero": record.SetCounter(a, 0); break;
            case "counter-shared": record.SetCounter(a, 3); break;
            case "batch-head": record.LastBatchHead = 300; break;
            case "batch-size": record.UsedIdx = 100; break;
            case "beyond-ring": ringSize = 8; record.SetInflight(12, 1); record.SetCounter(12, 9); break;
        }
        fe.SetInflightFd(fd, new InflightDescription(RegionSize, 0, 1, QueueSize));
        fe.SetMemTable();
        fe.ResumeQueue(q, baseIndex: 3, ringSize: ringSize); // the front-end's word: all three taken
        server.WaitForLog("queue 0: inflight record ignored, nothing replayed");
        Assert.Contains(server.Log.Lines, l => l.Message.Contains(logged, StringComparison.Ordinal));
        Assert.Equal(0, server.Device.Stats.Requests(BlkRequestType.Out));
        Assert.Equal([c], TakeUsed(q, 1));
        if (ringSize != QueueSize)
            return; // the driver's next free chain lies beyond the smaller ring
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 40, new byte[512]));
        Assert.Equal(1, server.Device.Stats.Requests(BlkRequestType.Out));
    }

    public static TheoryData<string, string> BadAreas => new()
    {
        { "too-small", "need 320" },
        { "not-sealed", "not sealed against shrinking" },
        { "too-many-queues", "3 queues; the device has 1" },
        { "bad-queue-size", "queue size 12 is not a power of two" },
        { "past-the-file", "less than offset 4096" },
    };

    [Theory]
    [MemberData(nameof(BadAreas))]
    public void AnAreaThatCannotHoldWhatItClaimsIsRefusedAndTheSessionCarriesOn(string damage, string logged)
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate();
        var (fd, map) = OwnArea(seal: damage != "not-sealed");
        using var _ = fd;
        using var __ = map;
        var d = damage switch
        {
            "too-small" => new InflightDescription(100, 0, 1, QueueSize),
            "too-many-queues" => new InflightDescription(RegionSize * 3, 0, 3, QueueSize),
            "bad-queue-size" => new InflightDescription(RegionSize, 0, 1, 12),
            "past-the-file" => new InflightDescription(RegionSize, 4096, 1, QueueSize),
            _ => new InflightDescription(RegionSize, 0, 1, QueueSize),
        };
        fe.SetInflightFd(fd, d); // acknowledged: failing it would stop QEMU starting the device
        server.WaitForLog("inflight area refused, requests will not be replayed");
        Assert.Contains(server.Log.Lines, l => l.Message.Contains(logged, StringComparison.Ordinal));
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: QueueSize);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, new byte[512]));
    }
}

/// <summary>Runs alone: it counts the descriptors and mappings of the whole process.</summary>
[Collection(nameof(AllocationTests))]
public class InflightLeakTests
{
    private const ushort QueueSize = 16;

    private static int OpenFds() => Directory.GetFiles("/proc/self/fd").Length;
    // The runtime's JIT maps its code heap twice (W^X) through a memfd named "doublemapper", and
    // grows it while tiered compilation recompiles hot methods: that is the runtime's code, not a
    // connection's memory, and it is left out of the count (guest regions, inflight areas and
    // io_uring rings stay in it).
    private static int Mappings() => File.ReadAllLines("/proc/self/maps").Count(l => !l.Contains("memfd:doublemapper", StringComparison.Ordinal));

    /// <summary>A thousand connections, each with an inflight area, a ring and a request: no descriptor or mapping left behind.</summary>
    [Fact]
    public void AThousandReconnectsLeaveNoDescriptorOrMappingBehind()
    {
        using var server = new TestServer(numQueues: 1);
        void OneConnection(int i)
        {
            using var fe = server.Connect();
            fe.Negotiate();
            var (fd, d) = fe.GetInflightFd(1, QueueSize);
            using (fd)
                fe.SetInflightFd(fd, d);
            fe.SetMemTable();
            var q = fe.SetupQueue(0, size: QueueSize);
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, (ulong)(i % 64), new byte[512]));
            fe.Disconnect();
            TestServer.Eventually(() => server.Server.SessionsEnded == i + 1, "the connection to end");
        }
        for (var i = 0; i < 20; i++) // warm up: thread pool, JIT, runtime caches
            OneConnection(i);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var (fds, maps) = (OpenFds(), Mappings());
        for (var i = 20; i < 1020; i++)
            OneConnection(i);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var (fdsAfter, mapsAfter) = (OpenFds(), Mappings());
        Assert.Equal(fds, fdsAfter);
        // The runtime itself may map or unmap a few areas (thread stacks, heap growth); a leak
        // per connection would show as a thousand or more.
        Assert.True(mapsAfter - maps < 50, $"{maps} mappings before, {mapsAfter} after 1000 connections");
    }
}
