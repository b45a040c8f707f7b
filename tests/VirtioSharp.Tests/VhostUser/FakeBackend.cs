using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A tiny vhost-user-blk back-end that speaks just enough of the protocol to get a front-end
/// running, then misbehaves in one chosen way. It never does real I/O.
/// </summary>
internal sealed unsafe class FakeBackend : IDisposable
{
    public enum Fault
    {
        /// <summary>Answers nothing, not even GET_FEATURES.</summary>
        NeverAnswer,
        /// <summary>Answers GET_FEATURES with a header announcing a payload that never comes.</summary>
        HeaderOnly,
        /// <summary>Refuses SET_FEATURES (REPLY_ACK with a non-zero verdict).</summary>
        RefuseFeatures,
        /// <summary>Closes the connection when the first request is kicked.</summary>
        CloseOnKick,
        /// <summary>Returns a used element whose id was never made available.</summary>
        BogusUsedId,
        /// <summary>Returns the right id with a used length larger than the request's writable buffers.</summary>
        OversizedUsedLength,
        /// <summary>Takes requests and never returns them.</summary>
        IgnoreRequests,
        /// <summary>Works, but never answers GET_VRING_BASE when the front-end stops.</summary>
        SilentOnStop,
    }

    public const ulong CapacitySectors = 2048;

    private readonly Fault _fault;
    private readonly UnixFdSocket _listener;
    private readonly Thread _thread;
    private readonly List<Thread> _kickThreads = [];
    private volatile bool _stop;
    private UnixFdSocket? _connection;
    private Mapping? _memory;
    private MemoryRegionDescription _region;
    private int _queueSize;
    private ulong _descUser, _availUser, _usedUser;
    private EventFd? _call;
    private ulong _protocolFeatures;

    public FakeBackend(Fault fault, TempDir dir)
    {
        _fault = fault;
        SocketPath = dir.File("fake.sock");
        _listener = UnixFdSocket.Listen(SocketPath);
        _thread = new Thread(Run) { IsBackground = true, Name = "fake-backend" };
        _thread.Start();
    }

    public string SocketPath { get; }
    /// <summary>Messages received, in order.</summary>
    public List<VhostUserRequest> Received { get; } = [];

    private void Run()
    {
        while (!_stop && !FdPoll.WaitReadable(_listener.Handle, 50))
        {
        }
        if (_stop)
            return;
        _connection = _listener.Accept();
        using var channel = new VhostUserChannel(_connection);
        while (!_stop)
        {
            if (!FdPoll.WaitReadable(_connection.Handle, 50))
                continue;
            if (channel.Receive(out var header, out _) != ReceiveStatus.Message)
                return;
            lock (Received)
                Received.Add(header.Request);
            Handle(channel, header);
        }
    }

