using System.Runtime.CompilerServices;
using System.Text;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>
/// The virtio-blk driver (5.2): builds header/data/status chains, makes them available,
/// notifies, and completes the waiting callers when the device returns them. It runs over any
/// <see cref="IDriverTransport"/>. Many callers on many threads may have requests in flight.
/// </summary>
public sealed class BlkDriver : IInterruptHandler, IDeviceRestartHandler, IDisposable
{
    /// <summary>Every feature this driver understands.</summary>
    public const ulong SupportedFeatures =
        (1UL << VirtioFeatures.Version1) | (1UL << BlkFeatures.SizeMax) | (1UL << BlkFeatures.SegMax)
        | (1UL << BlkFeatures.Ro) | (1UL << BlkFeatures.BlkSize) | (1UL << BlkFeatures.Flush)
        | (1UL << BlkFeatures.Mq) | (1UL << BlkFeatures.Discard) | (1UL << BlkFeatures.WriteZeroes)
        | (1UL << VirtioFeatures.RingIndirectDesc) | (1UL << VirtioFeatures.RingEventIdx);

    private readonly IDriverTransport _transport;
    private readonly BlkDriverOptions _options;
    private readonly BlkQueueContext[] _queues;
    private volatile string? _failure;

    private BlkDriver(IDriverTransport transport, BlkDriverOptions options, ulong features, BlkConfig config, BlkQueueContext[] queues)
    {
        _transport = transport;
        _options = options;
        Features = features;
        Config = config;
        _queues = queues;
    }

    /// <summary>Initializes the device (3.1.1) and sets up its queues.</summary>
    public static BlkDriver Start(IDriverTransport transport, BlkDriverOptions? options = null)
    {
        options ??= new BlkDriverOptions();
        var features = VirtioDriverInit.Begin(transport, 2, offered => ChooseFeatures(offered, options), BlkFeatures.Name);
        Span<byte> raw = stackalloc byte[BlkLayout.ConfigSize];
        uint generation;
        do
        {
            // 2.5.1: re-read while ConfigGeneration changes under us.
            generation = transport.ConfigGeneration;
            transport.ReadConfig(0, raw);
        } while (generation != transport.ConfigGeneration);
        var config = BlkConfig.Parse(raw);

        var numQueues = VirtioFeatures.Has(features, BlkFeatures.Mq) ? Math.Clamp(options.NumQueues, 1, Math.Max((int)config.NumQueues, 1)) : 1;
        var eventIdx = VirtioFeatures.Has(features, VirtioFeatures.RingEventIdx);
        var indirect = VirtioFeatures.Has(features, VirtioFeatures.RingIndirectDesc);
        var packed = VirtioFeatures.Has(features, VirtioFeatures.RingPacked);
        var bounce = (uint)Math.Max(BlkLayout.SectorSize, options.MaxTransfer & ~(BlkLayout.SectorSize - 1));
        if (VirtioFeatures.Has(features, BlkFeatures.SizeMax) && config.SizeMax >= BlkLayout.SectorSize)
            bounce = Math.Min(bounce, config.SizeMax & ~(uint)(BlkLayout.SectorSize - 1));
        var queues = new BlkQueueContext[numQueues];
        for (var q = 0; q < numQueues; q++)
        {
            var max = transport.GetMaxQueueSize(q);
            if (max == 0)
                throw new VirtioDeviceException($"device has no queue {q}");
            var size = Math.Min(options.QueueSize, max);
            IDriverQueue ring;
            if (packed)
            {
                var p = PackedDriverQueue.Allocate(q, size, transport.Allocator, eventIdx); // 2.8.10.1: any size up to 32768
                if (options.Trace is { } trace)
                    p.Record(trace, indirect);
                transport.SetupQueue(q, size, p.DescriptorTable, p.DriverArea, p.DeviceArea);
                ring = p;
            }
            else
            {
                size = 1 << (31 - int.LeadingZeroCount(size)); // round down to a power of two (2.7)
                var s = SplitDriverQueue.Allocate(q, size, transport.Allocator, eventIdx);
                if (options.Trace is { } trace)
                    s.Record(trace, indirect);
                transport.SetupQueue(q, size, s.DescriptorTable, s.DriverArea, s.DeviceArea);
                ring = s;
            }
            var depth = indirect ? size : Math.Max(1, size / 3);
            queues[q] = new BlkQueueContext(ring, transport.Memory, transport.Allocator, depth, bounce, indirect, options.InlineCompletions);
        }
        var driver = new BlkDriver(transport, options, features, config, queues);
        transport.SetInterruptHandler(driver);
        VirtioDriverInit.Finish(transport);
        return driver;
    }

