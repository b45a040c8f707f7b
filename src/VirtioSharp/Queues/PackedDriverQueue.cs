using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// The driver's half of a packed virtqueue (2.8.21, 2.8.22). Lists are written into the ring in
/// order, the first descriptor's flags last; the first list of a batch gets its flags when the
/// batch is published, so the device, which polls only its next slot (2.8.2), sees the batch
/// whole, as with a split ring's avail idx. The buffer id (below the queue size) names the
/// list, and the driver keeps each id's slot count privately, so nothing the device writes can
/// corrupt its bookkeeping. Not thread-safe: callers hold a lock.
/// </summary>
public sealed unsafe class PackedDriverQueue : IDriverQueue
{
    private readonly byte* _desc;
    private readonly byte* _driverEvent;   // 2.8.10: Driver Event Suppression, written by the driver
    private readonly byte* _deviceEvent;   // 2.8.10: Device Event Suppression, read-only for the driver
    private readonly ushort[] _slotsOfId;  // per buffer id: ring slots of its list; 0 = free
    private readonly ushort[] _freeIds;
    private int _freeIdCount;
    private int _freeSlots;
    private ushort _nextAvail;
    private bool _availWrap = true;        // 2.8.1: Driver Ring Wrap Counter, initially 1
    private ushort _nextUsed;
    private bool _usedWrap = true;         // the Device Ring Wrap Counter the driver expects at _nextUsed
    private int _addedSincePublish;
    private PackedBatchHead _batchHead;    // the batch's first list, its flags held until Publish
    private ushort _eventFlags;            // what the driver last wrote into the Driver Event Suppression flags
    private readonly GuestMemory _memory;
    private PackedQueueRecorder? _recorder; // null unless someone records: the hot path pays a null check
    // Ends the object on a cache line of its own, so the fields above (written by the driver's
    // thread) never share a line with an object the device's thread writes.
#pragma warning disable CS0169 // never read: it only takes room
    private CacheLinePad _pad;
#pragma warning restore CS0169

    public PackedDriverQueue(int index, int size, GuestMemory memory, ulong descAddr, ulong driverAddr, ulong deviceAddr, bool eventIdx)
    {
        if (!PackedRing.IsValidSize(size))
            throw new ArgumentOutOfRangeException(nameof(size), $"queue size {size} is not in 1..32768 (2.8)");
        Index = index;
        Size = (ushort)size;
        EventIdx = eventIdx;
        DescriptorTable = descAddr;
        DriverArea = driverAddr;
        DeviceArea = deviceAddr;
        _memory = memory;
        _desc = (byte*)memory.GetPointer(descAddr, PackedQueueLayout.DescriptorRingSize(size));
        _driverEvent = (byte*)memory.GetPointer(driverAddr, PackedRing.EventSuppressionSize);
        _deviceEvent = (byte*)memory.GetPointer(deviceAddr, PackedRing.EventSuppressionSize);
        // 2.8.13: the descriptor ring is zero-initialized.
        new Span<byte>(_desc, checked((int)PackedQueueLayout.DescriptorRingSize(size))).Clear();
        _slotsOfId = PaddedArray.Of<ushort>(size);
        _freeIds = PaddedArray.Of<ushort>(size); // its top, near the end while few ids are out, is written per request
        FreeEverything();
        AskForFirstInterrupt();
    }

    private void FreeEverything()
    {
        Array.Clear(_slotsOfId);
        for (var i = 0; i < Size; i++)
            _freeIds[i] = (ushort)(Size - 1 - i);
        _freeIdCount = Size;
        _freeSlots = Size;
    }

    private void AskForFirstInterrupt()
    {
        if (EventIdx)
        {
            // 2.8.10: interrupt me when the first descriptor is used.
            Volatile.Write(ref *(ushort*)_driverEvent, PackedRing.OffWrap(0, true));
            SetEventFlags(PackedRing.EventFlagsDesc);
        }
        else
            SetEventFlags(PackedRing.EventFlagsEnable);
    }

    /// <summary>
    /// Starts the ring afresh at the same addresses, as a new device finds a ring after a reset:
    /// the descriptor ring zeroed (2.8.13), both positions at slot 0 with both wrap counters at 1
    /// (2.8.1), every buffer id free, the Device Event Suppression structure zeroed (ENABLE: what
    /// a dead device left there, RING_EVENT_FLAGS_DISABLE while it polled, must not silence the
    /// driver's notifications to the next one). What was outstanding is the caller's to make
    /// available again; the transport gives the new device the initial base (vhost-user.rst,
    /// SET_VRING_BASE: slot 0, wrap counter 1).
    /// </summary>
    public void Restart()
    {
        new Span<byte>(_desc, checked((int)PackedQueueLayout.DescriptorRingSize(Size))).Clear();
        new Span<byte>(_deviceEvent, PackedRing.EventSuppressionSize).Clear();
        FreeEverything();
        _nextAvail = _nextUsed = 0;
        _availWrap = _usedWrap = true;
        _addedSincePublish = 0;
        _batchHead.Drop();
        AskForFirstInterrupt();
        Interlocked.MemoryBarrier(); // the zeroed ring is visible before the device is told its addresses
    }

