using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// One front-end connection: reads its messages on one thread, keeps the memory table and the
/// rings, and starts and stops one worker per ring. Anything the front-end sends is checked
/// before use; a bad message gets an error reply when the front-end asked for one
/// (REPLY_ACK), otherwise the connection is closed. Either way it is logged by name. This file
/// holds the connection loop and the dispatch of each message; the handlers are grouped by what
/// they change: .Features.cs, .MemoryTable.cs, .Rings.cs, .Inflight.cs, .Config.cs.
/// </summary>
internal sealed partial class VhostUserSession : IDisposable
{
    /// <summary>Protocol features this back-end offers.</summary>
    public static readonly ulong OfferedProtocolFeatures =
        VhostUserFeatures.Bit(VhostUserFeatures.Mq)
        | VhostUserFeatures.Bit(VhostUserFeatures.ReplyAck)
        | VhostUserFeatures.Bit(VhostUserFeatures.Config)
        | VhostUserFeatures.Bit(VhostUserFeatures.BackendReq)
        | VhostUserFeatures.Bit(VhostUserFeatures.ResetDevice)
        | VhostUserFeatures.Bit(VhostUserFeatures.ConfigureMemSlots)
        | VhostUserFeatures.Bit(VhostUserFeatures.InflightShmfd);

    private enum Verdict { Done, Failed, Close }

    private readonly IVirtioDevice _device;
    private readonly VhostUserChannel _channel;
    private readonly ILogSink? _log;
    private readonly MemoryTable _memory = new();
    private readonly Vring[] _vrings;
    private readonly ulong _offeredFeatures;
    private ulong _features;
    private bool _featuresSet;
    private bool _startedSinceFeatures;
    private ulong _protocolFeatures;
    private bool _versionWarned;
    private bool _unsealedWarned;
    private string _why = "";
    private InflightRegion? _inflight;
    private readonly int _holdCompletionsMs;
    private BackendRequestChannel? _backendChannel; // swapped under _backendLock
    private readonly Lock _backendLock = new();

    /// <summary>How long the rest of a message may take once it has begun, and how long a reply may wait to be sent.</summary>
    public static readonly TimeSpan DefaultMessageTimeout = TimeSpan.FromSeconds(5);

    private readonly TimeSpan _messageTimeout;

    public VhostUserSession(IVirtioDevice device, UnixFdSocket connection, ILogSink? log, AioMode aio = AioMode.Auto, TimeSpan? messageTimeout = null, IReadOnlyList<AdaptivePoller>? pollers = null, int holdCompletionsMs = 0, IReadOnlyList<int>? queueCpus = null,
        IReadOnlyList<CallWatchdog>? watchdogs = null)
    {
        _holdCompletionsMs = holdCompletionsMs;
        _device = device;
        _log = log;
        _messageTimeout = messageTimeout ?? DefaultMessageTimeout;
        _channel = new VhostUserChannel(connection);
        // A front-end that stops reading our replies must not hold this thread either.
        connection.SetTimeouts(_messageTimeout);
        _offeredFeatures = device.DeviceFeatures | VhostUserFeatures.ProtocolFeatures;
        _vrings = new Vring[device.NumQueues];
        for (var i = 0; i < _vrings.Length; i++)
            _vrings[i] = new Vring(i, device, log, aio, pollers?[i], CpuList.ForQueue(queueCpus, i), watchdogs?[i]);
        device.ConfigChanged += OnConfigChanged;
    }

    public ulong Features => _features;
    public ulong ProtocolFeatures => _protocolFeatures;
    internal IReadOnlyList<Vring> Vrings => _vrings;
    private bool ReplyAck => VhostUserFeatures.Has(_protocolFeatures, VhostUserFeatures.ReplyAck);

