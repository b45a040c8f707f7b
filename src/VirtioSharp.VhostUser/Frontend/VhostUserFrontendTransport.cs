using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>
/// A virtio driver transport that drives a vhost-user back-end (qemu-storage-daemon, SPDK, our own
/// server) over its Unix socket. The driver's memory is a memfd mapped into this process and shared
/// with the back-end by SET_MEM_TABLE (one region at guest-physical 0, user address = where it is
/// mapped here), so rings, headers and data buffers live where both sides see them.
/// Notifications are eventfds: <see cref="Notify"/> writes a queue's kick; a thread per queue waits
/// on its call and runs the driver's interrupt handler.
/// </summary>
/// <remarks>
/// vhost-user has no status register, so the status calls are bookkeeping with side effects at the
/// points where the protocol needs messages: FEATURES_OK sends SET_FEATURES and SET_MEM_TABLE,
/// queue setup sends the SET_VRING_* messages, DRIVER_OK enables the rings, and reset stops them
/// (after draining in-flight requests) with GET_VRING_BASE.
/// </remarks>
public sealed unsafe class VhostUserFrontendTransport : IDriverTransport
{
    private const int PageSize = 4096;

    private readonly VhostUserChannel _channel;
    private readonly VhostUserFrontendOptions _options;
    private readonly SafeFdHandle _memfd;
    private readonly Mapping _mapping;
    private readonly Lock _control = new();
    private readonly FrontendQueue?[] _queues;
    private readonly EventFd _monitorWake = EventFd.Create();
    private readonly Thread _monitor;
    private IInterruptHandler? _handler;
    private DeviceStatus _status;
    private ulong _driverFeatures;
    private volatile string? _lost;
    private volatile bool _disposed;
    private bool _peerClosed; // the back-end hung up (rather than timing out or answering wrongly)

    private VhostUserFrontendTransport(string path, VhostUserChannel channel, VhostUserFrontendOptions options, SafeFdHandle memfd, Mapping mapping, ulong size)
    {
        SocketPath = path;
        _channel = channel;
        _options = options;
        _memfd = memfd;
        _mapping = mapping;
        MemorySize = size;
        Memory = new GuestMemory(new GuestRegion(0, size, mapping.Address, (ulong)mapping.Address));
        // Page 0 stays unused, so a buffer address of 0 never names real data.
        Allocator = new GuestAllocator(Memory, PageSize, size - PageSize);
        _queues = new FrontendQueue?[256]; // ring indices are 8 bits in SET_VRING_KICK/CALL
        _monitor = new Thread(Monitor) { IsBackground = true, Name = "vhost-user-monitor" };
    }

    /// <summary>
    /// Connects to the back-end at <paramref name="socketPath"/>, negotiates protocol features and takes
    /// ownership (SET_OWNER). Throws <see cref="VhostUserException"/> with one clear line on failure.
    /// </summary>
    public static VhostUserFrontendTransport Connect(string socketPath, VhostUserFrontendOptions? options = null)
    {
        options ??= new VhostUserFrontendOptions();
        if (options.MemorySize < 2 * PageSize)
            throw new ArgumentOutOfRangeException(nameof(options), "shared memory must be at least 8 KiB");
        var size = (options.MemorySize + PageSize - 1) & ~(ulong)(PageSize - 1);
        // A back-end serves one front-end at a time; one still tearing down the previous session may
        // close a new connection at once. That is worth a few retries; anything else is not.
        var deadline = Environment.TickCount64 + (long)options.ReplyTimeout.TotalMilliseconds;
        while (true)
        {
            try
            {
                return TryConnect(socketPath, options, size);
            }
            catch (BusyException) when (Environment.TickCount64 < deadline)
            {
                Thread.Sleep(20);
            }
            catch (BusyException e)
            {
                throw new VhostUserException(e.Message);
            }
        }
    }

    /// <summary>The back-end closed the connection before answering anything.</summary>
    private sealed class BusyException(string message) : Exception(message);