    /// <summary>Lays the queue out contiguously in memory from <paramref name="allocator"/>.</summary>
    public static PackedDriverQueue Allocate(int index, int size, GuestAllocator allocator, bool eventIdx)
    {
        var layout = PackedQueueLayout.For(size);
        var baseAddr = allocator.Allocate(layout.TotalSize, 4096);
        return new PackedDriverQueue(index, size, allocator.Memory, baseAddr + layout.DescriptorRingOffset,
            baseAddr + layout.DriverEventOffset, baseAddr + layout.DeviceEventOffset, eventIdx);
    }

    public int Index { get; }
    public ushort Size { get; }
    public VirtqueueFormat Format => VirtqueueFormat.Packed;
    public bool EventIdx { get; }
    public ulong DescriptorTable { get; }
    public ulong DriverArea { get; }
    public ulong DeviceArea { get; }
    public int FreeDescriptors => _freeSlots;
    /// <summary>Slot of the next descriptor the driver writes.</summary>
    public ushort NextAvail => _nextAvail;
    /// <summary>2.8.1: the Driver Ring Wrap Counter.</summary>
    public bool AvailWrapCounter => _availWrap;
    /// <summary>Slot where the driver looks for the next used descriptor.</summary>
    public ushort NextUsed => _nextUsed;
    /// <summary>The Device Ring Wrap Counter the driver expects at <see cref="NextUsed"/>.</summary>
    public bool UsedWrapCounter => _usedWrap;
    /// <summary>The Device Event Suppression structure as the driver reads it (for tracing).</summary>
    public (ushort OffWrap, ushort Flags) DeviceEvent => (Volatile.Read(ref *(ushort*)_deviceEvent), Volatile.Read(ref *(ushort*)(_deviceEvent + 2)));
    /// <summary>The Driver Event Suppression structure as the driver last wrote it (for tracing).</summary>
    public (ushort OffWrap, ushort Flags) DriverEvent => (Volatile.Read(ref *(ushort*)_driverEvent), Volatile.Read(ref *(ushort*)(_driverEvent + 2)));

    /// <summary>Reports the ring's steps as events to <paramref name="sink"/> (null: stop); the device half announces the geometry.</summary>
    public void Record(ITraceSink? sink, bool indirect)
    {
        _recorder = sink is null ? null : new PackedQueueRecorder(sink, _memory, Index, Size, EventIdx, indirect,
            (nint)_desc, (nint)_driverEvent, (nint)_deviceEvent, DescriptorTable, DriverArea, DeviceArea, announce: false);
        _recorder?.DriverEventWritten(); // as the constructor left it (2.8.10)
    }

    private byte* Slot(int slot) => _desc + slot * PackedRing.DescriptorSize;

    /// <summary>Reads back descriptor <paramref name="slot"/> (for tracing).</summary>
    public (ulong Address, uint Length, ushort Id, ushort Flags) ReadDescriptor(int slot)
    {
        var d = Slot(slot % Size);
        return (Unsafe.ReadUnaligned<ulong>(d), Unsafe.ReadUnaligned<uint>(d + 8), Unsafe.ReadUnaligned<ushort>(d + 12), Volatile.Read(ref *(ushort*)(d + 14)));
    }

