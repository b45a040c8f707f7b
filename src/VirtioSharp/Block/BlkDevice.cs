using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>
/// The virtio-blk device (5.2): turns descriptor chains into backend I/O. Each request goes
/// through three visible steps: <see cref="Parse"/> (where are header, data and status),
/// <see cref="Validate"/> (is the request legal for this device) and <see cref="Execute"/>.
/// It never knows the transport. Queues may be drained concurrently, one thread per queue.
/// </summary>
public sealed unsafe class BlkDevice : IVirtioDevice
{
    private readonly IBlockBackend _backend;
    private readonly BlkDeviceOptions _options;
    private readonly byte[] _config;
    private readonly byte[] _serial = new byte[BlkLayout.IdBytes];
    private readonly IoVec[][] _iovScratch; // per queue, sized by its worker for the ring it drains
    private readonly BlkDiscardSegment[][] _segmentScratch; // per queue: segments copied out of guest memory once
    private ulong _capacitySectors; // read once per request (Volatile); changes when the backend is resized
    private readonly Lock _configLock = new(); // config bytes and generation change together
    private uint _configGeneration;
    private BlkConfig _configRecord;
    private readonly bool _readOnly;
    private readonly BlkInFlight?[] _inFlight; // per queue, made by its worker on first asynchronous use
    private readonly int _iovPerSlot;
    private readonly IAsyncBlockBackend? _async;
    private readonly BlkThrottle? _throttle;
    private ulong _negotiated;

    /// <summary>Most requests one queue keeps in flight on an <see cref="IAsyncBlockBackend"/>; more are served synchronously.</summary>
    public const int MaxAsyncPerQueue = 256;

    /// <summary>HandleChain's answer for a request that is still in flight: no used element yet.</summary>
    private const uint Deferred = uint.MaxValue;

    public BlkDevice(IBlockBackend backend, BlkDeviceOptions? options = null)
    {
        _backend = backend;
        _async = backend as IAsyncBlockBackend;
        _options = options ?? new BlkDeviceOptions();
        _options.Validate();
        _readOnly = _options.ReadOnly || backend.ReadOnly;
        _capacitySectors = backend.Capacity >> BlkLayout.SectorShift;
        Encoding.ASCII.GetBytes(_options.Serial, _serial);
        Breaches = new BreachReporter(_options.Log, _options.Strict);

        // The driver reads seg_max before it picks a queue size, and 2.7.5.3.1 keeps every chain
        // (header + segments + status) within the queue size. A front-end may choose a smaller ring
        // than our maximum (QEMU's vhost-user-blk defaults to 128), so seg_max assumes at most 128.
        var segMax = _options.SegMax != 0 ? _options.SegMax : (uint)Math.Min(_options.QueueSize, 128) - 2;
        var blkSize = Math.Max(backend.BlockSize, BlkLayout.SectorSize);
        var features = VirtioFeatures.Bit(VirtioFeatures.Version1)
            | VirtioFeatures.Bit(VirtioFeatures.BlkSizeMax)
            | VirtioFeatures.Bit(VirtioFeatures.BlkSegMax)
            | VirtioFeatures.Bit(VirtioFeatures.BlkBlkSize)
            | VirtioFeatures.Bit(VirtioFeatures.BlkFlush)
            | VirtioFeatures.Bit(VirtioFeatures.BlkMq);
        if (_readOnly)
            features |= VirtioFeatures.Bit(VirtioFeatures.BlkRo);
        if (!_readOnly && backend.SupportsDiscard)
            features |= VirtioFeatures.Bit(VirtioFeatures.BlkDiscard);
        if (!_readOnly && backend.SupportsWriteZeroes)
            features |= VirtioFeatures.Bit(VirtioFeatures.BlkWriteZeroes);
        if (_options.OfferIndirect)
            features |= VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc);
        if (_options.OfferEventIdx)
            features |= VirtioFeatures.Bit(VirtioFeatures.RingEventIdx);
        if (_options.OfferPacked)
            features |= VirtioFeatures.Bit(VirtioFeatures.RingPacked);
        DeviceFeatures = features;