    /// <summary>Serves messages until the front-end leaves, breaks the protocol, or <paramref name="stop"/> is signalled.</summary>
    public void Run(EventFd stop)
    {
        bool socketRef = false, stopRef = false;
        try
        {
            _channel.Socket.Handle.DangerousAddRef(ref socketRef);
            stop.Handle.DangerousAddRef(ref stopRef);
            // Every wait inside a message is bounded and ends when the server stops: a front-end
            // that sends half a message and stops cannot hold this thread (or a shutdown) for ever.
            _channel.BoundReceives(stop.Handle, _messageTimeout);
            Span<PollFd> fds = stackalloc PollFd[2];
            while (true)
            {
                fds[0] = new PollFd(_channel.Socket.Fd);
                fds[1] = new PollFd(stop.Fd);
                FdPoll.Wait(fds, -1);
                if (fds[1].Ready)
                {
                    _log.Info("closing the front-end connection: the server is stopping");
                    return;
                }
                switch (_channel.Receive(out var header, out var problem))
                {
                    case ReceiveStatus.Closed:
                        _log.Info(problem is null ? "front-end disconnected" : $"front-end disconnected ({problem})");
                        return;
                    case ReceiveStatus.Malformed:
                        _log.Error($"closing the connection: malformed message: {problem}");
                        return;
                    case ReceiveStatus.Stopped:
                        _log.Info("closing the front-end connection: the server is stopping (a message was cut short)");
                        return;
                }
                if (!Dispatch(header))
                    return;
            }
        }
        catch (IOException e)
        {
            _log.Info($"front-end connection lost: {e.Message}");
        }
        finally
        {
            if (socketRef)
                _channel.Socket.Handle.DangerousRelease();
            if (stopRef)
                stop.Handle.DangerousRelease();
        }
    }

    /// <summary>Handles one message and its reply; false when the connection must close.</summary>
    private bool Dispatch(VhostUserHeader header)
    {
        _why = "";
        _log.Debug($"<- {header}, {_channel.FdCount} fd(s)");
        if (header.IsReply)
            return Close(header, "the front-end sent a reply flag on a request");
        Verdict verdict;
        try
        {
            verdict = Handle(header);
        }
        catch (Exception e) when (e is NativeCallException or InvalidOperationException or ArgumentException)
        {
            _why = e.Message;
            verdict = Verdict.Failed;
        }

        var ackable = header.NeedReply && ReplyAck && !header.Request.AlwaysReplies();
        switch (verdict)
        {
            case Verdict.Done:
                if (ackable)
                    _channel.SendU64Reply(header.Request, 0);
                return true;
            case Verdict.Failed when ackable:
                _log.Warn($"{header.Request.SpecName()} refused: {_why}");
                _channel.SendU64Reply(header.Request, 1);
                return true;
            default:
                return Close(header, _why);
        }
    }

    private bool Close(VhostUserHeader header, string why)
    {
        _log.Error($"closing the connection: {header.Request.SpecName()}: {why}"
            + (header.NeedReply && ReplyAck ? "" : " (no REPLY_ACK requested, so no other way to report it)"));
        return false;
    }

    private Verdict Fail(string why)
    {
        _why = why;
        return Verdict.Failed;
    }