    private static VhostUserFrontendTransport TryConnect(string socketPath, VhostUserFrontendOptions options, ulong size)
    {
        var channel = Open(socketPath);
        // A back-end that stops halfway through a message must not block us for good either.
        channel.Socket.SetTimeouts(options.ReplyTimeout);
        SafeFdHandle? memfd = null;
        Mapping? mapping = null;
        VhostUserFrontendTransport? transport = null;
        try
        {
            memfd = MemFd.Create("virtiosharp-guest-memory", size, sealSize: true); // the back-end can trust its size
            mapping = Mapping.Map(memfd, 0, size);
            transport = new VhostUserFrontendTransport(socketPath, channel, options, memfd, mapping, size);
            transport.Handshake();
            transport._monitor.Start();
            return transport;
        }
        catch
        {
            if (transport is not null)
                transport.Dispose();
            else
            {
                mapping?.Dispose();
                memfd?.Dispose();
                channel.Dispose();
            }
            throw;
        }
    }

    private static VhostUserChannel Open(string path)
    {
        if (UnixFdSocket.TryConnect(path, out var socket, out var errno))
            return new VhostUserChannel(socket!);
        var kind = FileStatus.KindOf(path);
        var why = errno switch
        {
            _ when kind is FileKind.Regular or FileKind.Other => "it is not a socket",
            2 => "no such socket",                  // ENOENT
            111 => "nothing is listening there",    // ECONNREFUSED
            13 => "permission denied",              // EACCES
            _ => Errno.Describe(errno),
        };
        throw new VhostUserException($"cannot connect to vhost-user socket '{path}': {why}");
    }

    public string SocketPath { get; }
    public GuestMemory Memory { get; }
    public GuestAllocator Allocator { get; }
    public ulong MemorySize { get; }
    public uint DeviceId => _options.DeviceId;
    /// <summary>vhost-user has no config generation counter; the config is fetched anew on every read.</summary>
    public uint ConfigGeneration => 0;

    /// <summary>GET_FEATURES as the back-end answered it, including VHOST_USER_F_PROTOCOL_FEATURES (bit 30).</summary>
    public ulong BackendFeatures { get; private set; }
    /// <summary>Protocol features the back-end offered (GET_PROTOCOL_FEATURES), 0 without bit 30.</summary>
    public ulong BackendProtocolFeatures { get; private set; }
    /// <summary>Protocol features both sides use.</summary>
    public ulong ProtocolFeatures { get; private set; }
    /// <summary>Queues the back-end supports (GET_QUEUE_NUM), or null without the MQ protocol feature.</summary>
    public int? BackendQueueCount { get; private set; }
    /// <summary>Null while the connection works; otherwise why it was given up.</summary>
    public string? Failure => _lost;

    private bool HasProtocolFeature(int bit) => VhostUserFeatures.Has(ProtocolFeatures, bit);
    private bool ProtocolFeaturesNegotiated => (BackendFeatures & VhostUserFeatures.ProtocolFeatures) != 0;
    private int ReplyTimeoutMs => (int)Math.Clamp(_options.ReplyTimeout.TotalMilliseconds, 1, int.MaxValue);

    // ---------------------------------------------------------------- connection setup

    private void Handshake()
    {
        try
        {
            BackendFeatures = RequestU64(VhostUserRequest.GetFeatures);
        }
        catch (VhostUserException) when (_peerClosed)
        {
            throw new BusyException($"vhost-user back-end at '{SocketPath}' closed every connection before answering (is another front-end connected?)");
        }
        if (ProtocolFeaturesNegotiated)
        {
            BackendProtocolFeatures = RequestU64(VhostUserRequest.GetProtocolFeatures);
            ProtocolFeatures = BackendProtocolFeatures & _options.ProtocolFeatures;
            SendU64(VhostUserRequest.SetProtocolFeatures, ProtocolFeatures, ack: false); // REPLY_ACK starts after this
            if (HasProtocolFeature(VhostUserFeatures.Mq))
            {
                var queues = RequestU64(VhostUserRequest.GetQueueNum);
                if (queues == 0 || queues > 256)
                    throw Lose($"back-end reports {queues} queues (GET_QUEUE_NUM); expected 1..256");
                BackendQueueCount = (int)queues;
            }
        }
        Send(VhostUserRequest.SetOwner, [], ack: true);
        _options.Log.Debug($"vhost-user: connected to {SocketPath}: features 0x{BackendFeatures:x}, protocol features {VhostUserFeatures.DescribeProtocol(ProtocolFeatures)}");
    }

