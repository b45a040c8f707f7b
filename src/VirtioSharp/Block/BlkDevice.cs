using System.Text;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>
/// The virtio-blk device (5.2) as transports see it: its identity, feature bits and config
/// space, and its queues. The shared <see cref="QueueDrainer"/> drains each queue and hands every
/// chain to <see cref="BlkChainHandler"/> (parse, validate, execute). It never knows the
/// transport. Queues may be drained concurrently, one thread per queue.
/// </summary>
public sealed class BlkDevice : IVirtioDevice
{
    private readonly IBlockBackend _backend;
    private readonly BlkDeviceOptions _options;
    private readonly byte[] _config;
    private readonly byte[] _serial = new byte[BlkLayout.IdBytes];
    private ulong _capacitySectors; // read once per request (Volatile); changes when the backend is resized
    private readonly Lock _configLock = new(); // config bytes and generation change together
    private uint _configGeneration;
    private BlkConfig _configRecord;
    private readonly bool _readOnly;
    private readonly BlkThrottle? _throttle;
    private readonly BlkAsyncRequests _asyncRequests;
    private readonly QueueDrainer _drainer;
    private readonly BlkChainHandler _chains;
    private ulong _negotiated;

    /// <summary>Most requests one queue keeps in flight on an <see cref="IAsyncBlockBackend"/>; more are served synchronously.</summary>
    public const int MaxAsyncPerQueue = 256;

    public BlkDevice(IBlockBackend backend, BlkDeviceOptions? options = null)
    {
        _backend = backend;
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
            | VirtioFeatures.Bit(BlkFeatures.SizeMax)
            | VirtioFeatures.Bit(BlkFeatures.SegMax)
            | VirtioFeatures.Bit(BlkFeatures.BlkSize)
            | VirtioFeatures.Bit(BlkFeatures.Flush)
            | VirtioFeatures.Bit(BlkFeatures.Mq);
        if (_readOnly)
            features |= VirtioFeatures.Bit(BlkFeatures.Ro);
        if (!_readOnly && backend.SupportsDiscard)
            features |= VirtioFeatures.Bit(BlkFeatures.Discard);
        if (!_readOnly && backend.SupportsWriteZeroes)
            features |= VirtioFeatures.Bit(BlkFeatures.WriteZeroes);
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
        var maxSegments = (int)Math.Max(Config.MaxDiscardSeg, Config.MaxWriteZeroesSeg);
        // A driver keeps to seg_max data segments (5.2.6.1); the slot has room for one more
        // because the status byte may end a buffer that carries data too. A larger chain is
        // still served, synchronously.
        var iovPerSlot = (int)Math.Clamp(segMax + 1, 2u, 257u);
        if (_options.Limits is { Any: true } limits)
            _throttle = new BlkThrottle(limits, _options.NumQueues);
        var validator = new BlkRequestValidator(this, _options.NumQueues, maxSegments, _readOnly);
        _asyncRequests = new BlkAsyncRequests(this, backend, validator, _options.NumQueues, iovPerSlot);
        var executor = new BlkRequestExecutor(this, backend, _serial, validator);
        _chains = new BlkChainHandler(this, validator, executor, _asyncRequests, _throttle, _options.NumQueues);
        _drainer = new QueueDrainer(_options.NumQueues, Breaches, _chains);
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

    internal bool Negotiated(int bit) => VirtioFeatures.Has(_negotiated, bit);

    public string FeatureName(int bit) => BlkFeatures.Name(bit);

    public QueueOutcome ProcessQueue(IDeviceQueue queue) => ProcessQueue(queue, null);

    public QueueOutcome ProcessQueue(IDeviceQueue queue, IQueueIo? io) => _drainer.Drain(queue, io);

    public bool SupportsQueueIo => _asyncRequests.Supported;

    public int MaxQueueIoInFlight => MaxAsyncPerQueue;

    public long QueueWaitTicks(IDeviceQueue queue) => (uint)queue.Index < (uint)_options.NumQueues ? _chains.WaitTicks(queue) : 0;

    /// <summary>Requests of <paramref name="queue"/> started on the asynchronous backend and not completed yet.</summary>
    public int QueueIoInFlight(int queue) => _asyncRequests.InFlight(queue);

    public void CompleteIo(IDeviceQueue queue, ushort tag, int result) => _asyncRequests.Complete(queue, tag, result);
}
