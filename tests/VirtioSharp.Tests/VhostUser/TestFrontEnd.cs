using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A vhost-user front-end for tests, speaking the raw protocol: guest RAM is a memfd this
/// process maps (its mapping address is the "user address" the back-end must translate
/// through), rings are laid out by hand with <see cref="SplitDriverQueue"/>, kicks and calls
/// are eventfds.
/// </summary>
internal sealed class TestFrontEnd : IDisposable
{
    public const ulong GuestBase = 0x4000_0000;
    public const ulong RamSize = 4 << 20;
    /// <summary>
    /// Milliseconds to wait for what must happen (a reply, a call, a condition): long, since only a
    /// failing test waits it out, and a loaded two-core runner can hold a thread back for seconds.
    /// </summary>
    public const int Timeout = 30_000;

    private readonly List<TestQueue> _queues = [];

    private TestFrontEnd(UnixFdSocket socket)
    {
        Channel = new VhostUserChannel(socket);
        Ram = MemFd.Create("test-guest-ram", RamSize, sealSize: true); // sealed, as QEMU seals its memfd RAM
        RamMapping = Mapping.Map(Ram, 0, RamSize);
        Memory = new GuestMemory(new GuestRegion(GuestBase, RamSize, RamMapping.Address, UserBase));
        Allocator = new GuestAllocator(Memory, GuestBase, RamSize);
    }

    public VhostUserChannel Channel { get; private set; }
    public SafeFdHandle Ram { get; }
    public Mapping RamMapping { get; }
    /// <summary>This process's address of guest RAM: the front-end virtual address vhost-user calls "user address".</summary>
    public ulong UserBase => (ulong)RamMapping.Address;
    public GuestMemory Memory { get; }
    public GuestAllocator Allocator { get; }
    public MemoryRegionDescription Region => new(GuestBase, RamSize, UserBase, 0);
    public ulong ProtocolFeatures { get; private set; }

    public ulong ToUser(ulong guest) => guest - GuestBase + UserBase;

    public static TestFrontEnd Connect(string path) => new(UnixFdSocket.Connect(path));

    /// <summary>
    /// Drops the connection, keeping guest RAM and the rings in it, as QEMU does when its
    /// back-end goes away (reconnect=on); <see cref="ConnectAgain"/> opens the next one.
    /// </summary>
    public void Disconnect() => Channel.Dispose();

    /// <summary>Talks to <paramref name="path"/> from now on; returns the previous channel (the caller disposes it, maybe later).</summary>
    public VhostUserChannel ConnectAgain(string path)
    {
        var old = Channel;
        Channel = new VhostUserChannel(UnixFdSocket.Connect(path));
        ProtocolFeatures = 0;
        return old;
    }

    /// <summary>GET_INFLIGHT_FD: the back-end's new area and its description.</summary>
    public (SafeFdHandle Fd, InflightDescription Description) GetInflightFd(ushort numQueues, ushort queueSize)
    {
        var b = new byte[InflightDescription.Length];
        new InflightDescription(0, 0, numQueues, queueSize).Write(b);
        Send(VhostUserRequest.GetInflightFd, b);
        var reply = Receive() ?? throw new IOException("connection closed");
        Assert.Equal(VhostUserRequest.GetInflightFd, reply.Header.Request);
        Assert.Equal(1, Channel.FdCount);
        return (Channel.TakeFd(0), InflightDescription.Read(reply.Payload));
    }

    public void SetInflightFd(SafeFdHandle fd, InflightDescription d)
    {
        var b = new byte[InflightDescription.Length];
        d.Write(b);
        Do(VhostUserRequest.SetInflightFd, b, fd);
    }

    /// <summary>A front-end over a connection made earlier (one that waited in a listening socket's backlog).</summary>
    public static TestFrontEnd Adopt(UnixFdSocket connected) => new(connected);

    // --- raw messages ---