    // ---------------------------------------------------------------- IDriverTransport

    public void Reset()
    {
        StopRings();
        _status = DeviceStatus.None;
        _driverFeatures = 0;
    }

    public DeviceStatus GetStatus() => _status | (_lost is null ? DeviceStatus.None : DeviceStatus.DeviceNeedsReset);

    public void SetStatus(DeviceStatus status)
    {
        if (status == DeviceStatus.None)
        {
            Reset();
            return;
        }
        var added = status & ~_status;
        if ((added & DeviceStatus.FeaturesOk) != 0 && !AcceptFeatures())
            status &= ~DeviceStatus.FeaturesOk; // 3.1.1 step 6: the driver sees it did not stick
        if ((added & DeviceStatus.DriverOk) != 0)
            EnableRings();
        _status = status;
    }

    public ulong GetDeviceFeatures() => BackendFeatures & ~VhostUserFeatures.ProtocolFeatures;

    public void SetDriverFeatures(ulong features) => _driverFeatures = features;

    public int GetMaxQueueSize(int queue)
    {
        if (queue < 0 || queue >= _queues.Length || (BackendQueueCount is { } n && queue >= n))
            return 0;
        return _options.MaxQueueSize;
    }

    public void SetupQueue(int queue, int size, ulong descriptorTable, ulong driverArea, ulong deviceArea)
    {
        if (GetMaxQueueSize(queue) == 0)
            throw new VirtioDeviceException($"back-end has no queue {queue}");
        if (_queues[queue] is not null)
            throw new VirtioDeviceException($"queue {queue} is already set up");
        // Ring addresses go to the back-end as our virtual addresses (no IOMMU negotiated).
        var packed = VirtioFeatures.Has(_driverFeatures, VirtioFeatures.RingPacked);
        var (descBytes, driverBytes, deviceBytes) = Backend.VringFormat.PartSizes(packed, size);
        var desc = ToUser(descriptorTable, descBytes);
        var avail = ToUser(driverArea, driverBytes);
        var used = ToUser(deviceArea, deviceBytes);
        // A packed ring keeps no indices in memory (2.8): the progress check does not watch it.
        var q = new FrontendQueue(queue, size, packed ? 0 : (nint)avail, packed ? 0 : (nint)used, () => _handler);
        try
        {
            Span<byte> payload = stackalloc byte[VringAddress.Length];
            new VringState((uint)queue, (uint)size).Write(payload);
            try
            {
                Send(VhostUserRequest.SetVringNum, payload[..VringState.Length], ack: true);
            }
            catch (VhostUserException e) when (_lost is null)
            {
                throw new VhostUserException($"{e.Message}: queue {queue} of size {size} is more than the back-end takes; ask for a smaller queue");
            }
            new VringState((uint)queue, packed ? Backend.VringFormat.PackedInitialBase : 0).Write(payload);
            Send(VhostUserRequest.SetVringBase, payload[..VringState.Length], ack: true);
            new VringAddress((uint)queue, 0, desc, used, avail, 0).Write(payload);
            Send(VhostUserRequest.SetVringAddr, payload, ack: true);
            // The call eventfd first, so the ring never runs without a way to signal us.
            Span<byte> u64 = stackalloc byte[8];
            U64Payload.Write(u64, (ulong)queue);
            Send(VhostUserRequest.SetVringCall, u64, ack: true, fds: [q.Call.Handle]);
            Send(VhostUserRequest.SetVringKick, u64, ack: true, fds: [q.Kick.Handle]);
        }
        catch
        {
            q.Dispose();
            throw;
        }
        q.LastProgress = Environment.TickCount64;
        q.LastSeenUsed = q.UsedIndex;
        q.Start();
        _queues[queue] = q;
    }

    public void Notify(int queue)
    {
        // 2.7.13.4 via vhost-user: the kick eventfd is the QueueNotify register.
        if ((uint)queue < (uint)_queues.Length && _queues[queue] is { } q)
            q.Kick.Signal();
    }