        _configRecord = new BlkConfig
        {
            Capacity = _capacitySectors,
            SizeMax = _options.SizeMax,
            SegMax = segMax,
            BlkSize = blkSize,
            NumQueues = (ushort)_options.NumQueues,
            MaxDiscardSectors = _options.MaxDiscardSectors,
            MaxDiscardSeg = _options.MaxDiscardSegments,
            DiscardSectorAlignment = blkSize >> BlkLayout.SectorShift,
            MaxWriteZeroesSectors = _options.MaxWriteZeroesSectors,
            MaxWriteZeroesSeg = _options.MaxWriteZeroesSegments,
            WriteZeroesMayUnmap = 1,
        };
        _config = _configRecord.ToBytes();
        Stats = new BlkStats(_options.NumQueues);
        _iovScratch = new IoVec[_options.NumQueues][];
        for (var i = 0; i < _iovScratch.Length; i++)
            _iovScratch[i] = [];
        var maxSegments = (int)Math.Max(Config.MaxDiscardSeg, Config.MaxWriteZeroesSeg);
        _segmentScratch = new BlkDiscardSegment[_options.NumQueues][];
        for (var i = 0; i < _segmentScratch.Length; i++)
            _segmentScratch[i] = new BlkDiscardSegment[maxSegments];
        _inFlight = new BlkInFlight?[_options.NumQueues];
        // A driver keeps to seg_max data segments (5.2.6.1); the slot has room for one more
        // because the status byte may end a buffer that carries data too. A larger chain is
        // still served, synchronously.
        _iovPerSlot = (int)Math.Clamp(segMax + 1, 2u, 257u);
        if (_options.Limits is { Any: true } limits)
            _throttle = new BlkThrottle(limits, _options.NumQueues);
        if (backend is IResizableBackend resizable)
            resizable.CapacityChanged += OnCapacityChanged;
    }

    public uint DeviceId => 2; // 5.2.1
    public ulong DeviceFeatures { get; }
    public int NumQueues => _options.NumQueues;
    public ushort MaxQueueSize => (ushort)_options.QueueSize;
    public int ConfigSize => _config.Length;
    /// <summary>The configuration space now (its capacity changes when the backend is resized).</summary>
    public BlkConfig Config => Volatile.Read(ref _configRecord);
    /// <summary>2.5.1 / 4.2.2: changes whenever the configuration space does.</summary>
    public uint ConfigGeneration => Volatile.Read(ref _configGeneration);
    /// <summary>Raised after the configuration space changed (a resize), on the thread that noticed it.</summary>
    public event Action? ConfigChanged;
    /// <summary>The disk's size in 512-byte sectors now.</summary>
    public ulong CapacitySectors => Volatile.Read(ref _capacitySectors);
    public BreachReporter Breaches { get; }
    public ILogSink? Log => _options.Log;
    public ITraceSink? Trace => _options.Trace;
    public BlkStats Stats { get; }
    /// <summary>The disk's limits (<see cref="BlkDeviceOptions.Limits"/>), or null when it has none.</summary>
    public BlkThrottle? Throttle => _throttle;
    public IBlockBackend Backend => _backend;
    public ulong NegotiatedFeatures => Volatile.Read(ref _negotiated);

    public void ReadConfig(int offset, Span<byte> destination)
    {
        // Reads past the end of config space return zeroes (4.2.2: device-specific reads).
        destination.Clear();
        if (offset >= 0 && offset < _config.Length)
        {
            lock (_configLock) // a resize never shows half a capacity
                _config.AsSpan(offset, Math.Min(destination.Length, _config.Length - offset)).CopyTo(destination);
        }
    }

    /// <summary>
    /// The backend's size changed: 5.2.4 capacity (whole blocks of blk_size, in sectors) is updated
    /// for the config space and for the bounds check of every later request at once, the
    /// generation moves (2.5.1), and <see cref="ConfigChanged"/> tells the transport to notify
    /// the driver (4.2.2 InterruptStatus bit 1; vhost-user's config-change message).
    /// </summary>
    private void OnCapacityChanged(ulong bytes)
    {
        var blkSize = Math.Max(_configRecord.BlkSize, BlkLayout.SectorSize);
        var sectors = (bytes - bytes % blkSize) >> BlkLayout.SectorShift;
        lock (_configLock)
        {
            if (sectors == _capacitySectors)
                return;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(_config.AsSpan(BlkConfig.OffCapacity), sectors);
            Volatile.Write(ref _configRecord, _configRecord with { Capacity = sectors });
            Volatile.Write(ref _capacitySectors, sectors);
            _configGeneration++;
        }
        Log.Info($"capacity is now {sectors} sectors ({sectors << BlkLayout.SectorShift} bytes); config generation {ConfigGeneration}");
        ConfigChanged?.Invoke();
    }

    public void WriteConfig(int offset, ReadOnlySpan<byte> source)
    {
        // Only writeback is writable, and only with CONFIG_WCE, which we do not offer.
        Log.Debug($"config write of {source.Length} bytes at {offset} ignored (VIRTIO_BLK_F_CONFIG_WCE not offered)");
    }

    public void Activate(ulong negotiatedFeatures) => Volatile.Write(ref _negotiated, negotiatedFeatures);

    public void Reset() => Volatile.Write(ref _negotiated, 0);

    private bool Negotiated(int bit) => VirtioFeatures.Has(_negotiated, bit);

    public QueueOutcome ProcessQueue(IDeviceQueue queue) => ProcessQueue(queue, null);

    public QueueOutcome ProcessQueue(IDeviceQueue queue, IQueueIo? io)
    {
        if ((uint)queue.Index >= (uint)_iovScratch.Length)
            return QueueOutcome.NeedsReset;
        // strict=fail: a breach seen elsewhere (another queue, the transport) already stopped
        // the device; take nothing more until the driver resets it.
        if (Breaches.ResetRequested)
            return QueueOutcome.NeedsReset;
        var iov = _iovScratch[queue.Index];
        // A chain holds at most queue-size buffers (2.7.5.3.1), so its I/O vectors fit the ring's
        // size: sized at the first drain of a ring, never per request.
        if (iov.Length != queue.Size)
            _iovScratch[queue.Index] = iov = new IoVec[queue.Size];
        queue.DisableNotifications();
        while (true)
        {
            PopResult result = PopResult.Empty;
            var throttled = false;
            // A limited disk takes the next chain only while its limits allow; a delayed one
            // stays in the ring, notifications stay off, and the worker waits QueueWaitTicks.
            while (!(throttled = _throttle != null && _throttle.WaitTicks(queue.Index) > 0)
                && (result = queue.TryPop(out var chain)) == PopResult.Chain)
            {
                var written = HandleChain(queue.Index, chain, iov, io);
                if (written != Deferred)
                    queue.AddUsed(chain.Head, written);
                if (Breaches.ResetRequested)
                    break; // strict=fail: stop at the first breach
            }

            if (result == PopResult.RingCorrupt)
            {
                ReportRingError(queue);
                queue.PublishUsed();
                return QueueOutcome.NeedsReset;
            }
            if (Breaches.ResetRequested)
            {
                queue.PublishUsed();
                return QueueOutcome.NeedsReset;
            }
            if (throttled)
                break;
            if (!queue.EnableNotifications())
                break;
            queue.DisableNotifications();
        }
        return queue.PublishUsed() ? QueueOutcome.Interrupt : QueueOutcome.None;
    }

    /// <summary>Names the ring rule the driver broke, with the indices that show it.</summary>
    private void ReportRingError(IDeviceQueue queue)
    {
        if (queue.Format == VirtqueueFormat.Packed)
        {
            ReportPackedRingError(queue);
            return;
        }
        var value = queue.LastRingErrorValue;
        var at = queue.LastAvailIndex; // TryPop does not move past a corrupt entry
        var slot = at & (queue.Size - 1);
        switch (queue.LastRingError)
        {
            case RingError.AvailIndexTooFarAhead:
                var ahead = (ushort)(value - at);
                if (ahead >= 0x8000)
                    // 2.7.6.1: idx only grows; a value just behind the device's position went backwards.
                    Breaches.Report("2.7.6.1", queue.Index, -1, $"an available idx that never decreases (the device is at {at})",
                        $"avail idx {value}, {(ushort)(at - value)} behind");
                else
                    Breaches.Report("2.7.13.3", queue.Index, -1, $"avail idx at most the queue size {queue.Size} ahead of the device's {at}",
                        $"avail idx {value}, {ahead} ahead");
                break;
            case RingError.HeadOutOfRange:
                Breaches.Report("2.7.6", queue.Index, -1, $"a descriptor chain head below the queue size {queue.Size}",
                    $"head {value} in available ring slot {slot} (avail index {at})");
                break;
            case RingError.HeadInFlight:
                Breaches.Report("2.7.13.2", queue.Index, value, "only heads of free descriptor chains in the available ring",
                    $"head {value}, still in flight, offered again in slot {slot} (avail index {at})");
                break;
            default:
                Breaches.Report("2.7", queue.Index, -1, "a sound ring", $"{queue.LastRingError} ({value})");
                break;
        }
    }

    /// <summary>Names the packed ring rule (2.8) the driver broke, with the slot and wrap counter where it showed.</summary>
    private void ReportPackedRingError(IDeviceQueue queue)
    {
        var value = queue.LastRingErrorValue;
        var at = queue.LastAvailIndex;
        var where = $"slot {at & 0x7fff}, Driver Ring Wrap Counter {at >> 15}";
        switch (queue.LastRingError)
        {
            case RingError.PackedFlagsInconsistent:
                Breaches.Report("2.8.1", queue.Index, -1, "AVAIL equal to the Driver Ring Wrap Counter and USED its inverse in an available descriptor",
                    $"flags 0x{value:x4} ({PackedRing.DescribeFlags((ushort)value)}) at {where}: the descriptor's flags went backwards");
                break;
            case RingError.PackedDescriptorNotAvailable:
                Breaches.Report("2.8.17", queue.Index, -1, "every descriptor of a list made available before its first",
                    $"descriptor in slot {value} of the list at {where} is not marked available");
                break;
            case RingError.PackedChainTooLong:
                Breaches.Report("2.8.17", queue.Index, -1, $"a descriptor list no longer than the queue size {queue.Size}",
                    $"VIRTQ_DESC_F_NEXT on every descriptor from {where}; no buffer id can be found");
                break;
            case RingError.PackedRingOverrun:
                Breaches.Report("2.8.16", queue.Index, -1, "no descriptor made available over one the device has not yet used",
                    $"a list at {where} runs into slots still in flight");
                break;
            case RingError.PackedBufferIdInFlight:
                Breaches.Report("2.8.21.1", queue.Index, value, "a free buffer id for each list made available",
                    $"buffer id {value}, still in flight, made available again at {where}");
                break;
            default:
                Breaches.Report("2.8", queue.Index, -1, "a sound ring", $"{queue.LastRingError} ({value})");
                break;
        }
    }

    /// <summary>
    /// Runs one chain and returns the bytes written into its writable buffers (the used length),
    /// or <see cref="Deferred"/> when its I/O was started on <paramref name="io"/>.
    /// </summary>
    private uint HandleChain(int queue, in DescriptorChain chain, IoVec[] iov, IQueueIo? io)
    {
        var trace = Trace; // a split queue reports the chain, the used element and the status byte
        if (trace is { Active: true } && chain.Format == VirtqueueFormat.Packed)
            TraceChain(trace, queue, chain); // a packed queue narrates its slots; the device names the buffers

        var started = Stopwatch.GetTimestamp();
        if (!Parse(queue, chain, iov, out var req))
        {
            Stats.CountMalformed(queue);
            if (req.Status == null)
                return 0; // 2.7.8: no status byte can be trusted; give the head back with len 0
            *req.Status = (byte)BlkStatus.IoErr;
            return 1;
        }

        req.Started = started;
        var status = Validate(queue, ref req);
        if (status == BlkStatus.Ok)
            _throttle?.Charge((BlkRequestType)req.Header.Type, req.DataLength);
        if (status == BlkStatus.Ok && io != null && trace is not { Active: true } && TryStartAsync(queue, ref req, io))
            return Deferred;
        if (status == BlkStatus.Ok)
            status = Execute(ref req, iov);
        *req.Status = (byte)status;
        var written = status == BlkStatus.Ok ? req.Written + 1 : 1u;
        Stats.Count(queue, req.Header.Type, status, req.DataLength, started);
        if (trace is { Active: true } && chain.Format == VirtqueueFormat.Packed)
            trace.Step("device", $"status byte at 0x{req.StatusAddress:x} = {(byte)status} (VIRTIO_BLK_S_{StatusName(status)})");
        return written;
    }

    private static string StatusName(BlkStatus s) => s switch { BlkStatus.Ok => "OK", BlkStatus.IoErr => "IOERR", _ => "UNSUPP" };

    private static void TraceChain(ITraceSink trace, int queue, in DescriptorChain chain)
    {
        trace.Step("device", $"took the list with buffer id {chain.Head} from the descriptor ring of queue {queue}; its buffers:");
        var i = 0;
        foreach (ref readonly var b in chain.Buffers)
            trace.Step("device", $"  buffer {i++}: addr 0x{b.Address:x} len {b.Length} {(b.Writable ? "device-writable" : "device-readable")}");
    }

    /// <summary>A request located in guest memory: header fields, where the data is, where the status goes.</summary>
    private ref struct ParsedRequest
    {
        public int Queue;               // where the request came from, for breach reports
        public ushort Head;
        public ReadOnlySpan<ChainBuffer> Buffers;
        public BlkRequestHeader Header;
        public byte* Status;
        public ulong StatusAddress;
        public int FirstReadable;       // index of first buffer after the header bytes
        public uint ReadableSkip;       // header bytes still inside that buffer
        public ulong ReadableData;      // device-readable bytes after the header
        public ulong WritableData;      // device-writable bytes before the status byte
        public int ReadableCount;
        public ulong DataLength;
        public uint Written;
        public long Started;            // Stopwatch timestamp when the chain was taken
    }

    /// <summary>
    /// 5.2.6 / 2.7.4: finds the 16-byte header in the first device-readable bytes and the status
    /// in the last device-writable byte, whatever the descriptor layout. False if the chain
    /// cannot carry a request (Status is set when a status byte exists).
    /// </summary>
    private bool Parse(int queue, in DescriptorChain chain, IoVec[] iov, out ParsedRequest req)
    {
        req = default;
        var buffers = chain.Buffers;
        req.Queue = queue;
        req.Head = chain.Head;
        req.Buffers = buffers;
        if (chain.IsStructurallyBroken)
        {
            Breaches.Report(chain.Error.Section(chain.Format), queue, chain.ErrorDescriptor, chain.Error.Expected(), chain.Error.Describe());
            return false;
        }
        if (buffers.Length == 0)
            return false;
        ref readonly var last = ref buffers[^1];
        if (!last.Writable || last.Length == 0 || last.Host == 0)
        {
            Breaches.Report("5.2.6", queue, chain.Head, "a device-writable status byte at the end of the chain",
                last.Writable ? (last.Length == 0 ? "an empty last buffer" : "a last buffer outside guest memory") : "a device-readable last buffer");
            return false;
        }
        req.Status = (byte*)(last.Host + (nint)(last.Length - 1));
        req.StatusAddress = last.Address + last.Length - 1;
        if (chain.Error != ChainError.None)
        {
            Breaches.Report(chain.Error.Section(chain.Format), queue, chain.ErrorDescriptor, chain.Error.Expected(), chain.Error.Describe());
            return false;
        }

        ulong readable = 0, writable = 0;
        var readableCount = 0;
        foreach (ref readonly var b in buffers)
        {
            if (b.Writable)
                writable += b.Length;
            else
            {
                readable += b.Length;
                readableCount++;
            }
        }
        req.ReadableCount = readableCount;
        if (buffers[0].Writable)
        {
            Breaches.Report("5.2.6", queue, chain.Head, "a device-readable request header", "the first buffer is device-writable");
            return false;
        }
        if (readable < BlkLayout.HeaderSize)
        {
            Breaches.Report("5.2.6", queue, chain.Head, $"a device-readable header of {BlkLayout.HeaderSize} bytes", $"{readable} device-readable bytes");
            return false;
        }

        Span<byte> header = stackalloc byte[BlkLayout.HeaderSize];
        var copied = 0;
        var index = 0;
        uint skip = 0;
        while (copied < BlkLayout.HeaderSize)
        {
            ref readonly var b = ref buffers[index];
            var n = (int)Math.Min(b.Length, (uint)(BlkLayout.HeaderSize - copied));
            new ReadOnlySpan<byte>((void*)b.Host, n).CopyTo(header[copied..]);
            copied += n;
            if (n == b.Length) index++;
            else skip = (uint)n;
        }
        req.Header = BlkRequestHeader.Read(header);
        req.FirstReadable = index;
        req.ReadableSkip = skip;
        req.ReadableData = readable - BlkLayout.HeaderSize;
        req.WritableData = writable - 1;
        return true;
    }

    /// <summary>5.2.6.2: decides the status a request earns before any I/O is done.</summary>
    private BlkStatus Validate(int queue, ref ParsedRequest req)
    {
        var type = (BlkRequestType)req.Header.Type;
        if (Breaches.Strict)
            CheckStrict(queue, ref req, type);
        switch (type)
        {
            case BlkRequestType.In:
                req.DataLength = req.WritableData;
                return CheckRange(queue, ref req);
            case BlkRequestType.Out:
                req.DataLength = req.ReadableData;
                if (_readOnly)
                {
                    // 5.2.6.2: IOERR for a write to a read-only device, and write nothing.
                    Breaches.Report("5.2.6.2", queue, req.Head, "no write to a device that offers VIRTIO_BLK_F_RO", $"OUT at sector {req.Header.Sector}");
                    return BlkStatus.IoErr;
                }
                return CheckRange(queue, ref req);
            case BlkRequestType.Flush:
            case BlkRequestType.GetId:
                return BlkStatus.Ok;
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                return ValidateSegments(queue, ref req, type);
            default:
                return BlkStatus.Unsupp;
        }
    }

    /// <summary>
    /// Strict mode only: driver requirements of 5.2.6.1 that do not change the answer
    /// (the device can serve the request) but that a driver author wants to hear about.
    /// </summary>
    private void CheckStrict(int queue, ref ParsedRequest req, BlkRequestType type)
    {
        int head = req.Head;
        switch (type)
        {
            case BlkRequestType.In:
            case BlkRequestType.GetId:
                if (req.ReadableData != 0)
                    Breaches.Report("5.2.6", queue, head, $"only the 16-byte header device-readable in a {TypeName(type)} request", $"{req.ReadableData} more device-readable bytes");
                if (type == BlkRequestType.GetId && req.WritableData != BlkLayout.IdBytes)
                    Breaches.Report("5.2.6.1", queue, head, "a GET_ID data buffer of 20 bytes", $"{req.WritableData} bytes");
                break;
            default:
                // Requests whose data the device reads: the status byte is the only writable byte.
                if (req.WritableData != 0)
                    Breaches.Report("5.2.6", queue, head, $"the status byte as the only device-writable byte of a {TypeName(type)} request", $"{req.WritableData} device-writable bytes before it");
                break;
        }
        if (type == BlkRequestType.Flush && req.Header.Sector != 0)
            Breaches.Report("5.2.6.1", queue, head, "sector 0 in a FLUSH request", $"sector {req.Header.Sector}");
        if (type == BlkRequestType.Flush && req.ReadableData != 0)
            Breaches.Report("5.2.6.1", queue, head, "no data in a FLUSH request (SHOULD NOT)", $"{req.ReadableData} bytes of data");
    }

    private static string TypeName(BlkRequestType t) => t switch
    {
        BlkRequestType.In => "IN",
        BlkRequestType.Out => "OUT",
        BlkRequestType.Flush => "FLUSH",
        BlkRequestType.GetId => "GET_ID",
        BlkRequestType.Discard => "DISCARD",
        BlkRequestType.WriteZeroes => "WRITE_ZEROES",
        _ => $"type {(uint)t}",
    };

    private BlkStatus CheckRange(int queue, ref ParsedRequest req)
    {
        // 5.2.6.1: data length of IN/OUT is a multiple of 512.
        if ((req.DataLength & (BlkLayout.SectorSize - 1)) != 0)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, "IN/OUT data length a multiple of 512", $"{req.DataLength} bytes");
            return BlkStatus.IoErr;
        }
        // 2.7.8: the used length is 32 bits. A longer transfer is refused, never cut short.
        if (req.DataLength > uint.MaxValue - 1)
        {
            Breaches.Report("2.7.8", queue, req.Head, "a transfer whose length fits the 32-bit used length", $"{req.DataLength} bytes");
            return BlkStatus.IoErr;
        }
        // 5.2.3: with VIRTIO_BLK_F_SIZE_MAX offered, no data segment is longer than size_max.
        if (Config.SizeMax != 0 && (DeviceFeatures & VirtioFeatures.Bit(VirtioFeatures.BlkSizeMax)) != 0
            && LongestDataSegment(ref req) is var longest && longest > Config.SizeMax)
        {
            Breaches.Report("5.2.3", queue, req.Head, $"data segments of at most size_max {Config.SizeMax} bytes", $"a segment of {longest} bytes");
            return BlkStatus.IoErr;
        }
        // 5.2.6.1: no read or write beyond capacity (overflow-safe), as it is now (a resize may move it).
        var sectors = req.DataLength >> BlkLayout.SectorShift;
        var capacity = Volatile.Read(ref _capacitySectors);
        if (req.Header.Sector > capacity || sectors > capacity - req.Header.Sector)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, $"sectors within capacity {capacity}", $"sector {req.Header.Sector} + {sectors}");
            return BlkStatus.IoErr;
        }
        return BlkStatus.Ok;
    }

    private BlkStatus ValidateSegments(int queue, ref ParsedRequest req, BlkRequestType type)
    {
        var discard = type == BlkRequestType.Discard;
        var feature = discard ? VirtioFeatures.BlkDiscard : VirtioFeatures.BlkWriteZeroes;
        if (!Negotiated(feature) || _readOnly)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, $"{VirtioFeatures.Name(feature)} negotiated before {TypeName(type)} requests", "the feature not negotiated");
            return BlkStatus.Unsupp;
        }
        var bytes = req.ReadableData;
        if (bytes == 0 || bytes % BlkLayout.DiscardSegmentSize != 0)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, "data a non-empty multiple of 16-byte segments", $"{bytes} bytes");
            return BlkStatus.IoErr;
        }
        var count = bytes / BlkLayout.DiscardSegmentSize;
        var maxSeg = discard ? Config.MaxDiscardSeg : Config.MaxWriteZeroesSeg;
        if (count > maxSeg)
        {
            Breaches.Report("5.2.6.1", queue, req.Head, $"at most {maxSeg} {TypeName(type)} segments (config {(discard ? "max_discard_seg" : "max_write_zeroes_seg")})", $"{count} segments");
            return BlkStatus.IoErr;
        }
        // Each segment is read from guest memory once; everything after works on the copy, so
        // the driver cannot change a segment between its check and its use.
        var segments = _segmentScratch[queue].AsSpan(0, (int)count);
        Span<byte> raw = stackalloc byte[BlkLayout.DiscardSegmentSize];
        for (var s = 0; s < segments.Length; s++)
        {
            CopyReadable(ref req, (ulong)s * BlkLayout.DiscardSegmentSize, raw);
            segments[s] = BlkDiscardSegment.Read(raw);
        }
        // 5.2.6.2: unknown flags -> UNSUPP; unmap on a discard -> UNSUPP. Every segment is
        // checked before any is executed, so a refused request has changed nothing.
        for (var s = 0; s < segments.Length; s++)
        {
            var flags = segments[s].Flags;
            if ((flags & ~BlkLayout.SegmentFlagUnmap) != 0 || (discard && flags != 0))
            {
                Breaches.Report((flags & ~BlkLayout.SegmentFlagUnmap) != 0 ? "5.2.6.2" : "5.2.6.1", req.Queue, req.Head,
                    discard ? "discard segment flags 0 (no unmap)" : "write-zeroes segment flags 0 or unmap", $"flags 0x{flags:x} in segment {s}");
                return BlkStatus.Unsupp;
            }
        }
        var maxSectors = discard ? Config.MaxDiscardSectors : Config.MaxWriteZeroesSectors;
        var capacity = Volatile.Read(ref _capacitySectors);
        for (var s = 0; s < segments.Length; s++)
        {
            var seg = segments[s];
            if (seg.NumSectors > maxSectors || seg.Sector > capacity || seg.NumSectors > capacity - seg.Sector)
            {
                Breaches.Report("5.2.6.1", req.Queue, req.Head, $"segment within capacity {capacity} and at most {maxSectors} sectors (config {(discard ? "max_discard_sectors" : "max_write_zeroes_sectors")})",
                    $"sector {seg.Sector} + {seg.NumSectors} in segment {s}");
                return BlkStatus.IoErr;
            }
        }
        req.DataLength = 0;
        return BlkStatus.Ok;
    }

    /// <summary>
    /// Starts a validated request on an <see cref="IAsyncBlockBackend"/>, which completes it later
    /// through <paramref name="io"/>. False leaves the request to <see cref="Execute"/>: what the
    /// backend refuses (the file backend takes reads and flushes only: a buffered write lands in
    /// the page cache without waiting for the disk, and io_uring runs buffered writes to one file
    /// on its worker threads one at a time, so handing them over buys no concurrency and costs a
    /// hand-off, docs/benchmarks.md, section 2.1), GET_ID, discard and write-zeroes of more than
    /// one segment, more data buffers than a slot holds, or no free slot.
    /// </summary>
    private bool TryStartAsync(int queue, ref ParsedRequest req, IQueueIo io)
    {
        if (_async is not { } backend)
            return false;
        var type = (BlkRequestType)req.Header.Type;
        var offset = req.Header.Sector << BlkLayout.SectorShift;
        var length = req.DataLength;
        var flags = BlkIoFlags.None;
        BlkIoKind kind;
        int span;
        switch (type)
        {
            case BlkRequestType.In:
                kind = BlkIoKind.Read;
                span = req.Buffers.Length - req.ReadableCount;
                break;
            case BlkRequestType.Out:
                kind = BlkIoKind.Write;
                span = req.ReadableCount - req.FirstReadable;
                // 5.2.6.2: FLUSH offered but not negotiated means every write is stable at completion.
                if (!Negotiated(VirtioFeatures.BlkFlush))
                    flags = BlkIoFlags.Fua;
                break;
            case BlkRequestType.Flush:
                kind = BlkIoKind.Flush;
                span = 0;
                offset = 0;
                length = 0;
                break;
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                {
                    // One segment, already copied out of guest memory and checked by ValidateSegments.
                    if (req.ReadableData != BlkLayout.DiscardSegmentSize)
                        return false;
                    var seg = _segmentScratch[queue][0];
                    kind = type == BlkRequestType.Discard ? BlkIoKind.Discard : BlkIoKind.WriteZeroes;
                    if ((seg.Flags & BlkLayout.SegmentFlagUnmap) != 0)
                        flags = BlkIoFlags.MayUnmap;
                    offset = seg.Sector << BlkLayout.SectorShift;
                    length = (ulong)seg.NumSectors << BlkLayout.SectorShift;
                    span = 0;
                    break;
                }
            default:
                return false;
        }
        if (type != BlkRequestType.Flush && (length == 0 || length > int.MaxValue))
            return false;
        if (span > _iovPerSlot)
            return false;
        var inFlight = _inFlight[queue] ??= new BlkInFlight(MaxQueueSize, Math.Min((int)MaxQueueSize, MaxAsyncPerQueue), _iovPerSlot);
        if (!inFlight.TryRent(req.Head, out var slot))
            return false;
        var count = kind switch
        {
            BlkIoKind.Read => BuildIoVec(ref req, inFlight.IovSpan(slot), writable: true, length),
            BlkIoKind.Write => BuildIoVec(ref req, inFlight.IovSpan(slot), writable: false, length),
            _ => 0,
        };
        var op = new BlkIo
        {
            Kind = kind,
            Flags = flags,
            Tag = req.Head,
            Queue = queue,
            Offset = offset,
            Length = (uint)length,
            Iov = inFlight.IovPointer(slot),
            IovCount = count,
        };
        // Tracked before the start: another thread may post the completion before TryStart returns.
        inFlight.Track(req.Head, new BlkInFlight.Entry
        {
            Status = req.Status,
            Offset = offset,
            Length = kind == BlkIoKind.Read || kind == BlkIoKind.Write ? (uint)length : 0,
            Type = (uint)type,
            Slot = slot,
            IovCount = count,
            Started = req.Started,
        });
        if (backend.TryStart(op, io))
            return true;
        inFlight.TryTake(req.Head, out _);
        inFlight.Release(slot);
        return false;
    }

    public bool SupportsQueueIo => _async != null;

    public long QueueWaitTicks(int queue) => _throttle != null && (uint)queue < (uint)_iovScratch.Length ? _throttle.WaitTicks(queue) : 0;

    /// <summary>Requests of <paramref name="queue"/> started on the asynchronous backend and not completed yet.</summary>
    public int QueueIoInFlight(int queue) => (uint)queue < (uint)_inFlight.Length ? _inFlight[queue]?.Count ?? 0 : 0;

    public void CompleteIo(IDeviceQueue queue, ushort tag, int result)
    {
        var inFlight = (uint)queue.Index < (uint)_inFlight.Length ? _inFlight[queue.Index] : null;
        if (inFlight is null || !inFlight.TryTake(tag, out var entry))
        {
            // Only our own tags come back; a stray one is a bug in the worker, not the guest's doing.
            Log.Error($"queue {queue.Index}: a completion for head {tag}, which has no I/O in flight; ignored");
            return;
        }
        var type = (BlkRequestType)entry.Type;
        BlkStatus status;
        if (type == BlkRequestType.Flush)
            // As FileBackend.Flush: a file that cannot be synced (EINVAL) has nothing to make stable.
            status = result >= 0 || result == -Native.Errno.EINVAL ? BlkStatus.Ok : BlkStatus.IoErr;
        else if (result < 0)
            status = BlkStatus.IoErr;
        else if (type == BlkRequestType.In && (uint)result < entry.Length)
            status = FinishShortTransfer(inFlight, entry, (uint)result) ? BlkStatus.Ok : BlkStatus.IoErr;
        else
            status = BlkStatus.Ok;
        _async?.Completed(new BlkIo { Kind = KindOf(type), Tag = tag, Queue = queue.Index, Offset = entry.Offset, Length = entry.Length });
        inFlight.Release(entry.Slot);

        *entry.Status = (byte)status;
        var written = status == BlkStatus.Ok && type == BlkRequestType.In ? entry.Length + 1 : 1u;
        Stats.Count(queue.Index, entry.Type, status, entry.Length, entry.Started);
        Stats.CountAsync(queue.Index);
        queue.AddUsed(tag, written);
    }

    private static BlkIoKind KindOf(BlkRequestType type) => type switch
    {
        BlkRequestType.In => BlkIoKind.Read,
        BlkRequestType.Out => BlkIoKind.Write,
        BlkRequestType.Flush => BlkIoKind.Flush,
        BlkRequestType.Discard => BlkIoKind.Discard,
        _ => BlkIoKind.WriteZeroes,
    };

    /// <summary>
    /// A read that moved fewer bytes than asked (the end of a file that shrank): the rest goes
    /// through the backend synchronously, which zero-fills past the end of the file.
    /// </summary>
    private bool FinishShortTransfer(BlkInFlight inFlight, in BlkInFlight.Entry entry, uint done)
    {
        var iov = inFlight.IovSpan(entry.Slot)[..entry.IovCount];
        var skip = (nuint)done;
        var first = 0;
        while (first < iov.Length && skip >= iov[first].Length)
            skip -= iov[first++].Length;
        if (first == iov.Length)
            return true;
        iov[first] = new IoVec(iov[first].Base + (nint)skip, iov[first].Length - skip);
        var rest = iov[first..];
        var offset = entry.Offset + done;
        return _backend.Read(offset, rest);
    }

    private BlkStatus Execute(ref ParsedRequest req, IoVec[] iov)
    {
        var trace = Trace;
        switch ((BlkRequestType)req.Header.Type)
        {
            case BlkRequestType.In:
                {
                    var n = BuildIoVec(ref req, iov, writable: true, req.DataLength);
                    if (trace is { Active: true })
                        trace.Event(RingEvents.Backend(req.Queue, req.Head, "read", req.Header.Sector << BlkLayout.SectorShift, req.DataLength, $"backend read: {req.DataLength} bytes at offset {req.Header.Sector << BlkLayout.SectorShift} of the {_backend.Description}, straight into guest RAM ({n} iovec{(n == 1 ? "" : "s")})"));
                    if (!_backend.Read(req.Header.Sector << BlkLayout.SectorShift, iov.AsSpan(0, n)))
                        return BlkStatus.IoErr;
                    req.Written = (uint)req.DataLength;
                    return BlkStatus.Ok;
                }
            case BlkRequestType.Out:
                {
                    var n = BuildIoVec(ref req, iov, writable: false, req.DataLength);
                    if (trace is { Active: true })
                        trace.Event(RingEvents.Backend(req.Queue, req.Head, "write", req.Header.Sector << BlkLayout.SectorShift, req.DataLength, $"backend write: {req.DataLength} bytes at offset {req.Header.Sector << BlkLayout.SectorShift} of the {_backend.Description}, straight from guest RAM ({n} iovec{(n == 1 ? "" : "s")})"));
                    if (!_backend.Write(req.Header.Sector << BlkLayout.SectorShift, iov.AsSpan(0, n)))
                        return BlkStatus.IoErr;
                    // 5.2.6.2: FLUSH offered but not negotiated means every write is stable at completion.
                    if (!Negotiated(VirtioFeatures.BlkFlush) && !_backend.Flush())
                        return BlkStatus.IoErr;
                    return BlkStatus.Ok;
                }
            case BlkRequestType.Flush:
                if (trace is { Active: true })
                    trace.Event(RingEvents.Backend(req.Queue, req.Head, "flush", 0, 0, $"backend flush (fdatasync) of the {_backend.Description}"));
                return _backend.Flush() ? BlkStatus.Ok : BlkStatus.IoErr;
            case BlkRequestType.GetId:
                {
                    var n = BuildIoVec(ref req, iov, writable: true, Math.Min(req.WritableData, BlkLayout.IdBytes));
                    var copied = 0;
                    for (var i = 0; i < n; i++)
                    {
                        _serial.AsSpan(copied, (int)iov[i].Length).CopyTo(new Span<byte>((void*)iov[i].Base, (int)iov[i].Length));
                        copied += (int)iov[i].Length;
                    }
                    req.Written = (uint)copied;
                    return BlkStatus.Ok;
                }
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                return ExecuteSegments(ref req, (BlkRequestType)req.Header.Type);
            default:
                return BlkStatus.Unsupp;
        }
    }

    /// <summary>Runs the segments ValidateSegments copied out and checked.</summary>
    private BlkStatus ExecuteSegments(ref ParsedRequest req, BlkRequestType type)
    {
        var discard = type == BlkRequestType.Discard;
        var segments = _segmentScratch[req.Queue].AsSpan(0, (int)(req.ReadableData / BlkLayout.DiscardSegmentSize));
        foreach (var seg in segments)
        {
            var offset = seg.Sector << BlkLayout.SectorShift;
            var length = (ulong)seg.NumSectors << BlkLayout.SectorShift;
            if (Trace is { Active: true } trace)
                trace.Event(RingEvents.Backend(req.Queue, req.Head, discard ? "discard" : "write-zeroes", offset, length, $"backend {(discard ? "discard (punch hole)" : "write-zeroes")}: {length} bytes at offset {offset}"));
            var ok = discard ? _backend.Discard(offset, length) : _backend.WriteZeroes(offset, length, (seg.Flags & BlkLayout.SegmentFlagUnmap) != 0);
            if (!ok)
                return BlkStatus.IoErr; // 5.2.6.1: after IOERR the driver assumes nothing about the segments
        }
        return BlkStatus.Ok;
    }

    /// <summary>Copies device-readable bytes after the header, starting <paramref name="offset"/> bytes in.</summary>
    private static void CopyReadable(ref ParsedRequest req, ulong offset, scoped Span<byte> destination)
    {
        // Parse checked every buffer is inside guest memory; the caller keeps
        // offset + destination.Length within ReadableData.
        var written = 0;
        var pos = 0UL;
        for (var i = req.FirstReadable; i < req.ReadableCount && written < destination.Length; i++)
        {
            var b = req.Buffers[i];
            var skip = i == req.FirstReadable ? req.ReadableSkip : 0u;
            var avail = (ulong)(b.Length - skip);
            if (pos + avail > offset)
            {
                var start = offset > pos ? offset - pos : 0;
                var take = (int)Math.Min(avail - start, (ulong)(destination.Length - written));
                new ReadOnlySpan<byte>((void*)(b.Host + (nint)(skip + start)), take).CopyTo(destination[written..]);
                written += take;
                offset += (ulong)take;
            }
            pos += avail;
        }
    }

    /// <summary>The longest data buffer of an IN or OUT request, counted as <see cref="BuildIoVec"/> cuts them.</summary>
    private static ulong LongestDataSegment(ref ParsedRequest req)
    {
        var writable = (BlkRequestType)req.Header.Type == BlkRequestType.In;
        var buffers = req.Buffers;
        var length = req.DataLength;
        var start = writable ? req.ReadableCount : req.FirstReadable;
        var end = writable ? buffers.Length : req.ReadableCount;
        ulong longest = 0;
        for (var i = start; i < end && length > 0; i++)
        {
            var skip = !writable && i == req.FirstReadable ? req.ReadableSkip : 0u;
            var take = Math.Min((ulong)(buffers[i].Length - skip), length);
            longest = Math.Max(longest, take);
            length -= take;
        }
        return longest;
    }

    /// <summary>
    /// Fills <paramref name="iov"/> with the data part of the chain: device-readable bytes after the
    /// header, or device-writable bytes before the status byte, up to <paramref name="length"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BuildIoVec(ref ParsedRequest req, Span<IoVec> iov, bool writable, ulong length)
    {
        var buffers = req.Buffers;
        var count = 0;
        var start = writable ? req.ReadableCount : req.FirstReadable;
        var end = writable ? buffers.Length : req.ReadableCount;
        for (var i = start; i < end && length > 0; i++)
        {
            ref readonly var b = ref buffers[i];
            var skip = !writable && i == req.FirstReadable ? req.ReadableSkip : 0u;
            var take = Math.Min((ulong)(b.Length - skip), length);
            if (take == 0)
                continue;
            iov[count++] = new IoVec(b.Host + (nint)skip, (nuint)take);
            length -= take;
        }
        return count;
    }
}