    public void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, bool needReply = false, params SafeFdHandle[] fds) =>
        Channel.Send(VhostUserHeader.ForRequest(request, payload.Length, needReply), payload, fds);

    public void SendRaw(ReadOnlySpan<byte> bytes, params SafeFdHandle[] fds) => Channel.Socket.Send(bytes, fds);

    /// <summary>Reads one reply; null when the back-end closed the connection.</summary>
    public (VhostUserHeader Header, byte[] Payload)? Receive()
    {
        if (!FdPoll.WaitReadable(Channel.Socket.Handle, Timeout))
            throw new TimeoutException("no reply from the back-end");
        var status = Channel.Receive(out var header, out var problem);
        if (status == ReceiveStatus.Closed)
            return null;
        Assert.True(status == ReceiveStatus.Message, problem);
        Assert.True(header.IsReply, $"expected a reply, got {header}");
        return (header, Channel.Payload.ToArray());
    }

    /// <summary>True when the back-end closed the connection (without sending anything first).</summary>
    public bool WaitClosed()
    {
        if (!FdPoll.WaitReadable(Channel.Socket.Handle, Timeout))
            return false;
        return Channel.Receive(out _, out _) == ReceiveStatus.Closed;
    }

    public ulong GetU64(VhostUserRequest request)
    {
        Send(request, default);
        var reply = Receive() ?? throw new IOException($"{request.SpecName()}: connection closed");
        Assert.Equal(request, reply.Header.Request);
        Assert.Equal(8, reply.Payload.Length);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply.Payload);
    }

    /// <summary>Sends with need_reply and returns the REPLY_ACK value (0 = success); null if the connection closed.</summary>
    public ulong? SendWithAck(VhostUserRequest request, ReadOnlySpan<byte> payload, params SafeFdHandle[] fds)
    {
        Send(request, payload, needReply: true, fds);
        if (Receive() is not { } reply)
            return null;
        Assert.Equal(request, reply.Header.Request);
        Assert.Equal(8, reply.Payload.Length);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply.Payload);
    }

    /// <summary>Sends a message that needs no reply, acknowledged when REPLY_ACK was agreed.</summary>
    public void Do(VhostUserRequest request, ReadOnlySpan<byte> payload, params SafeFdHandle[] fds)
    {
        if (VhostUserFeatures.Has(ProtocolFeatures, VhostUserFeatures.ReplyAck))
            Assert.Equal(0UL, SendWithAck(request, payload, fds));
        else
            Send(request, payload, false, fds);
    }

    public static byte[] U64(ulong value)
    {
        var b = new byte[8];
        U64Payload.Write(b, value);
        return b;
    }

    public static byte[] State(uint index, uint num)
    {
        var b = new byte[VringState.Length];
        new VringState(index, num).Write(b);
        return b;
    }

    public static byte[] MemTable(params MemoryRegionDescription[] regions)
    {
        var b = new byte[MemoryTablePayload.LengthFor(regions.Length)];
        MemoryTablePayload.Write(b, regions);
        return b;
    }

    public static byte[] SingleRegion(MemoryRegionDescription region)
    {
        var b = new byte[SingleRegionPayload.Length];
        SingleRegionPayload.Write(b, region);
        return b;
    }

    // --- the usual start-up, as QEMU does it ---

    /// <summary>GET/SET_FEATURES and protocol features; returns the features the back-end offered.</summary>
    public ulong Negotiate(bool version1 = true, bool replyAck = true, bool protocolFeatures = true, bool packed = false)
    {
        var offered = GetU64(VhostUserRequest.GetFeatures);
        Assert.True(VhostUserFeatures.Has(offered, VhostUserFeatures.ProtocolFeaturesBit));
        if (protocolFeatures)
        {
            var protocol = GetU64(VhostUserRequest.GetProtocolFeatures);
            if (!replyAck)
                protocol &= ~VhostUserFeatures.Bit(VhostUserFeatures.ReplyAck);
            Send(VhostUserRequest.SetProtocolFeatures, U64(protocol));
            ProtocolFeatures = protocol;
        }
        Do(VhostUserRequest.SetOwner, default);
        // This front-end writes split rings unless told otherwise.
        var acked = packed ? offered : offered & ~VirtioFeatures.Bit(VirtioFeatures.RingPacked);
        if (!version1)
            acked &= ~VirtioFeatures.Bit(VirtioFeatures.Version1);
        if (!protocolFeatures)
            acked &= ~VhostUserFeatures.ProtocolFeatures;
        Do(VhostUserRequest.SetFeatures, U64(acked));
        return offered;
    }

    public void SetMemTable() => Do(VhostUserRequest.SetMemTable, MemTable(Region), Ram);

    /// <summary>Lays out a ring in guest RAM and hands it to the back-end; returns the driver's half.</summary>
    public TestQueue SetupQueue(int index, int size = 64, bool eventIdx = true, bool enable = true, ushort baseIndex = 0, bool packed = false)
    {
        var q = TestQueue.Create(this, index, size, eventIdx, packed);
        Do(VhostUserRequest.SetVringNum, State((uint)index, (uint)size));
        // A packed ring starts at slot 0 with both wrap counters at 1 (2.8.1), in bits 15 and 31.
        Do(VhostUserRequest.SetVringBase, State((uint)index, packed ? 0x8000_8000 : baseIndex));
        SendAddr(q);
        Do(VhostUserRequest.SetVringCall, U64((ulong)index), q.Call.Handle);
        Do(VhostUserRequest.SetVringKick, U64((ulong)index), q.Kick.Handle);
        if (enable)
            Do(VhostUserRequest.SetVringEnable, State((uint)index, 1));
        _queues.Add(q);
        return q;
    }

    /// <summary>Hands an existing ring to the back-end again, starting at <paramref name="baseIndex"/> (a reconnect; a packed ring's base has both positions).</summary>
    public void ResumeQueue(TestQueue q, uint baseIndex, bool enable = true, int? ringSize = null)
    {
        Do(VhostUserRequest.SetVringNum, State((uint)q.Index, (uint)(ringSize ?? q.Driver.Size)));
        Do(VhostUserRequest.SetVringBase, State((uint)q.Index, baseIndex));
        SendAddr(q);
        Do(VhostUserRequest.SetVringCall, U64((ulong)q.Index), q.Call.Handle);
        Do(VhostUserRequest.SetVringKick, U64((ulong)q.Index), q.Kick.Handle);
        if (enable)
            Do(VhostUserRequest.SetVringEnable, State((uint)q.Index, 1));
    }

    public void SendAddr(TestQueue q)
    {
        var b = new byte[VringAddress.Length];
        new VringAddress((uint)q.Index, 0, ToUser(q.DescriptorTable), ToUser(q.DeviceArea), ToUser(q.DriverArea), 0).Write(b);
        Do(VhostUserRequest.SetVringAddr, b);
    }

    public ushort GetVringBase(int index) => (ushort)GetVringBaseValue(index);

    /// <summary>GET_VRING_BASE's whole 32-bit value (a packed ring's used position is in the upper half).</summary>
    public uint GetVringBaseValue(int index)
    {
        Send(VhostUserRequest.GetVringBase, State((uint)index, 0));
        var reply = Receive() ?? throw new IOException("connection closed");
        var state = VringState.Read(reply.Payload);
        Assert.Equal((uint)index, state.Index);
        return state.Num;
    }

    public void Dispose()
    {
        foreach (var q in _queues)
            q.Dispose();
        Channel.Dispose();
        RamMapping.Dispose();
        Ram.Dispose();
    }
}