    public bool TryAdd(ReadOnlySpan<DriverBuffer> buffers, out ushort head)
    {
        head = 0;
        // 2.8.17: the whole list must fit in the ring before its first descriptor is made available.
        if (buffers.Length == 0 || buffers.Length > _freeSlots || _freeIdCount == 0)
            return false;
        var seenWritable = false;
        foreach (var b in buffers)
        {
            if (!b.DeviceWritable && seenWritable)
                throw new ArgumentException("device-readable buffers must come before device-writable ones (2.8.17)");
            seenWritable |= b.DeviceWritable;
        }
        var id = _freeIds[--_freeIdCount];
        var first = _nextAvail;
        ushort firstFlags = 0;
        for (var i = 0; i < buffers.Length; i++)
        {
            var b = buffers[i];
            // 2.8.21.1: AVAIL to the Driver Ring Wrap Counter, USED to its inverse, WRITE per
            // element, NEXT on all but the last; the id in every descriptor (the device reads the last).
            var flags = (ushort)(PackedRing.AvailFlags(_availWrap) | (b.DeviceWritable ? PackedRing.DescFWrite : 0)
                | (i < buffers.Length - 1 ? PackedRing.DescFNext : 0));
            var d = Slot(_nextAvail);
            Unsafe.WriteUnaligned(d, b.Address);
            Unsafe.WriteUnaligned(d + 8, b.Length);
            Unsafe.WriteUnaligned(d + 12, id);
            if (i == 0)
                firstFlags = flags; // 2.8.6: the first descriptor is made available after the rest
            else
                Unsafe.WriteUnaligned(d + 14, flags);
            Advance();
        }
        // Recorded before the device can see the list: once the flags are out, a polling device
        // may take it, and even overwrite its slots, before a later read-back would run.
        _recorder?.ListWritten(first, buffers.Length, id, _availWrap, firstFlags);
        MakeAvailable(Slot(first), firstFlags);
        _slotsOfId[id] = (ushort)buffers.Length;
        _freeSlots -= buffers.Length;
        _addedSincePublish += buffers.Length;
        head = id;
        return true;
    }

    /// <summary>
    /// 2.8.7: makes one descriptor with VIRTQ_DESC_F_INDIRECT available, pointing at a table of
    /// <paramref name="count"/> descriptors the caller wrote with <see cref="WriteIndirectTable"/>.
    /// </summary>
    public bool TryAddIndirect(ulong table, int count, out ushort head)
    {
        head = 0;
        if (_freeSlots == 0 || _freeIdCount == 0 || count <= 0 || count > Size)
            return false;
        var id = _freeIds[--_freeIdCount];
        var first = _nextAvail;
        var d = Slot(_nextAvail);
        Unsafe.WriteUnaligned(d, table);
        Unsafe.WriteUnaligned(d + 8, (uint)(count * PackedRing.DescriptorSize));
        Unsafe.WriteUnaligned(d + 12, id);
        // 2.8.7: WRITE is reserved on the descriptor that refers to a table.
        var flags = (ushort)(PackedRing.AvailFlags(_availWrap) | PackedRing.DescFIndirect);
        Advance();
        _recorder?.IndirectWritten(first, id, table, count, _availWrap, flags); // before the device can see it, as above
        MakeAvailable(d, flags);
        _slotsOfId[id] = 1;
        _freeSlots--;
        _addedSincePublish++;
        head = id;
        return true;
    }