    public void ReadConfig(int offset, Span<byte> destination)
    {
        if (!HasProtocolFeature(VhostUserFeatures.Config))
            throw new VirtioDeviceException("back-end does not offer the CONFIG protocol feature, so the device configuration cannot be read");
        var length = offset + destination.Length;
        if (offset < 0 || length > ConfigSpaceHeader.MaxConfigSize)
            throw new ArgumentOutOfRangeException(nameof(offset));
        // Back-ends answer from offset 0 (libvhost-user ignores the offset), so ask for [0, end).
        Span<byte> request = stackalloc byte[ConfigSpaceHeader.Length + length];
        request.Clear();
        new ConfigSpaceHeader(0, (uint)length, 0).Write(request);
        lock (_control)
        {
            var reply = Request(VhostUserRequest.GetConfig, request);
            var replyLength = reply.Length;
            // The reply's size must match the request; size 0 means the back-end refused.
            if (replyLength != request.Length || ConfigSpaceHeader.Read(reply).Size != (uint)length)
                throw Lose(replyLength <= ConfigSpaceHeader.Length
                    ? "back-end refused GET_CONFIG"
                    : $"back-end answered GET_CONFIG with {replyLength} bytes; expected {request.Length}");
            reply.Slice(ConfigSpaceHeader.Length + offset, destination.Length).CopyTo(destination);
        }
    }

    public void SetInterruptHandler(IInterruptHandler handler)
    {
        _handler = handler;
        if (_lost is { } reason)
            handler.OnDeviceLost(reason);
    }

    // ---------------------------------------------------------------- status side effects

    /// <summary>FEATURES_OK: SET_FEATURES (plus bit 30 when offered) and the memory table. False if the back-end refused.</summary>
    private bool AcceptFeatures()
    {
        var offered = GetDeviceFeatures();
        if ((_driverFeatures & ~offered) != 0)
        {
            _options.Log.Warn($"vhost-user: driver asked for features 0x{_driverFeatures & ~offered:x} the back-end does not offer");
            return false;
        }
        var features = _driverFeatures | (BackendFeatures & VhostUserFeatures.ProtocolFeatures);
        try
        {
            SendU64(VhostUserRequest.SetFeatures, features, ack: true);
            if (!HasProtocolFeature(VhostUserFeatures.ReplyAck))
                RequestU64(VhostUserRequest.GetFeatures); // without REPLY_ACK, a request with a reply shows the back-end is still there
        }
        catch (VhostUserException e)
        {
            _options.Log.Warn($"vhost-user: SET_FEATURES failed: {e.Message}");
            return false;
        }
        SendMemoryTable();
        return true;
    }

    private void SendMemoryTable()
    {
        Span<byte> payload = stackalloc byte[MemoryTablePayload.LengthFor(1)];
        MemoryTablePayload.Write(payload, [new MemoryRegionDescription(0, MemorySize, (ulong)_mapping.Address, 0)]);
        Send(VhostUserRequest.SetMemTable, payload, ack: true, fds: [_memfd]);
    }

    /// <summary>DRIVER_OK: with protocol features the rings start disabled, so enable each one set up.</summary>
    private void EnableRings()
    {
        Span<byte> payload = stackalloc byte[VringState.Length];
        foreach (var q in _queues)
        {
            if (q is null || q.Enabled)
                continue;
            if (ProtocolFeaturesNegotiated)
            {
                new VringState((uint)q.Index, 1).Write(payload);
                Send(VhostUserRequest.SetVringEnable, payload, ack: true);
            }
            q.Enabled = true;
        }
    }

    /// <summary>
    /// Waits (bounded) until every request made available has been used and handed to the driver,
    /// then stops each ring with GET_VRING_BASE and ends its call thread.
    /// </summary>
    private void StopRings()
    {
        var any = false;
        foreach (var q in _queues)
            any |= q is not null;
        if (!any)
            return;
        Drain();
        Span<byte> payload = stackalloc byte[VringState.Length];
        foreach (var q in _queues)
        {
            if (q is null)
                continue;
            if (_lost is null)
            {
                try
                {
                    new VringState((uint)q.Index, 0).Write(payload);
                    var reply = Request(VhostUserRequest.GetVringBase, payload);
                    if (reply.Length >= VringState.Length)
                        _options.Log.Debug($"vhost-user: queue {q.Index} stopped at available index {VringState.Read(reply).Num}");
                }
                catch (VhostUserException)
                {
                    // Lose() has recorded why; the remaining rings are gone with the connection.
                }
            }
            _queues[q.Index] = null;
            q.Dispose();
        }
    }