/// <summary>The driver's side of one virtqueue plus a buffer slab for block requests.</summary>
internal sealed class TestQueue : IDisposable
{
    public const int SlabSize = 64 << 10;
    private readonly TestFrontEnd _frontEnd;

    private TestQueue(TestFrontEnd frontEnd, int index, IDriverQueue driver, ulong descriptorTable, ulong driverArea, ulong deviceArea)
    {
        _frontEnd = frontEnd;
        Index = index;
        Driver = driver;
        DescriptorTable = descriptorTable;
        DriverArea = driverArea;
        DeviceArea = deviceArea;
        Header = frontEnd.Allocator.Allocate(16);
        Status = frontEnd.Allocator.Allocate(16);
        Data = frontEnd.Allocator.Allocate(SlabSize, 4096);
    }

    public int Index { get; }
    public IDriverQueue Driver { get; }
    public ulong DescriptorTable { get; }
    public ulong DriverArea { get; }
    public ulong DeviceArea { get; }
    public EventFd Kick { get; } = EventFd.Create();
    public EventFd Call { get; } = EventFd.Create();
    public ulong Header { get; }
    public ulong Status { get; }
    public ulong Data { get; }

    public static TestQueue Create(TestFrontEnd f, int index, int size, bool eventIdx, bool packed = false)
    {
        if (packed)
        {
            var p = PackedDriverQueue.Allocate(index, size, f.Allocator, eventIdx);
            return new(f, index, p, p.DescriptorTable, p.DriverArea, p.DeviceArea);
        }
        var s = SplitDriverQueue.Allocate(index, size, f.Allocator, eventIdx);
        return new(f, index, s, s.DescriptorTable, s.DriverArea, s.DeviceArea);
    }

