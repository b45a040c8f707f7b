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
public sealed unsafe partial class VhostUserFrontendTransport : IDriverTransport
{
    private const int PageSize = 4096;

    private VhostUserChannel _channel; // replaced on reconnect, by the monitor thread under _control
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
    private volatile bool _closing;      // Dispose has begun: a reconnect in progress gives up
    private volatile bool _reconnecting; // failures are reported to the reconnect loop, not recorded as the end

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
        var q = new FrontendQueue(queue, size, desc, avail, used, () => _handler, _options.PollMicroseconds, packed, CpuList.ForQueue(_options.QueueCpus, queue), _options.Log);
        try
        {
            try
            {
                SendRing(q);
            }
            catch (VhostUserException e) when (_lost is null && e.Message.Contains(Name(VhostUserRequest.SetVringNum), StringComparison.Ordinal))
            {
                throw new VhostUserException($"{e.Message}: queue {queue} of size {size} is more than the back-end takes; ask for a smaller queue");
            }
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

    // ---------------------------------------------------------------- teardown

    public void Dispose()
    {
        if (_disposed)
            return;
        _closing = true;
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