    private void Drain()
    {
        var deadline = Environment.TickCount64 + (long)_options.DrainTimeout.TotalMilliseconds;
        while (_lost is null)
        {
            var inFlight = 0;
            foreach (var q in _queues)
                inFlight += q?.InFlight ?? 0;
            if (inFlight == 0)
                break;
            if (Environment.TickCount64 >= deadline)
            {
                _options.Log.Warn($"vhost-user: {inFlight} requests still in flight after {_options.DrainTimeout.TotalSeconds:0.#} s; stopping anyway");
                break;
            }
            Thread.Sleep(1);
        }
        // Hand the driver whatever was used but not yet reaped, before the call threads end.
        if (_handler is { } handler)
        {
            foreach (var q in _queues)
            {
                if (q is not null)
                    handler.OnUsedBuffers(q.Index);
            }
        }
    }

    // ---------------------------------------------------------------- loss detection

    /// <summary>
    /// Watches the socket for hang-up (the back-end went away) and, once a second, every queue for
    /// progress: requests outstanding and the used index unchanged for too long means a stuck back-end.
    /// </summary>
    private void Monitor()
    {
        Span<PollFd> fds = stackalloc PollFd[2];
        var progressMs = (long)_options.ProgressTimeout.TotalMilliseconds;
        while (!_disposed && _lost is null)
        {
            // Only hang-up on the socket: replies are read by the control path, never here.
            fds[0] = new PollFd(_channel.Socket.Fd, PollFd.RdHup);
            fds[1] = new PollFd(_monitorWake.Fd);
            int n;
            try
            {
                n = FdPoll.Wait(fds, 1000);
            }
            catch (NativeCallException e)
            {
                Lose($"vhost-user connection failed: {e.Message}");
                return;
            }
            if (_disposed)
                return;
            if (n > 0 && fds[0].Ready)
            {
                Lose("vhost-user back-end closed the connection");
                return;
            }
            if (progressMs <= 0)
                continue;
            var now = Environment.TickCount64;
            foreach (var q in _queues)
            {
                if (q is null)
                    continue;
                var used = q.UsedIndex;
                var inFlight = q.InFlight;
                if (used != q.LastSeenUsed || inFlight == 0)
                {
                    q.LastSeenUsed = used;
                    q.LastProgress = now;
                }
                else if (now - q.LastProgress > progressMs)
                {
                    Lose($"vhost-user back-end made no progress on queue {q.Index} for {_options.ProgressTimeout.TotalSeconds:0.#} s with {inFlight} requests outstanding");
                    return;
                }
            }
        }
    }

    /// <summary>Records that the back-end is gone, tells the driver once, and returns an exception to throw.</summary>
    private VhostUserException Lose(string reason)
    {
        var first = Interlocked.CompareExchange(ref _lost, reason, null) is null;
        if (first && !_disposed)
        {
            _options.Log.Error(reason);
            _channel.Socket.Shutdown();
            _handler?.OnDeviceLost(reason);
        }
        return new VhostUserException(_lost ?? reason);
    }

    // ---------------------------------------------------------------- messages

    private void SendU64(VhostUserRequest request, ulong value, bool ack)
    {
        Span<byte> payload = stackalloc byte[8];
        U64Payload.Write(payload, value);
        Send(request, payload, ack);
    }

