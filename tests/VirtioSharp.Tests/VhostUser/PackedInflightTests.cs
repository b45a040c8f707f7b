using VirtioSharp.Block;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Protocol;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// In-flight tracking over packed rings, end to end through a vhost-user back-end: the area's
/// size follows the negotiated format, a back-end that dies with lists in flight (some finished
/// out of order, one completion cut short) hands them to the next one through the record, which
/// also tells it where the ring stands when the front-end's base is stale (QEMU cannot ask a
/// dead back-end for a packed ring's position), and a memory-table change resumes in place.
/// </summary>
public class PackedInflightTests
{
    private const ushort QueueSize = 16;
    private const ulong PackedRegionSize = 576; // 32 + 32 * 16, rounded up to 64
    private const uint StaleBase = 0x8000_8000; // what QEMU still holds from the ring's start

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

    private static (SafeFdHandle Fd, Mapping Map) OwnArea(ulong size = PackedRegionSize)
    {
        var fd = MemFd.Create("test-inflight", size, sealSize: true);
        return (fd, Mapping.Map(fd, 0, size));
    }

    /// <summary>
    /// The back-end that dies, played in this process: our packed device half with its record over
    /// the test's ring, taking <paramref name="count"/> writes of three descriptors each.
    /// </summary>
    private static (PackedDeviceQueue Ring, PackedInflightRecord Record, PackedInflightTrackingQueue Tracking, (ushort Head, ulong Status)[] Writes, ushort[] Tokens)
        DyingBackEnd(TestFrontEnd fe, TestQueue q, Mapping area, int count)
    {
        var ring = PackedDeviceQueue.Create(0, QueueSize, fe.Memory, q.DescriptorTable, q.DriverArea, q.DeviceArea, eventIdx: true, indirect: false, out var error)!;
        Assert.Null(error);
        var record = new PackedInflightRecord(area.Address, QueueSize);
        Assert.True(record.TryReconcile(QueueSize, ring.UsedIndex, s => ring.ReadDescriptor(s).Flags, out var plan, out error), error);
        var tracking = new PackedInflightTrackingQueue(ring, record, plan);
        var writes = Enumerable.Range(0, count).Select(i => AddWrite(fe, q, (ulong)i * 8, (byte)(i + 1))).ToArray();
        q.Driver.Publish();
        var tokens = new ushort[count];
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(PopResult.Chain, tracking.TryPop(out var chain));
            tokens[i] = chain.Head;
        }
        return (ring, record, tracking, writes, tokens);
    }

    [Fact]
    public void The_area_is_laid_out_for_the_negotiated_ring_format()
    {
        using var server = new TestServer(numQueues: 1);
        using (var split = server.Connect())
        {
            split.Negotiate();
            var (fd, d) = split.GetInflightFd(1, QueueSize);
            fd.Dispose();
            Assert.Equal(320UL, d.MmapSize); // 16 + 16 * 16, rounded up to 64
        }
        TestServer.Eventually(() => server.Server.SessionsEnded == 1, "the first connection to end"); // one front-end at a time
        using var fe = server.Connect();
        fe.Negotiate(packed: true);
        var (packedFd, pd) = fe.GetInflightFd(1, 7); // 2.8.10.1: a packed queue's size need not be a power of two
        using var _ = packedFd;
        Assert.Equal(256UL, pd.MmapSize); // 32 + 32 * 7, rounded up to 64
        server.WaitForLog("inflight area made: 256 bytes for 1 packed queue of 7");
        fe.SetInflightFd(packedFd, pd);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: 7, packed: true);
        for (var i = 0; i < 12; i++) // 36 slots: five laps of the 7-slot ring
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, (ulong)i, new byte[512]));
        using var map = Mapping.Map(packedFd, 0, pd.MmapSize);
        var region = map.AsSpan();
        Assert.Equal((ushort)1, BitConverter.ToUInt16(region[8..])); // version
        Assert.Equal((ushort)(36 % 7), BitConverter.ToUInt16(region[16..])); // used_idx
        TestServer.Eventually(() => BitConverter.ToUInt16(map.AsSpan()[18..]) == 36 % 7, "old_used_idx to follow"); // written after the used descriptor
        Assert.Equal((byte)0, region[20]); // five laps: the Device Ring Wrap Counter flipped five times from 1
    }

    /// <summary>
    /// Five writes taken; the third and the first finished out of order (their used descriptors
    /// went over the first list's slots), the fourth's completion cut short after its used
    /// descriptor reached the ring, the second and fifth still in flight. The next back-end gets
    /// the area and QEMU's stale base: it resumes where the record says the ring stands, commits
    /// the fourth, and does the second and fifth again from the record's copies, in the order taken.
    /// </summary>
    [Fact]
    public void Lists_in_flight_when_a_back_end_dies_are_done_again_by_the_next_one_from_the_record()
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate(packed: true);
        var (fd, map) = OwnArea();
        using var _ = fd;
        using var __ = map;
        using var q = TestQueue.Create(fe, 0, QueueSize, eventIdx: true, packed: true);
        var (ring, record, tracking, w, tokens) = DyingBackEnd(fe, q, map, 5);
        foreach (var i in new[] { 2, 0 })
        {
            fe.Memory.GetSpan(w[i].Status, 1)[0] = (byte)BlkStatus.Ok;
            tracking.AddUsed(tokens[i], 1);
        }
        // The fourth list's first entry is 9 (three entries a list, taken in order): its entries go
        // back and used_idx moves, its used descriptor is written, and the process dies.
        fe.Memory.GetSpan(w[3].Status, 1)[0] = (byte)BlkStatus.Ok;
        record.BeginUsed(9);
        ring.AddUsed(tokens[3], 1);

        fe.SetInflightFd(fd, new InflightDescription(PackedRegionSize, 0, 1, QueueSize));
        fe.SetMemTable();
        fe.ResumeQueue(q, StaleBase);
        Assert.Equal(new[] { 2, 0, 3, 1, 4 }.Select(i => w[i].Head), TakeUsed(q, 5));
        server.WaitForLog("queue 0: inflight record: 2 requests in flight when the last back-end stopped, 1 already used (its completion committed)");
        server.WaitForLog("the inflight record says avail slot 15 wrap 1, used slot 9 wrap 1");
        Assert.Equal(2, server.Device.Stats.Requests(BlkRequestType.Out));
        Assert.Equal(new byte[] { 0, 2, 0, 0, 5 }, Enumerable.Range(0, 5).Select(i => SectorByte(server, (ulong)i * 8)).ToArray());
        Assert.All(w, x => Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(x.Status, 1)[0]));

        // New requests follow from slot 15, across the ring's end (the counters flip).
        for (var i = 0; i < 12; i++)
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 100 + (ulong)i, new byte[512]));
        Assert.Equal(14, server.Device.Stats.Requests(BlkRequestType.Out));
        Assert.True(server.Device.Breaches.Total == 0, server.Dump());
    }

    public static TheoryData<string, string> BadRecords => new()
    {
        { "counter-shared", "shared with another list in flight" },
        { "used-idx", "used_idx 40 / old_used_idx 0 lies outside the ring of 16" },
        { "free-cycle", "the free list runs in a circle" },
    };

    /// <summary>
    /// A record that cannot be trusted is ignored with one line and nothing is replayed from it;
    /// the ring serves on from the front-end's base (here the lists are still whole in the ring,
    /// so they are read from it again).
    /// </summary>
    [Theory]
    [MemberData(nameof(BadRecords))]
    public void A_packed_record_that_cannot_be_trusted_is_ignored_and_the_ring_serves_on(string damage, string logged)
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate(packed: true);
        var (fd, map) = OwnArea();
        using var _ = fd;
        using var __ = map;
        using var q = TestQueue.Create(fe, 0, QueueSize, eventIdx: true, packed: true);
        var w = DyingBackEnd(fe, q, map, 2).Writes;
        var region = map.AsSpan();
        switch (damage)
        {
            case "counter-shared": BitConverter.TryWriteBytes(region[(32 + 32 * 3 + 8)..], 1UL); break;
            case "used-idx": BitConverter.TryWriteBytes(region[16..], (ushort)40); break;
            case "free-cycle": BitConverter.TryWriteBytes(region[(32 + 32 * 9 + 2)..], (ushort)7); break;
        }
        fe.SetInflightFd(fd, new InflightDescription(PackedRegionSize, 0, 1, QueueSize));
        fe.SetMemTable();
        fe.ResumeQueue(q, StaleBase);
        server.WaitForLog("queue 0: inflight record ignored, nothing replayed");
        Assert.Single(server.Log.Lines, l => l.Message.Contains("inflight record ignored", StringComparison.Ordinal));
        Assert.Contains(server.Log.Lines, l => l.Message.Contains(logged, StringComparison.Ordinal));
        Assert.Equal(w.Select(x => x.Head), TakeUsed(q, 2));
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 40, new byte[512]));
        Assert.Equal(3, server.Device.Stats.Requests(BlkRequestType.Out));
    }

    [Fact]
    public void A_split_rings_area_handed_to_a_packed_session_is_refused_and_the_session_carries_on()
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate(packed: true);
        var (fd, map) = OwnArea(320);
        using var _ = fd;
        using var __ = map;
        fe.SetInflightFd(fd, new InflightDescription(320, 0, 1, QueueSize));
        server.WaitForLog("inflight area refused, requests will not be replayed: the area is 320 bytes; 1 packed queues of 16 need 576");
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: QueueSize, packed: true);
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, new byte[512]));
    }

    /// <summary>
    /// Issue 11: a memory-table change resumes a packed ring where it stood. Two writes are taken
    /// and held when the new table arrives; the ring stops (returning them), and starts again over
    /// the new table at both positions, its record agreeing; then more laps of the 7-slot ring.
    /// </summary>
    [Fact]
    public void A_memory_table_change_with_lists_in_flight_resumes_the_packed_ring_where_it_stood()
    {
        using var server = new TestServer(numQueues: 1, holdCompletionsMs: 250);
        using var fe = server.Connect();
        fe.Negotiate(packed: true);
        var (fd, d) = fe.GetInflightFd(1, 7);
        using var _ = fd;
        fe.SetInflightFd(fd, d);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: 7, packed: true);
        var a = AddWrite(fe, q, 0, 0xa);
        var b = AddWrite(fe, q, 8, 0xb);
        q.Driver.Publish();
        q.Kick.Signal();
        TestServer.Eventually(() => server.Device.Stats.Requests(BlkRequestType.Out) == 2, "both writes taken");
        fe.SetMemTable(); // while both are held
        Assert.Equal([b.Head, a.Head], TakeUsed(q, 2)); // returned newest first by the holding queue
        var data = new byte[512];
        for (var i = 0; i < 5; i++) // 30 slots: four more laps
        {
            data.AsSpan().Fill((byte)i);
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 16 + (ulong)i, data));
            var back = new byte[512];
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.In, 16 + (ulong)i, back));
            Assert.Equal(data, back);
        }
        Assert.DoesNotContain(server.Log.Lines, l => l.Message.Contains("inflight record ignored", StringComparison.Ordinal));
        Assert.True(server.Device.Breaches.Total == 0, server.Dump());
    }
}