    /// <summary>3.1.1 step 4: what the driver accepts of the offer, packed rings as the options ask.</summary>
    private static ulong ChooseFeatures(ulong offered, BlkDriverOptions options)
    {
        var accept = options.AcceptFeatures & ~VirtioFeatures.Bit(VirtioFeatures.RingPacked);
        if (options.Ring != RingChoice.Split && VirtioFeatures.Has(offered, VirtioFeatures.RingPacked))
            accept |= VirtioFeatures.Bit(VirtioFeatures.RingPacked);
        else if (options.Ring == RingChoice.RequirePacked)
            throw new VirtioDeviceException("the device does not offer VIRTIO_F_RING_PACKED (packed virtqueues)");
        return offered & accept;
    }

    public ulong Features { get; }
    /// <summary>The virtqueue format negotiated: VIRTIO_F_RING_PACKED or not.</summary>
    public VirtqueueFormat RingFormat => VirtioFeatures.Has(Features, VirtioFeatures.RingPacked) ? VirtqueueFormat.Packed : VirtqueueFormat.Split;
    public BlkConfig Config { get; }
    public ulong Capacity => Config.Capacity << BlkLayout.SectorShift;
    public uint BlockSize => VirtioFeatures.Has(Features, BlkFeatures.BlkSize) && Config.BlkSize >= BlkLayout.SectorSize ? Config.BlkSize : BlkLayout.SectorSize;
    public bool ReadOnly => VirtioFeatures.Has(Features, BlkFeatures.Ro);
    public int QueueCount => _queues.Length;
    public int QueueSize(int queue) => _queues[queue].Queue.Size;
    /// <summary>Requests one queue can have in flight.</summary>
    public int Depth => _queues[0].Depth;
    public IDriverTransport Transport => _transport;
    private ITraceSink? Trace => _options.Trace;

    // ---------------------------------------------------------------- the public block API

    /// <summary>Reads <paramref name="destination"/>.Length bytes at byte <paramref name="offset"/> (both multiples of 512).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ReadAsync(ulong offset, Memory<byte> destination, CancellationToken cancel = default)
    {
        CheckRange(offset, (ulong)destination.Length);
        var chunk = ChunkSize;
        for (var done = 0; done < destination.Length; done += chunk)
        {
            var n = Math.Min(chunk, destination.Length - done);
            var status = await Submit(BlkRequestType.In, (offset + (ulong)done) >> BlkLayout.SectorShift, default, destination.Slice(done, n), (uint)n, cancel);
            ThrowIfFailed(status, "read", offset + (ulong)done);
        }
    }

