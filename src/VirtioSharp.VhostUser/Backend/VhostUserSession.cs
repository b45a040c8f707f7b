using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// One front-end connection: reads its messages on one thread, keeps the memory table and the
/// rings, and starts and stops one worker per ring. Anything the front-end sends is checked
/// before use; a bad message gets an error reply when the front-end asked for one
/// (REPLY_ACK), otherwise the connection is closed. Either way it is logged by name.
/// </summary>
internal sealed class VhostUserSession : IDisposable
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

    public VhostUserSession(IVirtioDevice device, UnixFdSocket connection, ILogSink? log, AioMode aio = AioMode.Auto, TimeSpan? messageTimeout = null, IReadOnlyList<AdaptivePoller>? pollers = null, int holdCompletionsMs = 0)
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
            _vrings[i] = new Vring(i, device, log, aio, pollers?[i]);
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

    // --- features ---

    private Verdict SetFeatures(ulong features)
    {
        var unknown = features & ~_offeredFeatures;
        if (unknown != 0)
            return Fail($"features 0x{unknown:x} ({VirtioFeatures.Describe(unknown)}) were not offered");
        var changed = !_featuresSet || features != _features;
        var anyStarted = _vrings.Any(v => v.Started);
        // QEMU sends the same SET_FEATURES more than once per start (in-flight setup, then the start
        // itself): only new features, or features after rings have run, begin a new device start.
        var newStart = !anyStarted && (changed || _startedSinceFeatures);
        if (newStart)
        {
            _startedSinceFeatures = false;
            if (_device.Breaches.Total > 0)
            {
                // The breaches of the last start have been reported.
                _log.Info(_device.Breaches.Summary());
                _device.Breaches.Clear();
            }
        }
        _features = features;
        _featuresSet = true;
        if (!VirtioFeatures.Has(features, VirtioFeatures.Version1))
        {
            if (!_versionWarned)
            {
                _versionWarned = true;
                _log.Warn("front-end did not acknowledge VIRTIO_F_VERSION_1 (feature bit 32); serving the driver as a little-endian modern device");
            }
            // 6.1: a driver MUST accept VIRTIO_F_VERSION_1; strict=fail stops the rings at their first drain.
            if (_device.Breaches.Strict && (newStart || changed))
                _device.Breaches.Report("6.1", -1, -1, "VIRTIO_F_VERSION_1 accepted", "bit 32 clear in VHOST_USER_SET_FEATURES");
        }
        _device.Activate(features & ~VhostUserFeatures.ProtocolFeatures);
        // vhost-user.rst, "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES all rings are enabled at once.
        if (!VirtioFeatures.Has(features, VhostUserFeatures.ProtocolFeaturesBit))
        {
            foreach (var v in _vrings)
                v.SetEnabled(true);
        }
        if (changed)
            _log.Info($"features agreed: {VirtioFeatures.Describe(features)}");
        if (changed && anyStarted)
            Requeue("the features changed"); // EVENT_IDX and INDIRECT_DESC are fixed per queue object
        return Verdict.Done;
    }

    private Verdict SetProtocolFeatures(ulong features)
    {
        var unknown = features & ~OfferedProtocolFeatures;
        if (unknown != 0)
            return Fail($"protocol features 0x{unknown:x} ({VhostUserFeatures.DescribeProtocol(unknown)}) were not offered");
        _protocolFeatures = features;
        _log.Info($"protocol features agreed: {VhostUserFeatures.DescribeProtocol(features)}");
        return Verdict.Done;
    }

    private void ResetDevice()
    {
        foreach (var v in _vrings)
            v.Reset();
        SwapInflight(null);
        _features = 0;
        _featuresSet = false;
        _device.Reset();
        _log.Info("device reset by the front-end (VHOST_USER_RESET_DEVICE)");
    }

    // --- memory table ---

    private Verdict SetMemTable(ReadOnlySpan<byte> p)
    {
        if (p.Length < MemoryTablePayload.HeaderLength)
            return Fail($"payload is {p.Length} bytes, shorter than the {MemoryTablePayload.HeaderLength}-byte table header");
        var count = MemoryTablePayload.Count(p);
        if (count > MemoryTablePayload.MaxRegions)
            return Fail($"{count} regions; at most {MemoryTablePayload.MaxRegions} fit in one table");
        // Exactly the regions listed; some front-ends send the whole 8-slot array.
        if (p.Length != MemoryTablePayload.LengthFor((int)count) && p.Length != MemoryTablePayload.LengthFor(MemoryTablePayload.MaxRegions))
            return Fail($"payload is {p.Length} bytes; {count} regions take {MemoryTablePayload.LengthFor((int)count)}");
        if (_channel.FdCount != count)
            return Fail($"{count} regions came with {_channel.FdCount} file descriptor(s); each region needs exactly one");

        var descriptions = new List<MemoryRegionDescription>((int)count);
        for (var i = 0; i < count; i++)
        {
            var r = MemoryTablePayload.Region(p, i);
            if (MemoryTable.CheckShape(r) is { } shape)
                return Fail(shape);
            descriptions.Add(r);
        }
        if (MemoryTable.CheckOverlaps(descriptions) is { } overlap)
            return Fail(overlap);

        var mapped = new List<MappedRegion>(descriptions.Count);
        for (var i = 0; i < descriptions.Count; i++)
        {
            using var fd = _channel.TakeFd(i);
            var region = MemoryTable.Map(descriptions[i], fd, out var error);
            if (region is null)
            {
                foreach (var m in mapped)
                    m.Dispose();
                return Fail(error!);
            }
            mapped.Add(region);
        }
        SwapMemory(mapped, $"memory table set: {mapped.Count} region{(mapped.Count == 1 ? "" : "s")}");
        return Verdict.Done;
    }

    private Verdict AddMemReg(MemoryRegionDescription r)
    {
        if (_channel.FdCount != 1)
            return Fail($"a region needs exactly one file descriptor, {_channel.FdCount} came");
        if (_memory.Regions.Count >= MemoryTable.MaxSlots)
            return Fail($"all {MemoryTable.MaxSlots} memory slots are in use");
        if (MemoryTable.CheckShape(r) is { } shape)
            return Fail(shape);
        var all = _memory.Regions.Select(m => m.Description).Append(r).ToList();
        if (MemoryTable.CheckOverlaps(all) is { } overlap)
            return Fail(overlap);
        using var fd = _channel.TakeFd(0);
        var region = MemoryTable.Map(r, fd, out var error);
        if (region is null)
            return Fail(error!);
        SwapMemory([.. _memory.Regions, region], $"memory region added: {r}", logRegions: false);
        return Verdict.Done;
    }

    private Verdict RemMemReg(MemoryRegionDescription r)
    {
        // vhost-user.rst: no descriptor SHOULD come; one MAY, and is closed unused (the channel closes it).
        if (_channel.FdCount > 1)
            return Fail($"{_channel.FdCount} file descriptors attached; at most one is tolerated");
        var victim = _memory.Regions.FirstOrDefault(m => m.Description.GuestAddress == r.GuestAddress
            && m.Description.UserAddress == r.UserAddress && m.Description.Size == r.Size);
        if (victim is null)
            return Fail($"no region matches {r}");
        SwapMemory(_memory.Regions.Where(m => m != victim).ToList(), $"memory region removed: {r}", logRegions: false);
        return Verdict.Done;
    }

    /// <summary>
    /// Installs a new memory table: stops the running rings, swaps, unmaps what left the table,
    /// and restarts the rings over the new table at the indices they stopped at.
    /// </summary>
    private void SwapMemory(List<MappedRegion> regions, string what, bool logRegions = true)
    {
        var running = StopRunning();
        var old = _memory.Replace(regions);
        foreach (var m in old)
        {
            if (!regions.Contains(m))
                m.Dispose();
        }
        _log.Info(what);
        if (logRegions)
        {
            for (var i = 0; i < regions.Count; i++)
                _log.Info($"  region {i}: {regions[i].Description}");
        }
        if (!_unsealedWarned && regions.FirstOrDefault(m => !m.SizeSealed) is { } unsealed)
        {
            _unsealedWarned = true;
            _log.Warn($"memory region {unsealed.Description}: its file is not sealed against shrinking (F_SEAL_SHRINK); "
                + "if the front-end truncates it, this process dies of SIGBUS on the next access. "
                + "QEMU's memory-backend-memfd seals by default (seal=on)");
        }
        Restart(running);
    }

    /// <summary>Stops every started ring; returns those to restart (a ring that needs a device reset stays stopped).</summary>
    private List<Vring> StopRunning()
    {
        var running = _vrings.Where(v => v.Started).ToList();
        foreach (var v in running)
            v.Stop();
        return running.Where(v => !v.Failed).ToList();
    }

    private void Restart(List<Vring> rings)
    {
        foreach (var v in rings)
        {
            if (!TryStart(v, out var error))
                _log.Error($"queue {v.Index}: not restarted: {error}");
        }
    }

    private void Requeue(string why)
    {
        _log.Debug($"restarting running queues: {why}");
        Restart(StopRunning());
    }

    // --- rings ---

    private Verdict SetVringNum(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        if (v.Started)
            return Fail($"queue {s.Index}: size change while the ring runs");
        // 2.7: a split ring's size is a power of two; 2.8.10.1: a packed ring's need not be.
        var packed = VringFormat.IsPacked(_features);
        if (s.Num == 0 || s.Num > _device.MaxQueueSize || (!packed && !SplitRing.IsValidSize((int)s.Num)))
            return Fail($"queue {s.Index}: size {s.Num} is not {(packed ? "" : "a power of two ")}in 1..{_device.MaxQueueSize} (the device's queue size)");
        v.Num = s.Num;
        return Verdict.Done;
    }

    private Verdict SetVringAddr(VringAddress a)
    {
        if (!TryRing(a.Index, out var v))
            return Verdict.Failed;
        if ((a.Flags & VringAddress.FlagLog) != 0)
            return Fail($"queue {a.Index}: VHOST_VRING_F_LOG asks for dirty logging, which this back-end does not offer");
        if (a.Flags != 0)
            return Fail($"queue {a.Index}: unknown vring flags 0x{a.Flags:x}");
        // Ring addresses are front-end virtual addresses: translate them through the table's user addresses.
        var size = v.Num == 0 ? 1 : (int)v.Num;
        if (!CoveredByTable(a, size, out var error))
            return Fail($"queue {a.Index}: {error}");
        var wasStarted = v.Started;
        v.Stop();
        v.Address = a;
        if (wasStarted && !TryStart(v, out var restartError))
            return Fail($"queue {a.Index}: {restartError}");
        return Verdict.Done;
    }

    private bool CoveredByTable(VringAddress a, int size, out string error)
    {
        error = "";
        var memory = _memory.Memory;
        if (_memory.IsEmpty)
        {
            error = "ring addresses arrived before any memory table";
            return false;
        }
        var packed = VringFormat.IsPacked(_features);
        var (descBytes, driverBytes, deviceBytes) = VringFormat.PartSizes(packed, size);
        if (!memory.TryTranslateUser(a.Descriptor, descBytes, out _))
            error = $"descriptor {(packed ? "ring" : "table")} at user address 0x{a.Descriptor:x} is not inside any memory region";
        else if (!memory.TryTranslateUser(a.Available, driverBytes, out _))
            error = $"{(packed ? "driver event suppression" : "available ring")} at user address 0x{a.Available:x} is not inside any memory region";
        else if (!memory.TryTranslateUser(a.Used, deviceBytes, out _))
            error = $"{(packed ? "device event suppression" : "used ring")} at user address 0x{a.Used:x} is not inside any memory region";
        return error.Length == 0;
    }

    private Verdict SetVringBase(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        if (v.Started)
            return Fail($"queue {s.Index}: base change while the ring runs");
        if (!VringFormat.BaseFits(VringFormat.IsPacked(_features), s.Num))
            return Fail($"queue {s.Index}: base {s.Num} does not fit a 16-bit split-ring index");
        v.Base = s.Num;
        return Verdict.Done;
    }

    private Verdict GetVringBase(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        var wasStarted = v.Started;
        v.Stop();
        // The ring needs a new kick descriptor to start again.
        v.SetKick(null);
        if (wasStarted)
            _log.Info($"queue {s.Index}: stopped at {VringFormat.Describe(VringFormat.IsPacked(_features), v.Base)} ({v.Kicks} kicks, {v.Calls} calls so far)");
        Span<byte> reply = stackalloc byte[VringState.Length];
        new VringState(s.Index, v.Base).Write(reply);
        _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetVringBase, VringState.Length), reply);
        return Verdict.Done;
    }

    private Verdict SetVringFd(VhostUserRequest request, ulong value)
    {
        var index = (uint)(value & U64Payload.VringIndexMask);
        var noFd = (value & U64Payload.InvalidFdFlag) != 0;
        if (!TryRing(index, out var v))
            return Verdict.Failed;
        if (noFd && _channel.FdCount != 0)
            return Fail($"queue {index}: the no-descriptor flag is set but {_channel.FdCount} descriptor(s) came");
        if (!noFd && _channel.FdCount != 1)
            return Fail($"queue {index}: expected one eventfd, {_channel.FdCount} came");
        EventFd? fd = null;
        if (!noFd)
        {
            var handle = _channel.TakeFd(0);
            // vhost-user.rst: kick, call and err are eventfds. Anything else may poll readable for
            // ever (a file, /dev/zero, a closed socket) and spin the ring worker, or take our writes.
            if (!EventFd.IsEventFd(handle))
            {
                handle.Dispose();
                return Fail($"queue {index}: the descriptor for {request.SpecName()} is not an eventfd");
            }
            fd = EventFd.Adopt(handle);
        }
        switch (request)
        {
            case VhostUserRequest.SetVringCall:
                v.SetCall(fd);
                return Verdict.Done;
            case VhostUserRequest.SetVringErr:
                v.SetErr(fd);
                return Verdict.Done;
        }
        if (fd is null)
            return Fail($"queue {index}: polling the ring without a kick descriptor is not supported");
        var wasStarted = v.Started;
        v.Stop();
        v.SetKick(fd);
        // vhost-user.rst, "Ring states": the ring starts once it has a kick descriptor.
        if (!TryStart(v, out var error))
            return Fail($"queue {index}: kick received but the ring cannot start: {error}");
        if (!wasStarted)
            _log.Info($"queue {index}: started: {(VringFormat.IsPacked(_features) ? "packed" : "split")} ring, size {v.Num}, {VringFormat.Describe(VringFormat.IsPacked(_features), v.Base)}, {(v.Enabled ? "enabled" : "disabled until VHOST_USER_SET_VRING_ENABLE")}");
        return Verdict.Done;
    }

    private Verdict SetVringEnable(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        if (s.Num > 1)
            return Fail($"queue {s.Index}: enable value {s.Num} is neither 0 nor 1");
        if (!VirtioFeatures.Has(_features, VhostUserFeatures.ProtocolFeaturesBit))
            _log.Debug($"queue {s.Index}: VHOST_USER_SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES negotiated");
        v.SetEnabled(s.Num == 1);
        _log.Debug($"queue {s.Index}: {(s.Num == 1 ? "enabled" : "disabled")}");
        return Verdict.Done;
    }

    /// <summary>Builds the queue over the current table and starts the worker.</summary>
    private bool TryStart(Vring v, out string error)
    {
        error = "";
        if (v.Kick is null)
            error = "no kick descriptor";
        else if (_memory.IsEmpty)
            error = "no memory table yet (VHOST_USER_SET_MEM_TABLE or VHOST_USER_ADD_MEM_REG first)";
        else if (v.Num == 0)
            error = "no size yet (VHOST_USER_SET_VRING_NUM first)";
        else if (v.Address is not { } a)
            error = "no ring addresses yet (VHOST_USER_SET_VRING_ADDR first)";
        else if (!CoveredByTable(a, (int)v.Num, out var coverage))
            error = coverage;
        else
        {
            var memory = _memory.Memory;
            var packed = VringFormat.IsPacked(_features);
            var eventIdx = VirtioFeatures.Has(_features, VirtioFeatures.RingEventIdx);
            var indirect = VirtioFeatures.Has(_features, VirtioFeatures.RingIndirectDesc);
            // The layout is checked before anything of the ring is read; a split ring's used index
            // is then the one in memory (vhost-user.rst, SET_VRING_BASE).
            var startIndex = v.Base;
            var found = VringFormat.Create(packed, v.Index, (int)v.Num, memory, a, eventIdx, indirect, startIndex, out var usedIdx, out var queueError);
            SplitInflightRecord.Plan plan = default;
            var record = packed || found is null ? null : _inflight?.Queue(v.Index);
            if (record is { } r)
            {
                if (r.TryReconcile(usedIdx, (ushort)v.Num, out plan, out var recordError))
                {
                    // The record knows how far the available ring was read: used idx + requests in flight.
                    if (!plan.Fresh && plan.LastAvail != (ushort)startIndex)
                    {
                        startIndex = plan.LastAvail;
                        found = VringFormat.Create(packed, v.Index, (int)v.Num, memory, a, eventIdx, indirect, startIndex, out usedIdx, out queueError);
                    }
                    if (plan.Resubmit.Length > 0 || plan.BatchRepaired > 0)
                        _log.Info($"queue {v.Index}: inflight record: {plan.Resubmit.Length} request{(plan.Resubmit.Length == 1 ? "" : "s")} in flight when the last back-end stopped"
                            + (plan.BatchRepaired > 0 ? $", {plan.BatchRepaired} already used (last batch repaired)" : "")
                            + $"; resubmitting them in the order taken, then resuming at avail index {startIndex}");
                }
                else
                {
                    _inflight!.Reject(v.Index);
                    record = null;
                    _log.Error($"queue {v.Index}: inflight record ignored, nothing replayed: {recordError}");
                }
            }
            if (found is null)
                error = queueError ?? "the ring cannot be laid out";
            else
            {
                found.SignalNextBatch(); // as Linux's vhost does for the first used batch after a ring starts
                if (_device.Trace is { } trace && found is SplitDeviceQueue traced)
                    traced.Record(trace, GuestAddress(memory, a.Descriptor), GuestAddress(memory, a.Available), GuestAddress(memory, a.Used), indirect);
                if (found is PackedDeviceQueue p)
                    p.Breaches = _device.Breaches;
                if (record is null && !packed && usedIdx != (ushort)v.Base)
                    _log.Warn($"queue {v.Index}: used index {usedIdx} differs from the available base {v.Base}; requests between them were taken before and are not replayed");
                else if (record is not null && startIndex != v.Base)
                    _log.Info($"queue {v.Index}: the front-end said avail index {v.Base}; the inflight record says {startIndex}");
                IDeviceQueue queue = record is { } tracked && found is SplitDeviceQueue split ? new InflightTrackingQueue(split, tracked, plan, usedIdx) : found;
                if (_holdCompletionsMs > 0)
                    queue = new HeldCompletionsQueue(queue, _holdCompletionsMs, v.Wake);
                v.Base = startIndex;
                v.Start(queue);
                _startedSinceFeatures = true;
                _log.Debug($"queue {v.Index}: worker running: desc 0x{a.Descriptor:x} avail 0x{a.Available:x} used 0x{a.Used:x}, avail {startIndex}, used {usedIdx}");
                return true;
            }
        }
        return false;
    }

    /// <summary>A ring's guest-physical address, for recordings (the front-end gives its own virtual ones).</summary>
    private static ulong GuestAddress(Memory.GuestMemory memory, ulong user) => memory.TryUserToGuest(user, 1, out var gpa) ? gpa : user;

    // --- inflight I/O tracking (vhost-user.rst, "Inflight I/O tracking") ---

    private bool InflightPayload(ReadOnlySpan<byte> p, out InflightDescription d)
    {
        d = default;
        if (p.Length is not (InflightDescription.Length or InflightDescription.FieldsLength))
        {
            _why = $"payload is {p.Length} bytes, expected {InflightDescription.Length}";
            return false;
        }
        d = InflightDescription.Read(p);
        return true;
    }

    /// <summary>GET_INFLIGHT_FD: a new zeroed area for the queues the front-end names; it keeps the descriptor for our successor.</summary>
    private Verdict GetInflightFd(ReadOnlySpan<byte> p)
    {
        if (!InflightPayload(p, out var d))
            return Verdict.Failed;
        if (InflightRegion.CheckShape(d.NumQueues, d.QueueSize, _vrings.Length) is { } shape)
            return Fail($"cannot track {shape}");
        if (_vrings.Any(v => v.Started))
            return Fail("the inflight area cannot change while rings run");
        var region = InflightRegion.Create(d.NumQueues, d.QueueSize);
        SwapInflight(region);
        Span<byte> reply = stackalloc byte[InflightDescription.Length];
        region.Description.Write(reply);
        _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetInflightFd, InflightDescription.Length), reply, [region.Fd]);
        _log.Info($"inflight area made: {region.Size} bytes for {d.NumQueues} queue{(d.NumQueues == 1 ? "" : "s")} of {d.QueueSize}");
        return Verdict.Done;
    }

    /// <summary>
    /// SET_INFLIGHT_FD: the area to keep the record in, maybe written by a back-end before us. One
    /// that cannot hold what it claims is refused with a log line and the session carries on
    /// without it (nothing replayed); failing the message would stop QEMU from starting the device.
    /// </summary>
    private Verdict SetInflightFd(ReadOnlySpan<byte> p)
    {
        if (_channel.FdCount != 1)
            return Fail($"expected one descriptor, {_channel.FdCount} came");
        if (!InflightPayload(p, out var d))
            return Verdict.Failed;
        if (_vrings.Any(v => v.Started))
            return Fail("the inflight area cannot change while rings run");
        var fd = _channel.TakeFd(0);
        InflightRegion? region;
        string? error;
        try
        {
            region = InflightRegion.Adopt(fd, d, _vrings.Length, out error);
        }
        catch (NativeCallException e)
        {
            region = null;
            error = e.Message;
        }
        if (region is null)
        {
            fd.Dispose();
            SwapInflight(null);
            _log.Error($"inflight area refused, requests will not be replayed: {error}");
            return Verdict.Done;
        }
        SwapInflight(region);
        _log.Info($"inflight area set: {region.Size} bytes at offset {region.Offset} for {d.NumQueues} queue{(d.NumQueues == 1 ? "" : "s")} of {d.QueueSize}");
        return Verdict.Done;
    }

    private void SwapInflight(InflightRegion? region)
    {
        var old = _inflight;
        _inflight = region;
        if (old != null && old != region)
            old.Dispose();
    }

    // --- the back-end's channel and configuration changes (vhost-user.rst, "Back-end communication") ---

    /// <summary>SET_BACKEND_REQ_FD: one end of a stream socket pair, for the back-end's own requests.</summary>
    private Verdict SetBackendReqFd()
    {
        if (!VhostUserFeatures.Has(_protocolFeatures, VhostUserFeatures.BackendReq))
            return Fail("VHOST_USER_PROTOCOL_F_BACKEND_REQ was not negotiated");
        if (_channel.FdCount != 1)
            return Fail($"expected one socket, {_channel.FdCount} descriptor(s) came");
        var fd = _channel.TakeFd(0);
        UnixFdSocket socket;
        try
        {
            socket = UnixFdSocket.AdoptConnected(fd);
        }
        catch (IOException e)
        {
            fd.Dispose();
            return Fail(e.Message);
        }
        SwapBackendChannel(new BackendRequestChannel(socket, _messageTimeout));
        _log.Debug("back-end request channel set: configuration changes will be sent to the front-end");
        return Verdict.Done;
    }

    private void SwapBackendChannel(BackendRequestChannel? channel)
    {
        BackendRequestChannel? old;
        lock (_backendLock)
        {
            old = _backendChannel;
            _backendChannel = channel;
        }
        old?.Dispose();
    }

    /// <summary>
    /// The device changed its configuration space (a disk resized), on the thread that noticed it,
    /// never this session's message thread: QEMU answers a config-change message only after it has
    /// read the new config with GET_CONFIG, which that thread serves. The front-end is told with
    /// VHOST_USER_BACKEND_CONFIG_CHANGE_MSG when it agreed to CONFIG and BACKEND_REQ and gave a
    /// channel; otherwise the log says the guest was not told.
    /// </summary>
    private void OnConfigChanged()
    {
        var protocol = Volatile.Read(ref _protocolFeatures);
        BackendRequestChannel? channel;
        lock (_backendLock)
            channel = _backendChannel;
        string? missing = null;
        if (!VhostUserFeatures.Has(protocol, VhostUserFeatures.Config))
            missing = "VHOST_USER_PROTOCOL_F_CONFIG was not negotiated";
        else if (!VhostUserFeatures.Has(protocol, VhostUserFeatures.BackendReq))
            missing = "the front-end did not negotiate VHOST_USER_PROTOCOL_F_BACKEND_REQ";
        else if (channel is null)
            missing = "the front-end sent no VHOST_USER_SET_BACKEND_REQ_FD";
        if (missing is not null)
        {
            _log.Warn($"the configuration changed but the guest was not told: {missing}; it sees the new capacity only when its driver reads the configuration again (after a reset or reconnect)");
            return;
        }
        var needReply = VhostUserFeatures.Has(protocol, VhostUserFeatures.ReplyAck);
        var outcome = channel!.NotifyConfigChange(needReply, out var detail);
        switch (outcome)
        {
            case BackendRequestOutcome.Acknowledged:
                _log.Info("configuration change sent to the front-end (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), acknowledged");
                break;
            case BackendRequestOutcome.Sent:
                _log.Info("configuration change sent to the front-end (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, no reply asked: REPLY_ACK not negotiated)");
                break;
            case BackendRequestOutcome.Refused:
                _log.Warn($"configuration change sent to the front-end, which refused it: {detail}");
                break;
            default:
                _log.Warn($"configuration change not delivered: {detail}; the back-end request channel is closed");
                lock (_backendLock)
                {
                    if (_backendChannel == channel)
                        _backendChannel = null;
                }
                channel.Dispose();
                break;
        }
    }

    // --- config space ---

    private Verdict GetConfig(ReadOnlySpan<byte> p)
    {
        if (!TryConfigHeader(p, out var cfg))
        {
            // vhost-user.rst, GET_CONFIG: an empty payload tells the front-end it failed.
            _log.Warn($"VHOST_USER_GET_CONFIG refused: {_why}");
            _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetConfig, 0), default);
            return Verdict.Done;
        }
        Span<byte> reply = stackalloc byte[ConfigSpaceHeader.Length + (int)cfg.Size];
        cfg.Write(reply);
        _device.ReadConfig((int)cfg.Offset, reply[ConfigSpaceHeader.Length..]);
        _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetConfig, reply.Length), reply);
        return Verdict.Done;
    }

    private Verdict SetConfig(ReadOnlySpan<byte> p)
    {
        if (!TryConfigHeader(p, out var cfg))
            return Verdict.Failed;
        _device.WriteConfig((int)cfg.Offset, p.Slice(ConfigSpaceHeader.Length, (int)cfg.Size));
        return Verdict.Done;
    }

    private bool TryConfigHeader(ReadOnlySpan<byte> p, out ConfigSpaceHeader cfg)
    {
        cfg = default;
        if (p.Length < ConfigSpaceHeader.Length)
        {
            _why = $"payload is {p.Length} bytes, shorter than the {ConfigSpaceHeader.Length}-byte config header";
            return false;
        }
        cfg = ConfigSpaceHeader.Read(p);
        if (cfg.Size > ConfigSpaceHeader.MaxConfigSize || cfg.Offset > ConfigSpaceHeader.MaxConfigSize - cfg.Size)
        {
            _why = $"config range {cfg.Offset}+{cfg.Size} exceeds the {ConfigSpaceHeader.MaxConfigSize}-byte config space";
            return false;
        }
        if (p.Length != ConfigSpaceHeader.Length + cfg.Size)
        {
            _why = $"payload is {p.Length} bytes, expected {ConfigSpaceHeader.Length + cfg.Size} for {cfg.Size} config bytes";
            return false;
        }
        return true;
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