    /// <summary>Sends a request; with REPLY_ACK negotiated and <paramref name="ack"/>, waits for the back-end's verdict.</summary>
    private void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, bool ack, ReadOnlySpan<SafeFdHandle> fds = default)
    {
        var needReply = ack && HasProtocolFeature(VhostUserFeatures.ReplyAck);
        lock (_control)
        {
            Transmit(request, payload, fds, needReply);
            if (!needReply)
                return;
            var reply = ReceiveReply(request);
            if (reply.Length != U64Payload.Length)
                throw Lose($"back-end acknowledged {Name(request)} with a {reply.Length}-byte payload; expected {U64Payload.Length}");
            var verdict = U64Payload.Read(reply);
            if (verdict != 0)
                throw new VhostUserException($"back-end refused {Name(request)} (reply {verdict})");
        }
    }

    private ulong RequestU64(VhostUserRequest request)
    {
        lock (_control)
        {
            var reply = Request(request, []);
            if (reply.Length != U64Payload.Length)
                throw Lose($"back-end answered {Name(request)} with a {reply.Length}-byte payload; expected {U64Payload.Length}");
            return U64Payload.Read(reply);
        }
    }

    /// <summary>
    /// Sends a request that always has a reply and returns the reply payload. The span is valid until
    /// the next message, so callers hold <see cref="_control"/> while they read it.
    /// </summary>
    private ReadOnlySpan<byte> Request(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        lock (_control)
        {
            Transmit(request, payload, default, needReply: false);
            return ReceiveReply(request);
        }
    }

    private void Transmit(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeFdHandle> fds, bool needReply)
    {
        ThrowIfUnusable();
        try
        {
            _channel.Send(VhostUserHeader.ForRequest(request, payload.Length, needReply), payload, fds);
        }
        catch (IOException e)
        {
            _peerClosed = true;
            throw Lose($"vhost-user back-end closed the connection (sending {Name(request)}: {e.Message})");
        }
    }

    /// <summary>Waits (bounded) for the reply to <paramref name="request"/>; any failure loses the connection.</summary>
    private ReadOnlySpan<byte> ReceiveReply(VhostUserRequest request)
    {
        bool ready;
        try
        {
            ready = FdPoll.WaitReadable(_channel.Socket.Handle, ReplyTimeoutMs);
        }
        catch (Exception e) when (e is NativeCallException or ObjectDisposedException)
        {
            throw Lose($"vhost-user connection failed waiting for the reply to {Name(request)}: {e.Message}");
        }
        if (!ready)
            throw Lose($"vhost-user back-end did not answer {Name(request)} within {_options.ReplyTimeout.TotalSeconds:0.###} s");
        switch (_channel.Receive(out var header, out var problem))
        {
            case ReceiveStatus.Closed when problem is not null:
                // EAGAIN here is our receive timeout in the middle of a message; anything else (a reset) is a hang-up.
                _peerClosed = !problem.Contains($"(errno {Errno.EAGAIN})", StringComparison.Ordinal);
                throw Lose($"vhost-user connection failed reading the reply to {Name(request)}: {problem}");
            case ReceiveStatus.Closed:
                _peerClosed = true;
                throw Lose($"vhost-user back-end closed the connection (waiting for the reply to {Name(request)})");
            case ReceiveStatus.Malformed:
                throw Lose($"vhost-user back-end sent a malformed reply to {Name(request)}: {problem}");
        }
        if (header.Request != request || !header.IsReply)
            throw Lose($"back-end answered {Name(request)} with {header}");
        return _channel.Payload;
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_lost is { } reason)
            throw new VhostUserException(reason);
    }

    private static string Name(VhostUserRequest request) => request.SpecName();

    private ulong ToUser(ulong guestPhysical, ulong length)
    {
        foreach (ref readonly var r in Memory.Regions)
        {
            if (r.Contains(guestPhysical, length))
                return r.UserAddress + (guestPhysical - r.GuestPhysicalAddress);
        }
        throw new ArgumentOutOfRangeException(nameof(guestPhysical), $"ring at 0x{guestPhysical:x} is outside the shared memory");
    }

    // ---------------------------------------------------------------- teardown

    public void Dispose()
    {
        if (_disposed)
            return;
        // Stop the rings politely while the connection still works, then tear everything down.
        if (_lost is null)
        {
            try
            {
                StopRings();
            }
            catch (Exception e) when (e is VhostUserException or ObjectDisposedException)
            {
            }
        }
        _disposed = true;
        _monitorWake.Signal();
        if (_monitor.IsAlive && _monitor != Thread.CurrentThread)
            _monitor.Join();
        foreach (var q in _queues)
            q?.Dispose();
        Array.Clear(_queues);
        _channel.Socket.Shutdown();
        _channel.Dispose();
        _monitorWake.Dispose();
        _mapping.Dispose();
        _memfd.Dispose();
    }
}