    /// <summary>Writes <paramref name="source"/> at byte <paramref name="offset"/> (both multiples of 512).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> source, CancellationToken cancel = default)
    {
        CheckRange(offset, (ulong)source.Length);
        var chunk = ChunkSize;
        for (var done = 0; done < source.Length; done += chunk)
        {
            var n = Math.Min(chunk, source.Length - done);
            var status = await Submit(BlkRequestType.Out, (offset + (ulong)done) >> BlkLayout.SectorShift, source.Slice(done, n), default, (uint)n, cancel);
            ThrowIfFailed(status, "write", offset + (ulong)done);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask FlushAsync(CancellationToken cancel = default)
    {
        var status = await Submit(BlkRequestType.Flush, 0, default, default, 0, cancel);
        ThrowIfFailed(status, "flush", 0);
    }

    public ValueTask DiscardAsync(ulong offset, ulong length, CancellationToken cancel = default) =>
        SegmentsAsync(BlkRequestType.Discard, offset, length, 0, cancel);

    public ValueTask WriteZeroesAsync(ulong offset, ulong length, bool mayUnmap = false, CancellationToken cancel = default) =>
        SegmentsAsync(BlkRequestType.WriteZeroes, offset, length, mayUnmap ? BlkLayout.SegmentFlagUnmap : 0, cancel);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SegmentsAsync(BlkRequestType type, ulong offset, ulong length, uint flags, CancellationToken cancel)
    {
        CheckRange(offset, length);
        var feature = type == BlkRequestType.Discard ? BlkFeatures.Discard : BlkFeatures.WriteZeroes;
        if (!VirtioFeatures.Has(Features, feature))
            throw new BlkException($"the device does not offer {BlkFeatures.Name(feature)}", BlkStatus.Unsupp);
        var maxSectors = type == BlkRequestType.Discard ? Config.MaxDiscardSectors : Config.MaxWriteZeroesSectors;
        if (maxSectors == 0)
            maxSectors = uint.MaxValue;
        var sector = offset >> BlkLayout.SectorShift;
        var sectors = length >> BlkLayout.SectorShift;
        var segment = new byte[BlkLayout.DiscardSegmentSize];
        while (sectors > 0)
        {
            var n = (uint)Math.Min(sectors, maxSectors);
            new BlkDiscardSegment(sector, n, flags).Write(segment);
            var status = await Submit(type, 0, segment, default, 0, cancel);
            ThrowIfFailed(status, type == BlkRequestType.Discard ? "discard" : "write-zeroes", sector << BlkLayout.SectorShift);
            sector += n;
            sectors -= n;
        }
    }

    /// <summary>GET_ID: the device's serial, up to 20 bytes.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<string> GetIdAsync(CancellationToken cancel = default)
    {
        var id = new byte[BlkLayout.IdBytes];
        var status = await Submit(BlkRequestType.GetId, 0, default, id, BlkLayout.IdBytes, cancel);
        ThrowIfFailed(status, "get-id", 0);
        var end = Array.IndexOf(id, (byte)0);
        return Encoding.ASCII.GetString(id, 0, end < 0 ? id.Length : end);
    }

    /// <summary>
    /// Zero-copy I/O: the data already lies in the transport's memory at <paramref name="dataAddress"/>.
    /// Returns the status byte instead of throwing.
    /// </summary>
    public ValueTask<BlkStatus> SubmitDirectAsync(BlkRequestType type, ulong sector, ulong dataAddress, uint dataLength, CancellationToken cancel = default) =>
        Submit(type, sector, default, default, dataLength, cancel, dataAddress);

    /// <summary>
    /// Zero-copy I/O on virtqueue <paramref name="queue"/> (modulo <see cref="QueueCount"/>), for a
    /// caller that keeps its requests on one queue so that queues share nothing.
    /// </summary>
    public ValueTask<BlkStatus> SubmitDirectAsync(int queue, BlkRequestType type, ulong sector, ulong dataAddress, uint dataLength, CancellationToken cancel = default) =>
        Submit(type, sector, default, default, dataLength, cancel, dataAddress, (int)((uint)queue % (uint)_queues.Length));

    /// <summary>A seekable <see cref="Stream"/> over the disk.</summary>
    public Stream AsStream() => new BlkStream(this);

    /// <summary>Largest transfer one request carries; larger calls are split into requests of this size.</summary>
    public int ChunkSize => (int)_queues[0].BounceSize;

    // ---------------------------------------------------------------- submission

    private void CheckRange(ulong offset, ulong length)
    {
        if ((offset | length) % BlkLayout.SectorSize != 0)
            throw new ArgumentException($"offset {offset} and length {length} must be multiples of {BlkLayout.SectorSize}");
        if (offset > Capacity || length > Capacity - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is beyond the disk's {Capacity} bytes");
    }

    private static void ThrowIfFailed(BlkStatus status, string what, ulong offset)
    {
        if (status != BlkStatus.Ok)
            throw new BlkException($"{what} at offset {offset} failed: device answered {status switch { BlkStatus.IoErr => "VIRTIO_BLK_S_IOERR", BlkStatus.Unsupp => "VIRTIO_BLK_S_UNSUPP", _ => $"status {(byte)status}" }}", status);
    }

    private BlkQueueContext PickQueue() =>
        _queues.Length == 1 ? _queues[0] : _queues[Thread.GetCurrentProcessorId() % _queues.Length];

    /// <summary>
    /// Builds header / data / status, places the chain, publishes it and notifies (2.7.13).
    /// Readable data comes from <paramref name="source"/>, writable data lands in <paramref name="destination"/>
    /// (both through the slot's bounce buffer), or lies at <paramref name="direct"/> in device-visible memory.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<BlkStatus> Submit(BlkRequestType type, ulong sector, ReadOnlyMemory<byte> source, Memory<byte> destination,
        uint length, CancellationToken cancel, ulong direct = 0, int queue = -1)
    {
        ThrowIfBroken();
        var ctx = queue < 0 ? PickQueue() : _queues[queue];
        await ctx.Capacity.WaitAsync(cancel).ConfigureAwait(false);
        BlkRequestSlot slot;
        try
        {
            ThrowIfBroken();
            slot = ctx.Rent();
        }
        catch
        {
            ctx.Capacity.Release();
            throw;
        }
        var task = Place(ctx, slot, type, sector, source, destination, length, direct);
        return await task.ConfigureAwait(false);
    }

    private ValueTask<BlkStatus> Place(BlkQueueContext ctx, BlkRequestSlot slot, BlkRequestType type, ulong sector,
        ReadOnlyMemory<byte> source, Memory<byte> destination, uint length, ulong direct)
    {
        var memory = ctx.Memory;
        new BlkRequestHeader((uint)type, 0, sector).Write(memory.GetSpan(slot.HeaderAddress, BlkLayout.HeaderSize));
        memory.GetSpan(slot.StatusAddress, 1)[0] = 0xff; // not yet written by the device
        slot.Type = (uint)type;
        slot.Sector = sector;
        slot.Data = default;

        var writable = 1u;
        if (!source.IsEmpty)
        {
            source.Span.CopyTo(memory.GetSpan(slot.BounceAddress, source.Length));
            slot.Data = new DriverBuffer(slot.BounceAddress, (uint)source.Length, false);
        }
        else if (!destination.IsEmpty)
        {
            slot.CopyBack = destination;
            slot.Data = new DriverBuffer(slot.BounceAddress, (uint)destination.Length, true);
            writable += (uint)destination.Length;
        }
        else if (direct != 0 && length > 0)
        {
            var deviceWrites = type is BlkRequestType.In or BlkRequestType.GetId;
            slot.Data = new DriverBuffer(direct, length, deviceWrites);
            if (deviceWrites)
                writable += length;
        }
        slot.WritableBytes = writable;
        Span<DriverBuffer> chain = stackalloc DriverBuffer[3];
        var n = Chain(slot, chain);

        var result = slot.AsValueTask();
        bool notify;
        bool placed;
        var trace = Trace;
        slot.Tracing = trace is { Active: true };
        string? failure;
        if (slot.Tracing)
            trace!.Event(RingEvents.Request(ctx.Queue.Index, -1, (uint)type, sector, null, "driver"));
        lock (ctx.Lock)
        {
            // OnDeviceLost sets _failure before it untracks under this lock: a request placed
            // after that would never be completed nor failed, so its caller would wait forever.
            failure = _failure;
            ushort head = 0;
            if (failure is not null)
                placed = false;
            else
            {
                slot.Sequence = ctx.NextSequence();
                placed = TryPlace(ctx, slot, chain[..n], out head);
            }
            // A request placed by a continuation that runs inside this thread's reap of the same
            // queue is published with the others that reap starts, once, when it ends (2.7.13.3:
            // several heads may go out under one idx update; 2.7.13.4: one notification for them).
            if (placed && t_reaping != ctx)
                notify = ctx.Queue.Publish(); // the queue reports descriptors, ring slot, idx and the decision
            else
                notify = false;
        }
        if (!placed)
        {
            // No free descriptors cannot happen while the semaphore admits at most Depth requests; fail loudly if it does.
            slot.Fail(failure is not null ? new VirtioDeviceException(failure) : new InvalidOperationException("no free descriptors although a slot was admitted"));
            return result;
        }
        if (notify)
            _transport.Notify(ctx.Queue.Index);
        return result;
    }

    /// <summary>The slot's chain: header, its data buffer if any, status byte (5.2.6).</summary>
    private static int Chain(BlkRequestSlot slot, Span<DriverBuffer> chain)
    {
        var n = 0;
        chain[n++] = new DriverBuffer(slot.HeaderAddress, BlkLayout.HeaderSize, false);
        if (slot.Data.Length > 0)
            chain[n++] = slot.Data;
        chain[n++] = new DriverBuffer(slot.StatusAddress, 1, true);
        return n;
    }

    /// <summary>Under the queue's lock: places the chain (indirect when negotiated) and tracks the slot by its head.</summary>
    private static bool TryPlace(BlkQueueContext ctx, BlkRequestSlot slot, ReadOnlySpan<DriverBuffer> chain, out ushort head)
    {
        bool placed;
        if (ctx.Indirect)
        {
            ctx.Queue.WriteIndirectTable(ctx.Memory.GetSpan(slot.IndirectAddress, chain.Length * SplitRing.DescriptorSize), chain);
            placed = ctx.Queue.TryAddIndirect(slot.IndirectAddress, chain.Length, out head);
        }
        else
            placed = ctx.Queue.TryAdd(chain, out head);
        if (placed)
            ctx.Track(head, slot);
        return placed;
    }

    // ---------------------------------------------------------------- restart (the device came back)

    /// <summary>
    /// The transport brought the device back after losing it (a vhost-user back-end that restarted):
    /// the requests whose used elements arrived are completed, the ring starts afresh at its
    /// addresses, and every request still outstanding is made available again, in the order it was
    /// first submitted, before the transport hands the ring to the new device. A request the old
    /// device may already have carried out runs again: reads and writes of a block device are
    /// idempotent. Returns how many were made available again.
    /// </summary>
    public int RestartQueue(int queue)
    {
        if ((uint)queue >= (uint)_queues.Length || _failure is not null)
            return 0;
        var ctx = _queues[queue];
        Reap(ctx); // the old device finished these and said so
        lock (ctx.Lock)
        {
            var again = ctx.UntrackAll();
            again.Sort((a, b) => a.Sequence.CompareTo(b.Sequence));
            ctx.Queue.Restart();
            Span<DriverBuffer> chain = stackalloc DriverBuffer[3];
            foreach (var slot in again)
            {
                new BlkRequestHeader(slot.Type, 0, slot.Sector).Write(ctx.Memory.GetSpan(slot.HeaderAddress, BlkLayout.HeaderSize));
                ctx.Memory.GetSpan(slot.StatusAddress, 1)[0] = 0xff;
                var n = Chain(slot, chain);
                if (!TryPlace(ctx, slot, chain[..n], out _))
                    slot.Fail(new InvalidOperationException("a restarted ring had no room for a request that was outstanding"));
            }
            ctx.Queue.Publish(); // the transport notifies once the ring runs again
            return again.Count;
        }
    }

    private static string TypeName(BlkRequestType t) => t switch
    {
        BlkRequestType.In => "VIRTIO_BLK_T_IN",
        BlkRequestType.Out => "VIRTIO_BLK_T_OUT",
        BlkRequestType.Flush => "VIRTIO_BLK_T_FLUSH",
        BlkRequestType.GetId => "VIRTIO_BLK_T_GET_ID",
        BlkRequestType.Discard => "VIRTIO_BLK_T_DISCARD",
        BlkRequestType.WriteZeroes => "VIRTIO_BLK_T_WRITE_ZEROES",
        _ => $"type {(uint)t}",
    };

    // ---------------------------------------------------------------- completion (interrupt path)

    public void OnUsedBuffers(int queue)
    {
        if (queue >= 0 && queue < _queues.Length)
            Reap(_queues[queue]);
        else
        {
            foreach (var ctx in _queues)
                Reap(ctx);
        }
    }

    /// <summary>
    /// The transport watches <paramref name="queue"/>'s used ring itself (<paramref name="polling"/>):
    /// no interrupts until it stops. On stopping, true if used buffers arrived meanwhile, to be
    /// reaped (<see cref="OnUsedBuffers"/>) before the transport sleeps.
    /// </summary>
    public bool SetPolling(int queue, bool polling)
    {
        if ((uint)queue >= (uint)_queues.Length)
            return false;
        var ctx = _queues[queue];
        lock (ctx.Lock)
        {
            if (polling)
            {
                ctx.Queue.StartPolling();
                return false;
            }
            return ctx.Queue.Polling && ctx.Queue.StopPolling();
        }
    }

    /// <summary>
    /// The queue whose completions this thread is running (inline continuations): what they submit
    /// on it is placed at once but published when the reap's pass ends.
    /// </summary>
    [ThreadStatic]
    private static BlkQueueContext? t_reaping;

    private void Reap(BlkQueueContext ctx)
    {
        var completed = ctx.Completed;
        var first = true;
        while (true)
        {
            var count = 0;
            string? broken = null;
            lock (ctx.Lock)
            {
                // 2.7.10 / 2.8.10: no interrupts asked for while this pass takes what is there (no
                // used_event store and full barrier per buffer); turned on again below, behind the
                // barrier, when the ring looks empty. A polling transport keeps them off itself.
                if (first && !ctx.Queue.Polling)
                    ctx.Queue.DisableInterrupts();
                first = false;
                while (count < completed.Length)
                {
                    if (!ctx.Queue.TryTakeUsed(out var head, out var length, out var error))
                    {
                        if (error == UsedError.UsedIndexTooFarAhead)
                            broken = "device moved used idx more than the queue size ahead (2.7.8)";
                        else if (error == UsedError.UnknownId)
                            broken = $"device returned used id {head}, which is not an outstanding request";
                        else if (!ctx.Queue.Polling && ctx.Queue.EnableInterrupts())
                            continue; // 2.7.10: used_event is published behind a full fence, then the ring re-checked;
                                      // without it a buffer used meanwhile is never signalled and its caller waits forever.
                                      // A polling transport looks at the ring again itself (SetPolling).
                        break;
                    }
                    // The device is not trusted: the id must name a request this driver tracks.
                    var slot = ctx.Untrack(head);
                    if (slot is null)
                    {
                        broken = $"device returned used id {head}, which is not an outstanding request";
                        break;
                    }
                    slot.UsedLength = length;
                    completed[count++] = slot;
                }
            }
            if (count > 0)
                CompleteBatch(ctx, completed, count);
            if (broken is not null)
            {
                OnDeviceLost(broken);
                return;
            }
            if (count < completed.Length)
                return;
        }
    }

    /// <summary>
    /// Completes the slots one pass took. Continuations that run here (inline completions) and
    /// submit again on this queue place their requests without publishing them; the pass then
    /// publishes them together and notifies at most once, so the device is woken once for the
    /// batch, not once for its first request while the rest are still being placed.
    /// </summary>
    private void CompleteBatch(BlkQueueContext ctx, BlkRequestSlot?[] completed, int count)
    {
        var outer = t_reaping;
        t_reaping = ctx;
        try
        {
            for (var i = 0; i < count; i++)
            {
                var slot = completed[i]!;
                completed[i] = null;
                CompleteSlot(ctx, slot);
            }
        }
        finally
        {
            t_reaping = outer;
            bool notify;
            lock (ctx.Lock)
                notify = _failure is null && ctx.Queue.Publish(); // nothing new: no store, no notification
            if (notify)
                _transport.Notify(ctx.Queue.Index);
        }
    }

    private void CompleteSlot(BlkQueueContext ctx, BlkRequestSlot slot)
    {
        if (slot.UsedLength > slot.WritableBytes)
        {
            slot.Fail(new BlkException($"device reported {slot.UsedLength} bytes written into a request with {slot.WritableBytes} writable bytes"));
            return;
        }
        var status = (BlkStatus)ctx.Memory.GetSpan(slot.StatusAddress, 1)[0];
        if (slot.Tracing && Trace is { } trace)
            trace.Event(RingEvents.Status("driver", ctx.Queue.Index, slot.Head, slot.StatusAddress, (byte)status, null));
        slot.Complete(status);
    }

    public void OnConfigChange()
    {
        var status = _transport.GetStatus();
        if ((status & DeviceStatus.DeviceNeedsReset) != 0)
            OnDeviceLost("device set DEVICE_NEEDS_RESET");
    }

    public void OnDeviceLost(string reason)
    {
        if (_failure is not null)
            return;
        _failure = reason;
        _options.Log.Error($"virtio-blk driver: {reason}; failing outstanding requests");
        foreach (var ctx in _queues)
        {
            List<BlkRequestSlot> pending;
            lock (ctx.Lock)
                pending = ctx.UntrackAll();
            foreach (var slot in pending)
                slot.Fail(new VirtioDeviceException(reason));
        }
    }

    /// <summary>Null while the device works; otherwise why the driver gave up.</summary>
    public string? Failure => _failure;

    private void ThrowIfBroken()
    {
        if (_failure is { } f)
            throw new VirtioDeviceException(f);
    }

    /// <summary>Requests in flight across all queues.</summary>
    public int Outstanding
    {
        get
        {
            var n = 0;
            foreach (var ctx in _queues)
            {
                lock (ctx.Lock)
                    n += ctx.Outstanding;
            }
            return n;
        }
    }

    public void Dispose()
    {
        if (_failure is null && Outstanding == 0)
            _failure = "driver stopped";
        _transport.Reset();
        OnDeviceLost("driver stopped");
    }
}