    private void Handle(VhostUserChannel channel, VhostUserHeader header)
    {
        if (_fault == Fault.NeverAnswer)
            return;
        if (_fault == Fault.HeaderOnly)
        {
            Span<byte> bytes = stackalloc byte[VhostUserHeader.Length];
            VhostUserHeader.ForReply(header.Request, U64Payload.Length).Write(bytes);
            _connection!.Send(bytes);
            return;
        }
        var payload = channel.Payload;
        switch (header.Request)
        {
            case VhostUserRequest.GetFeatures:
                channel.SendU64Reply(header.Request,
                    VirtioFeatures.Bit(VirtioFeatures.Version1) | VirtioFeatures.Bit(BlkFeatures.Flush) | VhostUserFeatures.ProtocolFeatures);
                return;
            case VhostUserRequest.GetProtocolFeatures:
                channel.SendU64Reply(header.Request, VhostUserFeatures.Bit(VhostUserFeatures.Config) | VhostUserFeatures.Bit(VhostUserFeatures.ReplyAck));
                return;
            case VhostUserRequest.SetProtocolFeatures:
                _protocolFeatures = U64Payload.Read(payload);
                return;
            case VhostUserRequest.GetConfig:
                {
                    var reply = payload.ToArray();
                    var config = new BlkConfig { Capacity = CapacitySectors }.ToBytes();
                    var size = (int)ConfigSpaceHeader.Read(reply).Size;
                    config.AsSpan(0, Math.Min(size, config.Length)).CopyTo(reply.AsSpan(ConfigSpaceHeader.Length));
                    channel.Send(VhostUserHeader.ForReply(header.Request, reply.Length), reply);
                    return;
                }
            case VhostUserRequest.SetMemTable:
                _region = MemoryTablePayload.Region(payload, 0);
                using (var fd = channel.TakeFd(0))
                    _memory = Mapping.Map(fd, _region.MmapOffset, _region.Size);
                break;
            case VhostUserRequest.SetVringNum:
                _queueSize = (int)VringState.Read(payload).Num;
                break;
            case VhostUserRequest.SetVringAddr:
                {
                    var a = VringAddress.Read(payload);
                    _descUser = a.Descriptor;
                    _availUser = a.Available;
                    _usedUser = a.Used;
                    break;
                }
            case VhostUserRequest.SetVringCall:
                _call = EventFd.Adopt(channel.TakeFd(0));
                break;
            case VhostUserRequest.SetVringKick:
                {
                    var kick = EventFd.Adopt(channel.TakeFd(0));
                    var t = new Thread(() => ServeKicks(kick)) { IsBackground = true, Name = "fake-kick" };
                    _kickThreads.Add(t);
                    t.Start();
                    break;
                }
            case VhostUserRequest.GetVringBase:
                if (_fault == Fault.SilentOnStop)
                    return;
                Span<byte> state = stackalloc byte[VringState.Length];
                new VringState(VringState.Read(payload).Index, 0).Write(state);
                channel.Send(VhostUserHeader.ForReply(header.Request, state.Length), state);
                return;
        }
        if (header.NeedReply)
            channel.SendU64Reply(header.Request, _fault == Fault.RefuseFeatures && header.Request == VhostUserRequest.SetFeatures ? 1UL : 0UL);
    }

    private byte* Host(ulong user) => (byte*)_memory!.Address + (long)(user - _region.UserAddress);

    private void ServeKicks(EventFd kick)
    {
        ushort lastAvail = 0;
        ushort usedIdx = 0;
        while (!_stop)
        {
            if (!kick.Wait(50))
                continue;
            kick.TryRead(out _);
            var avail = Host(_availUser);
            var used = Host(_usedUser);
            var availIdx = Volatile.Read(ref *(ushort*)(avail + 2));
            while (lastAvail != availIdx)
            {
                var head = *(ushort*)(avail + 4 + 2 * (lastAvail % _queueSize));
                lastAvail++;
                switch (_fault)
                {
                    case Fault.CloseOnKick:
                        _connection!.Shutdown();
                        return;
                    case Fault.IgnoreRequests:
                        continue;
                    case Fault.BogusUsedId:
                        Use(used, ref usedIdx, (uint)(head + 7) % (uint)_queueSize, 1);
                        break;
                    case Fault.OversizedUsedLength:
                        Use(used, ref usedIdx, head, 1u << 30);
                        break;
                    default:
                        Complete(head);
                        Use(used, ref usedIdx, head, 1);
                        break;
                }
            }
            _call?.Signal();
        }
    }

    /// <summary>Writes VIRTIO_BLK_S_OK into the last descriptor of the chain (no indirect descriptors are offered).</summary>
    private void Complete(ushort head)
    {
        var desc = Host(_descUser);
        var i = head;
        for (var n = 0; n < _queueSize; n++)
        {
            var d = desc + SplitRing.DescriptorSize * i;
            var flags = *(ushort*)(d + 12);
            if ((flags & SplitRing.DescFNext) == 0)
            {
                var address = *(ulong*)d;
                *((byte*)_memory!.Address + (long)(address - _region.GuestAddress)) = (byte)BlkStatus.Ok;
                return;
            }
            i = *(ushort*)(d + 14);
        }
    }

    private void Use(byte* used, ref ushort usedIdx, uint id, uint length)
    {
        var elem = used + 4 + SplitRing.UsedElementSize * (usedIdx % _queueSize);
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(elem, 4), id);
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(elem + 4, 4), length);
        usedIdx++;
        Volatile.Write(ref *(ushort*)(used + 2), usedIdx);
    }

    public void Dispose()
    {
        _stop = true;
        _connection?.Shutdown();
        _thread.Join();
        foreach (var t in _kickThreads)
            t.Join();
        _listener.Dispose();
        _call?.Dispose();
        _memory?.Dispose();
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
        }
    }
}