    private Verdict Handle(VhostUserHeader h)
    {
        var p = _channel.Payload;
        var request = h.Request;
        if (!FdsAllowed(request) && _channel.FdCount != 0)
            return Fail($"{_channel.FdCount} unexpected file descriptor(s) attached");

        switch (request)
        {
            case VhostUserRequest.GetFeatures:
                if (!Size(p, 0)) return Verdict.Failed;
                _channel.SendU64Reply(request, _offeredFeatures);
                return Verdict.Done;
            case VhostUserRequest.SetFeatures:
                return Size(p, U64Payload.Length) ? SetFeatures(U64Payload.Read(p)) : Verdict.Failed;
            case VhostUserRequest.GetProtocolFeatures:
                if (!Size(p, 0)) return Verdict.Failed;
                _channel.SendU64Reply(request, OfferedProtocolFeatures);
                return Verdict.Done;
            case VhostUserRequest.SetProtocolFeatures:
                return Size(p, U64Payload.Length) ? SetProtocolFeatures(U64Payload.Read(p)) : Verdict.Failed;
            case VhostUserRequest.SetOwner:
                return Size(p, 0) ? Verdict.Done : Verdict.Failed;
            case VhostUserRequest.ResetOwner:
                if (!Size(p, 0)) return Verdict.Failed;
                // Deprecated; the spec suggests ignoring it or disabling all rings.
                foreach (var v in _vrings)
                    v.SetEnabled(false);
                _log.Info("VHOST_USER_RESET_OWNER: all rings disabled");
                return Verdict.Done;
            case VhostUserRequest.ResetDevice:
                if (!Size(p, 0)) return Verdict.Failed;
                ResetDevice();
                return Verdict.Done;
            case VhostUserRequest.GetQueueNum:
                if (!Size(p, 0)) return Verdict.Failed;
                _channel.SendU64Reply(request, (ulong)_vrings.Length);
                return Verdict.Done;
            case VhostUserRequest.GetMaxMemSlots:
                if (!Size(p, 0)) return Verdict.Failed;
                _channel.SendU64Reply(request, MemoryTable.MaxSlots);
                return Verdict.Done;
            case VhostUserRequest.SetMemTable:
                return SetMemTable(p);
            case VhostUserRequest.AddMemReg:
                return Size(p, SingleRegionPayload.Length) ? AddMemReg(SingleRegionPayload.Read(p)) : Verdict.Failed;
            case VhostUserRequest.RemMemReg:
                return Size(p, SingleRegionPayload.Length) ? RemMemReg(SingleRegionPayload.Read(p)) : Verdict.Failed;
            case VhostUserRequest.SetVringNum:
                return Size(p, VringState.Length) ? SetVringNum(VringState.Read(p)) : Verdict.Failed;
            case VhostUserRequest.SetVringAddr:
                return Size(p, VringAddress.Length) ? SetVringAddr(VringAddress.Read(p)) : Verdict.Failed;
            case VhostUserRequest.SetVringBase:
                return Size(p, VringState.Length) ? SetVringBase(VringState.Read(p)) : Verdict.Failed;
            case VhostUserRequest.GetVringBase:
                return Size(p, VringState.Length) ? GetVringBase(VringState.Read(p)) : Verdict.Failed;
            case VhostUserRequest.SetVringKick:
            case VhostUserRequest.SetVringCall:
            case VhostUserRequest.SetVringErr:
                return Size(p, U64Payload.Length) ? SetVringFd(request, U64Payload.Read(p)) : Verdict.Failed;
            case VhostUserRequest.SetVringEnable:
                return Size(p, VringState.Length) ? SetVringEnable(VringState.Read(p)) : Verdict.Failed;
            case VhostUserRequest.GetInflightFd:
                return GetInflightFd(p);
            case VhostUserRequest.SetInflightFd:
                return SetInflightFd(p);
            case VhostUserRequest.GetConfig:
                return GetConfig(p);
            case VhostUserRequest.SetConfig:
                return SetConfig(p);
            case VhostUserRequest.SetBackendReqFd:
                return Size(p, 0) ? SetBackendReqFd() : Verdict.Failed;
            default:
                return Fail($"request {(uint)request} ({request.SpecName()}) is not supported by this back-end");
        }
    }

    private static bool FdsAllowed(VhostUserRequest r) => r is VhostUserRequest.SetMemTable or VhostUserRequest.AddMemReg
        or VhostUserRequest.RemMemReg or VhostUserRequest.SetVringKick or VhostUserRequest.SetVringCall or VhostUserRequest.SetVringErr
        or VhostUserRequest.SetInflightFd or VhostUserRequest.SetBackendReqFd;

    private bool Size(ReadOnlySpan<byte> payload, int expected)
    {
        if (payload.Length == expected)
            return true;
        _why = $"payload is {payload.Length} bytes, expected {expected}";
        return false;
    }

    private bool TryRing(uint index, out Vring ring)
    {
        if (index < (uint)_vrings.Length)
        {
            ring = _vrings[index];
            return true;
        }
        ring = null!;
        _why = $"queue index {index} is out of range (the device has {_vrings.Length} queue{(_vrings.Length == 1 ? "" : "s")})";
        return false;
    }

    /// <summary>Stops every ring and releases every descriptor and mapping of this connection.</summary>
    public void Dispose()
    {
        _device.ConfigChanged -= OnConfigChanged;
        SwapBackendChannel(null);
        foreach (var v in _vrings)
        {
            var wasStarted = v.Started;
            v.Stop();
            if (wasStarted)
                _log.Info($"queue {v.Index}: stopped at {VringFormat.Describe(VringFormat.IsPacked(_features), v.Base)} (connection closed)");
            v.Dispose();
        }
        SwapInflight(null);
        _memory.Dispose();
        _channel.Dispose();
        if (_device.Breaches.Total > 0)
        {
            _log.Info(_device.Breaches.Summary());
            _device.Breaches.Clear();
        }
        _device.Reset();
    }
}