    /// <summary>2.8.7: an indirect table of struct pvirtq_desc; only WRITE is set, ids are ignored.</summary>
    public static void WriteIndirectTable(Span<byte> table, ReadOnlySpan<DriverBuffer> buffers)
    {
        for (var i = 0; i < buffers.Length; i++)
        {
            var b = buffers[i];
            var e = table.Slice(i * PackedRing.DescriptorSize, PackedRing.DescriptorSize);
            BinaryPrimitives.WriteUInt64LittleEndian(e, b.Address);
            BinaryPrimitives.WriteUInt32LittleEndian(e[8..], b.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(e[12..], 0);
            BinaryPrimitives.WriteUInt16LittleEndian(e[14..], b.DeviceWritable ? PackedRing.DescFWrite : (ushort)0);
        }
    }

    void IDriverQueue.WriteIndirectTable(Span<byte> table, ReadOnlySpan<DriverBuffer> buffers) => WriteIndirectTable(table, buffers);

    /// <summary>
    /// 2.8.21.1: writes a list's first flags, which make it available, or, for the batch's first
    /// list, keeps them for <see cref="Publish"/>. The lists after it are written whole with
    /// their flags (2.8.2: writes may be reordered; each side polls only its next slot), and the
    /// device reaches them only through the first. A recording shows each list as it goes out,
    /// so while one is kept none waits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void MakeAvailable(byte* first, ushort flags)
    {
        if (!_batchHead.IsHeld && _recorder is null)
        {
            _batchHead.Hold(first, flags);
        }
        else
            Volatile.Write(ref *(ushort*)(first + 14), flags); // 2.8.21.1.1: the release store is the barrier before the flags
    }

    private void Advance()
    {
        // 2.8.21.1: after the ring's last descriptor, toggle the Driver Ring Wrap Counter.
        if (++_nextAvail == Size)
        {
            _nextAvail = 0;
            _availWrap = !_availWrap;
        }
    }

    public bool Publish()
    {
        _batchHead.Release();
        var added = _addedSincePublish;
        if (added == 0)
            return false;
        _addedSincePublish = 0;
        // 2.8.21.3.1: a full barrier between the flags update and reading the Device Event Suppression.
        Interlocked.MemoryBarrier();
        var offWrap = Volatile.Read(ref *(ushort*)_deviceEvent);
        var flags = Volatile.Read(ref *(ushort*)(_deviceEvent + 2)) & PackedRing.EventFlagsMask;
        bool notify;
        if (flags == PackedRing.EventFlagsDisable)
            notify = false;
        else if (flags != PackedRing.EventFlagsDesc || !EventIdx || added >= Size)
            notify = true;
        else
            notify = PackedRing.NeedEvent(offWrap, _nextAvail, _availWrap, added, Size);
        _recorder?.Published(offWrap, (ushort)flags, added, notify);
        return notify;
    }

    /// <summary>
    /// Ends a batch for a caller that will not notify whatever the device asks (it knows the device
    /// polls): writes the batch's first flags (release), which make it available; 2.8.21.3.1 asks
    /// for the full barrier only before reading the Device Event Suppression, and nothing is read here.
    /// </summary>
    public void PublishForPoller()
    {
        if (_recorder is not null)
        {
            Publish(); // a recording shows the decision the device's state would give
            return;
        }
        _batchHead.Release();
        _addedSincePublish = 0;
    }

    public bool TryTakeUsed(out ushort head, out uint length, out UsedError error)
    {
        head = 0;
        length = 0;
        error = UsedError.None;
        var d = Slot(_nextUsed);
        // 2.8.22: flags first, with acquire; id and len below were written before them.
        var flags = Volatile.Read(ref *(ushort*)(d + 14));
        if (!PackedRing.IsUsed(flags, _usedWrap))
            return false;
        var id = Unsafe.ReadUnaligned<ushort>(d + 12);
        var len = Unsafe.ReadUnaligned<uint>(d + 8);
        // The device is not trusted: the id must name a list the driver has outstanding, and the
        // slot must not be the first of a batch not yet published (the device cannot have seen it).
        if (id >= Size || _slotsOfId[id] == 0 || _batchHead.Is(d))
        {
            error = UsedError.UnknownId;
            head = id;
            return false;
        }
        // 2.8.4: len is reserved in a used descriptor without VIRTQ_DESC_F_WRITE.
        length = (flags & PackedRing.DescFWrite) != 0 ? len : 0;
        int slots = _slotsOfId[id];
        _slotsOfId[id] = 0;
        _freeIds[_freeIdCount++] = id;
        _freeSlots += slots;
        // 2.8.6: skip the list's other slots to where the next used descriptor goes.
        var next = _nextUsed + slots;
        if (next >= Size)
            next -= Size;
        _recorder?.UsedTaken(_nextUsed, id, len, flags, _usedWrap, slots, next);
        if (next < _nextUsed || slots == Size)
            _usedWrap = !_usedWrap;
        _nextUsed = (ushort)next;
        head = id;
        if (_eventFlags == PackedRing.EventFlagsDesc)
        {
            // 2.8.10: interrupt me when the next descriptor is used; then a full barrier before the
            // next look at the ring, or a descriptor used meanwhile is neither seen nor signalled.
            // With interrupts disabled the offset means nothing to the device: no store, no barrier.
            Volatile.Write(ref *(ushort*)_driverEvent, PackedRing.OffWrap(_nextUsed, _usedWrap));
            Interlocked.MemoryBarrier();
            _recorder?.DriverEventWritten();
        }
        return true;
    }

    public void DisableInterrupts()
    {
        SetEventFlags(PackedRing.EventFlagsDisable);
        _recorder?.DriverEventWritten();
    }

    public bool Polling { get; private set; }

    public void StartPolling()
    {
        Polling = true;
        DisableInterrupts(); // 2.8.10: RING_EVENT_FLAGS_DISABLE outranks the offset TryTakeUsed writes
    }

    public bool StopPolling()
    {
        Polling = false;
        return EnableInterrupts();
    }

    public bool EnableInterrupts()
    {
        if (EventIdx)
        {
            Volatile.Write(ref *(ushort*)_driverEvent, PackedRing.OffWrap(_nextUsed, _usedWrap));
            SetEventFlags(PackedRing.EventFlagsDesc);
        }
        else
            SetEventFlags(PackedRing.EventFlagsEnable);
        Interlocked.MemoryBarrier();
        _recorder?.DriverEventWritten();
        return PackedRing.IsUsed(Volatile.Read(ref *(ushort*)(Slot(_nextUsed) + 14)), _usedWrap);
    }

    /// <summary>2.8.10: writes the Driver Event Suppression flags, keeping a copy so the hot path need not read them back.</summary>
    private void SetEventFlags(ushort flags)
    {
        _eventFlags = flags;
        Volatile.Write(ref *(ushort*)(_driverEvent + 2), flags);
    }
}