    /// <summary>Runs one block request and returns its status byte; <paramref name="data"/> is sent (OUT) or filled (IN).</summary>
    public BlkStatus Request(BlkRequestType type, ulong sector, Span<byte> data)
    {
        var head = Submit(type, sector, data);
        WaitUsed(head);
        if (type is BlkRequestType.In or BlkRequestType.GetId)
            _frontEnd.Memory.GetSpan(Data, data.Length).CopyTo(data);
        return (BlkStatus)_frontEnd.Memory.GetSpan(Status, 1)[0];
    }

    /// <summary>Makes one block request available and kicks; returns its head (the status byte is at <see cref="Status"/>).</summary>
    public ushort Submit(BlkRequestType type, ulong sector, ReadOnlySpan<byte> data)
    {
        var memory = _frontEnd.Memory;
        new BlkRequestHeader((uint)type, 0, sector).Write(memory.GetSpan(Header, 16));
        memory.GetSpan(Status, 1)[0] = 0xff;
        var deviceWrites = type is BlkRequestType.In or BlkRequestType.GetId;
        if (!deviceWrites)
            data.CopyTo(memory.GetSpan(Data, data.Length));
        Span<DriverBuffer> chain = data.Length > 0
            ? [new(Header, 16, false), new(Data, (uint)data.Length, deviceWrites), new(Status, 1, true)]
            : [new(Header, 16, false), new(Status, 1, true)];
        Assert.True(Driver.TryAdd(chain, out var head));
        if (Driver.Publish())
            Kick.Signal();
        return head;
    }

    /// <summary>Waits for the call eventfd until <paramref name="head"/> comes back in the used ring.</summary>
    public uint WaitUsed(ushort head)
    {
        var deadline = Environment.TickCount64 + TestFrontEnd.Timeout;
        while (true)
        {
            while (Driver.TryTakeUsed(out var used, out var length, out var error))
            {
                Assert.Equal(UsedError.None, error);
                if (used == head)
                    return length;
            }
            var left = deadline - Environment.TickCount64;
            if (left <= 0)
                throw new TimeoutException($"queue {Index}: head {head} never came back");
            if (Call.Wait((int)Math.Min(left, 100)))
                Call.TryRead(out _);
        }
    }

    public void Dispose()
    {
        Kick.Dispose();
        Call.Dispose();
    }
}
